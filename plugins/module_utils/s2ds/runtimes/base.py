# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The interface every runtime implements, and small helpers they share (waiting, log tails).

/proc reading is in :mod:`.procfs`, the proxy account and privilege dropping in :mod:`.privileges`.
"""

from __future__ import annotations

import time

from .. import counting, proxy_reports, untrusted
from ..backends import get_backend
from ..errors import S2DSError
# Re-exported: callers (and tests) have long imported these from here.
from .privileges import (DEFAULT_PROXY_USER, PRIVILEGED_PORT_LIMIT, PROXY_OWN_DIR, ProxyAccount, drop_privileges_argv,
                         needs_low_port, resolve_proxy_account, share_run_dir)
from .procfs import (established_connections, listening_ports, live_processes, parent_pid, process_alive, process_cmdline,
                     process_name, process_start_time, process_words, processes_in_group)

__all__ = ["DEFAULT_PROXY_USER", "PRIVILEGED_PORT_LIMIT", "PROXY_OWN_DIR", "ProxyAccount", "Runtime", "config_rejected",
           "drop_privileges_argv",
           "established_connections", "listening_ports", "live_processes", "needs_low_port", "parent_pid", "process_alive",
           "process_cmdline", "process_name", "process_start_time", "process_words", "processes_in_group", "read_log_tail",
           "resolve_proxy_account", "share_run_dir", "wait_for_listeners", "wait_until"]


class Runtime:
    """Runs the proxy of one session somewhere: host process, container, Janus.

    The gateway decides *what* to do (start, reload, restart, stop) by
    comparing wanted and actual state; a runtime only knows *how*.
    """

    name = None
    #: The image asked for now (container runtimes); None elsewhere.
    image = None
    #: True where listener ports are bound in this host's network namespace,
    #: so the gateway can check them locally.
    local_network = True
    #: True where the session's stream leaves from this host's network stack (the proxies' host processes and
    #: host-network containers, the kernel's NAT), so that its rate can be enforced here (shaping.py); None:
    #: as ``local_network``.
    egress_here = None
    #: True where ``start`` runs the proxy's own config parsing and fails, with the
    #: proxy's message, on a bad config; the gateway then skips the separate check
    #: for a new session (nothing runs yet that a bad config could break).
    start_checks_config = False

    def remembered(self, record):
        """Options of this runtime to keep in the session record (for info and release runs
        that do not repeat them), for example the image of a container."""
        return {}

    def image_for(self, record):
        """The image given now, else the one the session was created with, else the backend's default."""
        return self.image or record.runtime_state.get("image") or get_backend(record.backend).default_image

    def paths(self, store, record):
        """Where the proxy sees its files: run_dir, pid_file, log_file, psk_file, foreground."""
        raise NotImplementedError

    def check_config(self, backend, store, record, config_name):
        """Run the proxy's own checker on the run dir file ``config_name``; raise S2DSError on failure."""
        raise NotImplementedError

    def is_running(self, backend, store, record):
        raise NotImplementedError

    def start(self, backend, store, record):
        raise NotImplementedError

    def reload(self, backend, store, record):
        """Apply a changed config gracefully; the default restarts."""
        self.restart(backend, store, record)

    def restart(self, backend, store, record):
        self.stop(backend, store, record)
        self.start(backend, store, record)

    def stop(self, backend, store, record):
        raise NotImplementedError

    def traffic(self, backend, store, record, counter=None):
        """Per listener: what the kernel counted on its port, the connections open now, and the proxy's own
        error counts (``errors``, None where it keeps no report here).

        The same for every proxy whose listeners are in this host's network
        stack (:mod:`..counting`); None for runtimes whose proxies listen
        elsewhere. Raises counting.CountersUnavailable when the session's
        counters cannot be read (the caller reports it for this session only). ``counter`` is the Gateway's
        (:class:`..counting.SessionCounter`); None reads the process's shared one.
        """
        if not self.local_network:
            return None
        listeners = (counter if counter is not None else counting.shared_counter()).read(record)
        active = counting.per_listing("established", established_connections)
        errors = proxy_reports.connection_errors(backend, self.paths(store, record), store, record)
        for index, entry in enumerate(listeners):
            entry["active_connections"] = active.get(entry["port"], 0)
            entry["errors"] = errors[index] if errors else None
        return listeners

    def log_tail(self, store, record):
        """The last lines the proxy logged, for error messages (proxy output: show it only escaped)."""
        return ""

    def account_for(self, record):
        """Who ``record``'s proxy runs as: its pool uid (a uidpool.PoolAccount) when the runtime has a uid
        pool and the record one, else the runtime's account (None: root)."""
        account = getattr(self, "account", None)
        if getattr(self, "uid_pool", None) is not None and getattr(record, "proxy_uid", None) is not None:
            from ..uidpool import PoolAccount  # pylint: disable=import-outside-toplevel
            return PoolAccount(record.proxy_uid)
        return account

    def warnings_for(self, record):
        """What the operator should know about ``record`` as this runtime puts it in place (a message each),
        such as something of the host's that will stop its stream; the default knows of nothing."""
        return []

    def release_orphan(self, store, uid):
        """Stop whatever proxy of session ``uid`` this runtime can find from the uid and the run dir alone.

        For a session whose record is broken. Returns what was stopped, for the
        caller to report; the default finds nothing.
        """
        return []


def config_rejected(backend_name, output):
    """The error of a proxy's checker refusing a rendered config: its last 2000 characters of output."""
    if isinstance(output, bytes):
        output = output.decode("utf-8", "replace")
    return S2DSError("%s rejected the rendered config: %s" % (backend_name, (output or "").strip()[-2000:]),
                     field="template", value=backend_name)


def wait_until(predicate, timeout, interval=0.02):
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_for_listeners(runtime, backend, store, record, timeout=10.0):
    """Block until every TCP listener of ``record`` listens, or fail with the proxy's log."""
    wanted = set(record.ports)
    if wait_until(lambda: wanted <= listening_ports("tcp"), timeout):
        return
    missing = sorted(wanted - listening_ports("tcp"))
    raise untrusted.ProxyOutputError("%s for session %s did not listen on port(s) %s within %ds" % (
        backend.name, record.uid, ", ".join(map(str, missing)), timeout), _tail(runtime.log_tail(store, record)),
        field="uid", value=record.uid)


def _tail(text):
    text = (text or "").strip()
    return " | ".join(text.splitlines()[-5:]) if text else ""


def read_log_tail(path, limit=4096):
    """The last ``limit`` bytes of the proxy's log at ``path`` as text (through :mod:`..untrusted`: no link, no
    FIFO, bounded), or why it was not read, in the gateway's words. The text is the proxy's: escape it to show it."""
    try:
        return untrusted.read_tail(path, limit=limit).decode("utf-8", "replace")
    except untrusted.UntrustedFileError as exc:
        return "(the proxy's log was not read: %s)" % exc.why
    except OSError:
        return ""
