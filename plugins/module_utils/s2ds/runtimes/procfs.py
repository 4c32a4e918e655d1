# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the runtimes read from /proc: sockets of this network namespace (one /proc/net reader) and processes.

Parsed by hand, on purpose: these are a few fixed-format lines, read on
every run and scrape, and psutil would be one more library on every
gateway host (and in the EE) for them; see the process runtime for how a
process is proved to be a session's proxy.
"""

from __future__ import annotations

import os

__all__ = ["established_connections", "listening_ports", "live_processes", "parent_pid", "process_alive", "process_cmdline",
           "process_name", "process_start_time", "process_words", "processes_in_group"]


#: TCP states in /proc/net/tcp (include/net/tcp_states.h).
TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"


def _sockets(protocol):
    """(state, local port) of every socket of ``protocol`` (tcp, udp) and its IPv6 twin in this network namespace."""
    for name in (protocol, protocol + "6"):
        try:
            with open("/proc/net/" + name, encoding="ascii") as handle:
                next(handle, None)  # the header
                for line in handle:
                    fields = line.split()
                    yield fields[3], int(fields[1].rsplit(":", 1)[1], 16)
        except FileNotFoundError:
            continue


def listening_ports(protocol="tcp"):
    """TCP ports in LISTEN state (or bound UDP ports: UDP sockets have no listen state) in this network namespace."""
    return {port for state, port in _sockets(protocol) if protocol == "udp" or state == TCP_LISTEN}


def established_connections():
    """{local port: number of ESTABLISHED TCP connections} in this network namespace."""
    counts = {}
    for state, port in _sockets("tcp"):
        if state == TCP_ESTABLISHED:
            counts[port] = counts.get(port, 0) + 1
    return counts


def process_alive(pid):
    """True for a live (not zombie) process."""
    return _is_live(_stat_fields(pid))


def _is_live(stat_fields):
    """A process that exists and is neither a zombie nor dead."""
    return bool(stat_fields) and stat_fields[0] not in ("Z", "X")


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def processes_in_group(pgid):
    """Live processes whose process group is ``pgid``."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if len(fields) > 2 and fields[2] == str(pgid) and _is_live(fields):
                members.append(int(name))
    return members


def process_name(pid):
    try:
        with open("/proc/%d/comm" % pid, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def process_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def process_words(pid):
    """The words of a process's command line (split at NULs and spaces: NGINX rewrites its own into one string)."""
    return process_cmdline(pid).split()


def process_start_time(pid):
    """When the process started, in clock ticks since boot (/proc/PID/stat field 22), or None.

    A pid is reused once its process is gone; (pid, start time) is not, so it
    names one process for the life of the host.
    """
    fields = _stat_fields(pid)
    try:
        return int(fields[19])  # fields start at field 3 (state)
    except (IndexError, ValueError):
        return None


def parent_pid(pid):
    fields = _stat_fields(pid)
    return int(fields[1]) if len(fields) > 1 else None


def live_processes():
    """Pids of every live process in this pid namespace."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and process_alive(int(name))]
