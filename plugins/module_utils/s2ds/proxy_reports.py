# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What each proxy reports of its own about failed connections, per listener.

Bytes and connections come from the kernel (:mod:`.counting`), the same
for every proxy; errors only the proxy knows:

* HAProxy: its stats socket in the session's run dir (``show stat``, the
  documented CSV of the runtime API): per frontend ``ereq`` (request errors,
  failed TLS handshakes among them), per backend ``econ`` (the target
  refused or timed out) and ``eresp``.
* NGINX: its error log: ``connect() failed`` (the target), ``SSL_do_handshake()
  failed`` (TLS toward the PROD gateway), ``reset by peer``; each line names
  the listener as ``server: ADDRESS:PORT``.
* stunnel: its log: ``s_connect`` failures (the target), ``SSL_accept`` /
  ``SSL_connect`` failures (the handshake), ``reset by peer``; a connection
  is tied to its listener by the ``Service [listener_N] accepted`` line.

A log is read from the last offset seen by this process (the exporter runs
long and reads only what is new); a one-shot reader (s2ds_info) reads the
whole file, which holds notices and errors only. Counts are per listener
index, by reason: ``target``, ``tls_handshake``, ``reset``, ``request``,
``response``. Only files in the session's run dir on this host are read,
so containers (whose logs go to Docker) report kernel counts only.

