# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Proxies as host processes.

Two supervisors:

* ``systemd`` (where systemd is PID 1): one unit per session, the proxy in
  the foreground, ``systemctl reload`` sends the backend's reload signal.
  The unit is enabled (``WantedBy=multi-user.target``), so the proxy comes
  back by itself when the host boots; release disables and removes it.
* ``daemon`` (anywhere else): the proxy daemonizes itself and writes a pid
  file in the session's run dir; the next ``present`` run restarts it if it
  died. Nothing brings it back after a reboot but that next run. HAProxy runs master-worker (SIGUSR2 reloads with no dropped
  connection), NGINX reloads on SIGHUP, stunnel is restarted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import signal
import subprocess

from ..errors import S2DSError
from ..proxy_reports import stats_socket_path
from ..store import read_text, write_file_atomic
from .base import (Runtime, listening_ports, process_alive, process_cmdline, process_name, processes_in_group,
                   read_log_tail, wait_until)

SYSTEMD_UNIT_DIR = "/etc/systemd/system"
SYSTEMD_WANTS_DIR = os.path.join(SYSTEMD_UNIT_DIR, "multi-user.target.wants")


def systemd_is_pid1():
    return os.path.isdir("/run/systemd/system")


def _run(argv, timeout=30):
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False, start_new_session=True)
    except FileNotFoundError:
        raise S2DSError("%s is not installed on this host (runtime process needs it on PATH)" % argv[0],
                        field="backend", value=argv[0]) from None
    except subprocess.TimeoutExpired:
        raise S2DSError("%s did not finish within %ds" % (shlex.join(argv), timeout)) from None


