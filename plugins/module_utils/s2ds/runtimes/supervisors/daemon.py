# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The daemon supervisor (anywhere systemd is not PID 1).

The proxy daemonizes itself and writes a pid file in the session's run dir;
the next ``present`` run restarts it if it died. Nothing brings it back after
a reboot but that next run. HAProxy runs master-worker (SIGUSR2 reloads with
no dropped connection), NGINX reloads on SIGHUP, stunnel is restarted.
"""

from __future__ import annotations

import contextlib
import os
import signal

from ...errors import S2DSError
from ...store import read_text
from ..base import wait_until
from ..privileges import drop_privileges_argv, needs_low_port
from ..procfs import listening_ports, live_processes, parent_pid, process_alive, process_name, process_start_time, \
    process_words, processes_in_group
from . import Supervisor, run_command

__all__ = ["DaemonSupervisor"]

#: The programs the process runtime runs (their process names contain these).
_PROGRAMS = ("haproxy", "nginx", "stunnel")


def _read_pid(path):
    """The pid in a pid file, or None when there is none or it holds no number."""
    text = read_text(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def _is_pid(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _names_config(pid, program, config):
    """True when ``pid`` is a live ``program`` process whose command line names ``config``."""
    return bool(pid) and process_alive(pid) and program in process_name(pid) and config in process_words(pid)


def _masters(program, names_it):
    """Live ``program`` processes whose command-line words satisfy ``names_it``, less those whose parent does too.

    HAProxy's workers carry their master's command line; only the master is returned.
    """
    named = {pid for pid in live_processes() if program in process_name(pid) and names_it(process_words(pid))}
    return sorted(pid for pid in named if parent_pid(pid) not in named)


class DaemonSupervisor(Supervisor):
    """A pid file is written by the proxy (a process that may be compromised) and
    outlives it; it is a hint, never proof. A pid is this session's proxy only
    when the process's command line names this session's config and, where
    one was recorded at start, its start time is the recorded one."""

    name = "daemon"
    # A daemon parses its config before it forks and exits non-zero on an error.
    start_checks_config = True

    # A pid file is written by the proxy (a process that may be compromised) and
    # outlives it; it is a hint, never proof. A pid is this session's proxy only
    # when the process's command line names this session's config and, where
    # one was recorded at start, its start time is the recorded one.
    def _pid(self, store, record):
        return _read_pid(self.runtime.paths(store, record)["pid_file"])

    @staticmethod
    def _config_path(backend, store, record):
        return os.path.join(store.run_dir(record.uid), backend.config_name)

    def proxy_pid(self, backend, store, record, scan=True):
        """The pid of this session's running proxy (its master process), or None.

        First the pid recorded at start, if its start time and command line
        still match; then (``scan``) the pid file's, if its command line names
        the config and it is the master (its parent does not), and last every
        process on the host whose command line names the config: a proxy whose
        run dir was removed under it is still found, and adopted.
        """
        config = self._config_path(backend, store, record)
        recorded, started = record.runtime_state.get("pid"), record.runtime_state.get("pid_start")
        if _is_pid(recorded) and _is_pid(started) and process_start_time(recorded) == started \
                and _names_config(recorded, backend.name, config):
            return recorded
        if not scan:
            return None
        hint = self._pid(store, record)
        if hint and _names_config(hint, backend.name, config) and not _names_config(parent_pid(hint), backend.name, config):
            return hint
        masters = _masters(backend.name, lambda words: config in words)
        return masters[0] if masters else None

    @staticmethod
    def _remember(record, pid):
        """Keep (pid, start time) in the record: together they name one process for the life of the host."""
        record.runtime_state.update(pid=pid, pid_start=process_start_time(pid))

    @staticmethod
    def _terminate(pid, stop_signal):
        """Send ``stop_signal``, and SIGKILL when the process is still there after 10 s."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, stop_signal)
        if not wait_until(lambda: not process_alive(pid), 10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not process_alive(pid), 5)

    @staticmethod
    def _kill_leftovers(program, group, since):
        """Kill the proxy's processes left in the process group its master led.

        The daemons call setsid(), so their workers share the master's pid as
        process group; a worker orphaned by a killed master keeps the ports.
        ``group`` is always a master verified as this session's (by command
        line and start time), never a number read from a pid file: Linux does
        not reuse a pid while a process group of that id lives, so the group's
        members are that master's. Only processes of ``program`` started no
        earlier than the master (``since``) are touched.
        """
        leftovers = [pid for pid in processes_in_group(group)
                     if program in process_name(pid) and (process_start_time(pid) or 0) >= since]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(process_alive(pid) for pid in leftovers), 5)

    def _stop_daemon(self, program, pid, stop_signal):
        """Stop the verified master ``pid`` and whatever its group leaves behind."""
        since = process_start_time(pid) or 0
        self._terminate(pid, stop_signal)
        self._kill_leftovers(program, pid, since)

    def _stop_recorded_orphans(self, backend, record):
        """Workers of the recorded master, when that master died (killed, crashed) and left them holding ports."""
        recorded, started = record.runtime_state.get("pid"), record.runtime_state.get("pid_start")
        if _is_pid(recorded) and _is_pid(started) and process_start_time(recorded) in (None, started):
            self._kill_leftovers(backend.name, recorded, started)

    # -- the Supervisor interface -------------------------------------------
    def is_running(self, backend, store, record):
        return self.proxy_pid(backend, store, record) is not None

    def start(self, backend, store, record):
        paths = self.runtime.paths(store, record)
        config = os.path.join(paths["run_dir"], backend.config_name)
        account = self.runtime.account
        # Never two proxies for one session: one still running (found by its
        # command line) is stopped first, and so are workers of a master that
        # died, which still hold the ports. A stale pid file would make a daemon refuse to start.
        running = self.proxy_pid(backend, store, record)
        if running is not None:
            self._stop_daemon(backend.name, running, backend.stop_signal)
        self._stop_recorded_orphans(backend, record)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths["pid_file"])
        result = run_command(drop_privileges_argv(account, needs_low_port(record))
                             + backend.daemon_argv(config, paths["pid_file"], paths["log_file"]))
        started = result.returncode == 0 and wait_until(
            lambda: self._pid(store, record) and _names_config(self._pid(store, record), backend.name, config), 10)
        if not started:
            output = result.stdout.decode("utf-8", "replace").strip() or self.runtime.log_tail(store, record).strip()
            raise S2DSError("%s for session %s did not start: %s" % (backend.name, record.uid, output[-2000:]),
                            field="uid", value=record.uid)
        self._remember(record, self._pid(store, record))

    def reload(self, backend, store, record):
        pid = self.proxy_pid(backend, store, record)
        if pid is None:
            self.start(backend, store, record)
        else:
            self._remember(record, pid)  # adopted, when it was found by its command line
            os.kill(pid, backend.reload_signal)

    def stop(self, backend, store, record):
        pid = self.proxy_pid(backend, store, record)
        if pid is not None:
            self._stop_daemon(backend.name, pid, backend.stop_signal)
        self._stop_recorded_orphans(backend, record)
        # Workers close their sockets a moment after the master exits.
        wait_until(lambda: not set(record.ports) & listening_ports("tcp"), 5)

    def release_orphan(self, store, uid):
        """The daemon started with a config from this session's run dir; the pid file is not trusted (it may
        name any process)."""
        stopped = []
        run_dir = store.run_dir(uid) + "/"
        for program in _PROGRAMS:
            for pid in _masters(program, lambda words: any(word.startswith(run_dir) for word in words)):
                name = process_name(pid)
                self._stop_daemon(program, pid, signal.SIGTERM)
                stopped.append("%s (pid %d)" % (name, pid))
        return stopped