The proxy writes these files and may be compromised: every read goes through
:mod:`.untrusted` (no link followed, regular files and sockets only, bounded
in size and time), a log is read at most MAX_LOG_READ bytes a call, and no
lock is held while a file is read.
"""

from __future__ import annotations

import csv
import os
import re
import threading

from . import untrusted

REASONS = ("target", "tls_handshake", "reset", "request", "response")
STATS_SOCKET = "haproxy.sock"
#: A Unix socket path holds at most 107 bytes, and HAProxy binds ``PATH.<pid>.tmp`` first.
MAX_SOCKET_PATH = 94
#: Most bytes of a log one count reads (the rest is read by the next scrape); most bytes ``show stat`` may answer.
MAX_LOG_READ = 1024 * 1024
MAX_STAT_ANSWER = 4 * 1024 * 1024


def stats_socket_path(run_dir):
    """Where HAProxy keeps its stats socket in ``run_dir``; None when that path is too long for a socket
    (then the session has no HAProxy error counts, only the kernel's)."""
    path = os.path.join(run_dir, STATS_SOCKET)
    return path if len(path.encode("utf-8")) <= MAX_SOCKET_PATH else None


_NGINX_PATTERNS = (
    ("target", re.compile(r"connect\(\) (to \S+ )?failed|upstream timed out|no live upstreams")),
    ("tls_handshake", re.compile(r"SSL_do_handshake\(\) failed|peer closed connection in SSL handshake")),
    ("reset", re.compile(r"reset by peer")),
)
_NGINX_SERVER = re.compile(r"server: \[?[0-9a-fA-F.:]*\]?:(\d+)")
_STUNNEL_PATTERNS = (
    ("target", re.compile(r"s_connect: (connect \S+: |s_poll_wait)|No more addresses to connect")),
    ("tls_handshake", re.compile(r"SSL_accept|SSL_connect|handshake failure|SSL routines")),
    ("reset", re.compile(r"reset by peer")),
)
_STUNNEL_SERVICE = re.compile(r"LOG\d\[(\d+)\]: Service \[listener_(\d+)\] accepted")
_STUNNEL_CONNECTION = re.compile(r"LOG\d\[(\d+)\]: ")


def empty_counts(size):
    return [dict.fromkeys(REASONS, 0) for dummy in range(size)]


# -- HAProxy -------------------------------------------------------------------
def haproxy_stats(path, timeout=1.0):
    """``show stat`` from the stats socket at ``path`` (a socket of one link; the whole exchange within
    ``timeout`` and MAX_STAT_ANSWER bytes): rows as dicts, None when there is no socket."""
    answer = untrusted.query_unix_socket(path, b"show stat\n", limit=MAX_STAT_ANSWER, timeout=timeout)
    return None if answer is None else parse_stat(answer.decode("utf-8", "replace"))


def parse_stat(text):
    """``show stat`` CSV (its header line starts with ``# ``) as row dicts."""
    return list(csv.DictReader(text.lstrip("# ").splitlines()))


def _number(value):
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def errors_from_stat(rows, size):
    counts = empty_counts(size)
    for row in rows:
        name, kind = row.get("pxname") or "", row.get("svname") or ""
        prefix, dummy, index = name.partition("_")
        if not index.isdigit() or int(index) >= size:
            continue
        entry = counts[int(index)]
        if prefix == "listener" and kind == "FRONTEND":
            entry["request"] += _number(row.get("ereq"))
        elif prefix == "target" and kind == "BACKEND":
            entry["target"] += _number(row.get("econ"))
            entry["response"] += _number(row.get("eresp"))
    return counts


# -- logs ------------------------------------------------------------------------
class LogCounter:
    """Counts matching lines of one growing log, from where it last stopped (per process)."""

    _known = {}
    _lock = threading.Lock()

    def __init__(self, path, classify):
        self.path = path
        self.classify = classify  # (line, state) -> (index, reason) or None

    def counts(self, size):
        """The counts so far; raises untrusted.UntrustedFileError when the log is no plain file of its own."""
        with self._lock:
            inode, offset, counts, state = self._known.get(self.path, (None, 0, None, {}))
        read = untrusted.read_from(self.path, offset, inode, limit=MAX_LOG_READ)  # no lock held while reading
        if read is None:
            return empty_counts(size)
        new_inode, start, data = read
        if new_inode != inode or start != offset or counts is None or len(counts) != size:
            counts, state = empty_counts(size), {}
        else:
            counts, state = [dict(c) for c in counts], dict(state)
        complete = data.rfind(b"\n") + 1  # a line still being written is read next time
        if not complete and len(data) >= MAX_LOG_READ:
            complete = len(data)  # one line longer than a whole read: skipped, never buffered
        for line in data[:complete].decode("utf-8", "replace").splitlines():
            hit = self.classify(line, state)
            if hit is not None and 0 <= hit[0] < size:
                counts[hit[0]][hit[1]] += 1
        with self._lock:
            self._known[self.path] = (new_inode, start + complete, counts, state)
        return [dict(c) for c in counts]


def _first_reason(patterns, line):
    return next((reason for reason, pattern in patterns if pattern.search(line)), None)


def nginx_classifier(ports):
    index_of = {port: i for i, port in enumerate(ports)}

    def classify(line, state):
        reason = _first_reason(_NGINX_PATTERNS, line)
        server = _NGINX_SERVER.search(line)
        if reason is None or server is None:
            return None
        index = index_of.get(int(server.group(1)))
        return None if index is None else (index, reason)

    return classify


def stunnel_classifier(ports):
    def classify(line, state):
        service = _STUNNEL_SERVICE.search(line)
        if service:
            state[service.group(1)] = int(service.group(2))
            return None
        reason = _first_reason(_STUNNEL_PATTERNS, line)
        connection = _STUNNEL_CONNECTION.search(line)
        if reason is None or connection is None or connection.group(1) not in state:
            return None
        return state[connection.group(1)], reason

    return classify


def haproxy_report(paths, ports):
    """HAProxy: its stats socket, when it has one (host processes)."""
    path = paths.get("stats_socket")
    rows = haproxy_stats(path) if path else None
    return None if rows is None else errors_from_stat(rows, len(ports))


def nginx_report(paths, ports):
    return _log_report(paths, nginx_classifier(ports), len(ports))


def stunnel_report(paths, ports):
    return _log_report(paths, stunnel_classifier(ports), len(ports))


def _log_report(paths, classifier, size):
    """Counts from the proxy's log, when it writes one below its run dir on this host (not /dev/stderr)."""
    log_file, run_dir = paths.get("log_file"), paths.get("run_dir")
    if not log_file or not run_dir or not log_file.startswith(run_dir.rstrip("/") + "/"):
        return None
    return LogCounter(log_file, classifier).counts(size)


def connection_errors(backend, paths, store, record):
    """Per listener index, the proxy's own error counts; None where this host cannot read them.

    ``backend.report_errors`` reads what its proxy reports, where the
    runtime's ``paths`` say (the log file, HAProxy's stats socket); only
    files the proxy keeps below the session's run dir on this host are read.
    """
    run_dir = store.run_dir(record.uid)
    if backend.report_errors is None or paths.get("run_dir") != run_dir:
        return None  # e.g. a container: the proxy sees its files elsewhere and logs to Docker
    try:
        return backend.report_errors(paths, list(record.ports))
    except (OSError, ValueError):
        return None  # a proxy that is down answers nothing; its session is reported down anyway
