# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Proxies as host processes.

The runtime owns the session's paths, the config check and the proxy
account; keeping the proxy running is its supervisor's, one per file in
:mod:`.supervisors`: ``systemd`` where systemd is PID 1 (one enabled unit per
session), ``daemon`` anywhere else (the proxy daemonizes, with a pid file).
"""

from __future__ import annotations

import os
import stat

from .. import untrusted
from ..errors import S2DSError
from ..proxy_reports import stats_socket_path
from ..uidpool import DEFAULT_PROXY_UID_RANGE, DEFAULT_REGISTRY
from .base import Runtime, config_rejected, read_log_tail
from .privileges import PROXY_OWN_DIR, drop_privileges_argv, needs_low_port, resolve_proxy_account, resolve_uid_pool, \
    share_run_dir
from .supervisors import run_command, systemd_is_pid1
from .supervisors.daemon import DaemonSupervisor
from .supervisors.systemd import SYSTEMD_UNIT_DIR, SYSTEMD_WANTS_DIR, SystemdSupervisor, hardening_lines

__all__ = ["ProcessRuntime", "SUPERVISORS", "SYSTEMD_UNIT_DIR", "SYSTEMD_WANTS_DIR", "hardening_lines", "systemd_is_pid1"]

#: ``process_supervisor`` -> its class.
SUPERVISORS = {"systemd": SystemdSupervisor, "daemon": DaemonSupervisor}


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self, supervisor="auto", proxy_user="auto", proxy_uid_range=DEFAULT_PROXY_UID_RANGE,
                 uid_registry=DEFAULT_REGISTRY):
        if supervisor == "auto":
            supervisor = "systemd" if systemd_is_pid1() else "daemon"
        if supervisor not in SUPERVISORS:
            raise S2DSError("process_supervisor %r: must be auto, systemd or daemon" % supervisor,
                            field="process_supervisor", value=supervisor)
        #: Where each session's proxy gets a uid of its own (``proxy_user: pool``, or ``auto`` where the gateway
        #: role made the proxy account), under either supervisor; None: every proxy runs as ``account``. Under
        #: systemd the unit's User=/Group= are that uid and gid (supervisors/systemd.py says why not DynamicUser=).
        self.uid_pool = resolve_uid_pool(proxy_user, proxy_uid_range, uid_registry)
        #: Who the proxies run as without a pool uid (None: root); see privileges.resolve_proxy_account.
        self.account = resolve_proxy_account(proxy_user)
        #: Keeps the proxies running (``supervisor.name``: systemd or daemon).
        self.supervisor = SUPERVISORS[supervisor](self)
        # A daemon parses its config before it forks and exits non-zero on an error;
        # a systemd unit would only fail later, in the background.
        self.start_checks_config = self.supervisor.start_checks_config

    # -- paths ------------------------------------------------------------
    def paths(self, store, record):
        run_dir = store.run_dir(record.uid)
        # The proxy writes only in its own subdirectory; the config and keys beside it are root's.
        own_dir = os.path.join(run_dir, PROXY_OWN_DIR)
        return {
            "run_dir": run_dir,
            "pid_file": os.path.join(own_dir, "proxy.pid"),
            "log_file": os.path.join(own_dir, "proxy.log"),
            "psk_file": os.path.join(run_dir, "psk.txt"),
            "foreground": self.supervisor.foreground,
            "stats_socket": stats_socket_path(own_dir),  # the proxy (unprivileged) creates it
        }

    def check_config(self, backend, store, record, config_name):
        paths = self.paths(store, record)
        argv = backend.check_argv(os.path.join(paths["run_dir"], config_name), "/dev/null")
        if argv is None:
            return
        # As the proxy user: the check then also proves the proxy can read its files, and
        # whatever the checker creates (NGINX opens its error log) belongs to that user.
        account = self.account_for(record)
        share_run_dir(store, record.uid, account)
        result = run_command(drop_privileges_argv(account, needs_low_port(record)) + argv)
        if result.returncode != 0:
            raise config_rejected(backend.name, result.stdout)

    def log_tail(self, store, record):
        return read_log_tail(self.paths(store, record)["log_file"])

    def proxy_pid(self, backend, store, record, scan=True):
        """The pid of this session's running daemon (its master process), or None (see DaemonSupervisor)."""
        supervisor = self.supervisor if isinstance(self.supervisor, DaemonSupervisor) else DaemonSupervisor(self)
        return supervisor.proxy_pid(backend, store, record, scan=scan)

    @staticmethod
    def unit_name(backend, record):
        return SystemdSupervisor.unit_name(backend, record)

    # -- lifecycle: the supervisor's ------------------------------------------
    def is_running(self, backend, store, record):
        return self.supervisor.is_running(backend, store, record)

    def start(self, backend, store, record):
        share_run_dir(store, record.uid, self.account_for(record))
        self.clear_own_files(store, record)
        self.supervisor.start(backend, store, record)

    def clear_own_files(self, store, record):
        """Before a start: remove what the (maybe compromised) proxy left where it will open its files, unless it
        is a plain file (a socket at the stats socket's path): a FIFO as its log would block its own start."""
        paths = self.paths(store, record)
        removed = [untrusted.remove_unless_plain(paths[name]) for name in ("pid_file", "log_file")]
        if paths.get("stats_socket"):
            removed.append(untrusted.remove_unless_plain(paths["stats_socket"], stat.S_ISSOCK, "a socket"))
        return [entry for entry in removed if entry]

    def reload(self, backend, store, record):
        share_run_dir(store, record.uid, self.account_for(record))  # the rewritten files are root's 0600 until shared
        if backend.reload_signal is None:
            self.restart(backend, store, record)
        else:
            self.supervisor.reload(backend, store, record)

    def stop(self, backend, store, record):
        self.supervisor.stop(backend, store, record)

    def release_orphan(self, store, uid):
        """The unit(s) named with ``uid``, or the daemon whose config is in its run dir."""
        return self.supervisor.release_orphan(store, uid)