def _read_pid(path):
    """The pid in a pid file, or None when there is none or it holds no number."""
    text = read_text(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self, supervisor="auto"):
        if supervisor == "auto":
            supervisor = "systemd" if systemd_is_pid1() else "daemon"
        if supervisor not in ("systemd", "daemon"):
            raise S2DSError("process_supervisor %r: must be auto, systemd or daemon" % supervisor,
                            field="process_supervisor", value=supervisor)
        self.supervisor = supervisor
        # A daemon parses its config before it forks and exits non-zero on an error;
        # a systemd unit would only fail later, in the background.
        self.start_checks_config = supervisor == "daemon"

    # -- paths ------------------------------------------------------------
    def paths(self, store, record):
        run_dir = store.run_dir(record.uid)
        foreground = self.supervisor == "systemd"
        return {
            "run_dir": run_dir,
            "pid_file": os.path.join(run_dir, "proxy.pid"),
            "log_file": os.path.join(run_dir, "proxy.log"),
            "psk_file": os.path.join(run_dir, "psk.txt"),
            "foreground": foreground,
            "stats_socket": stats_socket_path(run_dir),
        }

    def check_config(self, backend, store, record, config_name):
        paths = self.paths(store, record)
        argv = backend.check_argv(os.path.join(paths["run_dir"], config_name), "/dev/null")
        if argv is None:
            return
        result = _run(argv)
        if result.returncode != 0:
            raise S2DSError("%s rejected the rendered config: %s" % (
                backend.name, result.stdout.decode("utf-8", "replace").strip()[-2000:]),
                field="template", value=backend.name)

    def log_tail(self, store, record):
        return read_log_tail(self.paths(store, record)["log_file"])

    # -- daemon supervisor -------------------------------------------------
    def _pid(self, store, record):
        return _read_pid(self.paths(store, record)["pid_file"])

    def _daemon_pid_alive(self, backend, store, record):
        pid = self._pid(store, record)
        config = os.path.join(store.run_dir(record.uid), backend.config_name)
        if pid and process_alive(pid) and config in process_cmdline(pid):
            return pid
        return None

    @staticmethod
    def _terminate(pid, stop_signal):
        """Send ``stop_signal``, and SIGKILL when the process is still there after 10 s."""
        os.kill(pid, stop_signal)
        if not wait_until(lambda: not process_alive(pid), 10):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not process_alive(pid), 5)

    @staticmethod
    def _kill_leftovers(program, group):
        """Kill the proxy's processes left in the process group its master led.

        The daemons call setsid(), so their workers share the master's pid as
        process group; a worker orphaned by a killed master keeps the ports.
        Only processes of ``program`` (the backend's) are touched.
        """
        leftovers = [pid for pid in processes_in_group(group) if program in process_name(pid)]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(process_alive(pid) for pid in leftovers), 5)

    # -- systemd supervisor ------------------------------------------------
    @staticmethod
    def unit_name(backend, record):
        return "scistream-%s-%s-%s.service" % (backend.name, record.role.lower(), record.uid)

    def unit_text(self, backend, store, record):
        paths = self.paths(store, record)
        config = os.path.join(paths["run_dir"], backend.config_name)
        reload_line = ""
        if backend.reload_signal is not None:
            # The shell's own kill: /bin/kill (procps) is not on every host.
            reload_line = "ExecReload=/bin/sh -c 'kill -%s $MAINPID'\n" % backend.reload_signal.name[3:]
        return (
            "# SciStream S2DS session %s (%s), written by scistream.gateway: do not edit.\n"
            "[Unit]\nDescription=SciStream %s %s session %s\nAfter=network-online.target\n\n"
            "[Service]\nType=simple\nExecStart=%s\n%sRestart=on-failure\nRestartSec=1\n"
            "KillSignal=SIGTERM\nTimeoutStopSec=10\n\n[Install]\nWantedBy=multi-user.target\n"
        ) % (record.uid, record.role, backend.name, record.role, record.uid,
             shlex.join(backend.foreground_argv(config, paths["log_file"])), reload_line)

    def _systemctl(self, *args):
        result = _run(["systemctl"] + list(args))
        if result.returncode != 0 and args[0] not in ("is-active",):
            raise S2DSError("systemctl %s failed: %s" % (" ".join(args), result.stdout.decode("utf-8", "replace").strip()))
        return result

    def _remove_unit(self, name):
        self._systemctl("disable", "--now", name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SYSTEMD_UNIT_DIR, name))
        self._systemctl("daemon-reload")

    def release_orphan(self, store, uid):
        """The unit(s) named with ``uid``, or the daemon whose pid file is in its run dir."""
        stopped = []
        if self.supervisor == "systemd":
            for unit in sorted(glob.glob(os.path.join(SYSTEMD_UNIT_DIR, "scistream-*-%s.service" % uid))):
                self._remove_unit(os.path.basename(unit))
                stopped.append("unit " + os.path.basename(unit))
            return stopped
        run_dir = store.run_dir(uid)
        pid = _read_pid(os.path.join(run_dir, "proxy.pid"))
        # Only a process started with a config from this session's run dir.
        if pid and process_alive(pid) and (run_dir + "/") in process_cmdline(pid):
            name = process_name(pid)
            self._terminate(pid, signal.SIGTERM)
            self._kill_leftovers(name, pid)
            stopped.append("%s (pid %d)" % (name, pid))
        return stopped

    # -- lifecycle ---------------------------------------------------------
    def is_running(self, backend, store, record):
        if self.supervisor == "systemd":
            # Running counts only when it also comes back at boot: a unit that is
            # not enabled (written by an older version) is started, and enabled, again.
            name = self.unit_name(backend, record)
            return (os.path.lexists(os.path.join(SYSTEMD_WANTS_DIR, name))
                    and self._systemctl("is-active", "--quiet", name).returncode == 0)
        return self._daemon_pid_alive(backend, store, record) is not None

    def start(self, backend, store, record):
        paths = self.paths(store, record)
        config = os.path.join(paths["run_dir"], backend.config_name)
        if self.supervisor == "systemd":
            unit = os.path.join(SYSTEMD_UNIT_DIR, self.unit_name(backend, record))
            write_file_atomic(unit, self.unit_text(backend, store, record), mode=0o644)
            self._systemctl("daemon-reload")
            self._systemctl("enable", self.unit_name(backend, record))
            self._systemctl("restart", self.unit_name(backend, record))
            return
        # Workers of a master that died may still hold the ports; a stale
        # pid file would make a daemon refuse to start.
        stale = self._pid(store, record)
        if stale:
            self._kill_leftovers(backend.name, stale)
        store.remove_run_file(record.uid, "proxy.pid")
        result = _run(backend.daemon_argv(config, paths["pid_file"], paths["log_file"]))
        if result.returncode != 0 or not wait_until(lambda: self._daemon_pid_alive(backend, store, record), 10):
            output = result.stdout.decode("utf-8", "replace").strip() or self.log_tail(store, record).strip()
            raise S2DSError("%s for session %s did not start: %s" % (backend.name, record.uid, output[-2000:]),
                            field="uid", value=record.uid)

    def reload(self, backend, store, record):
        if backend.reload_signal is None:
            self.restart(backend, store, record)
        elif self.supervisor == "systemd":
            self._systemctl("reload", self.unit_name(backend, record))
        else:
            pid = self._daemon_pid_alive(backend, store, record)
            if pid is None:
                self.start(backend, store, record)
            else:
                os.kill(pid, backend.reload_signal)

    def stop(self, backend, store, record):
        if self.supervisor == "systemd":
            name = self.unit_name(backend, record)
            unit = os.path.join(SYSTEMD_UNIT_DIR, name)
            if os.path.exists(unit):
                self._remove_unit(name)
            return
        pid = self._daemon_pid_alive(backend, store, record)
        if pid is not None:
            self._terminate(pid, backend.stop_signal)
        stale = pid or self._pid(store, record)
        if stale:
            self._kill_leftovers(backend.name, stale)
        # Workers close their sockets a moment after the master exits.
        wait_until(lambda: not set(record.ports) & listening_ports("tcp"), 5)
