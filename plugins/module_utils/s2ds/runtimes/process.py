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
from ..names import session_key
from ..proxy_reports import stats_socket_path
from ..sandbox import unit_sandbox
from ..store import read_text, write_file_atomic
from .base import (PROXY_OWN_DIR, Runtime, drop_privileges_argv, listening_ports, live_processes, needs_low_port,
                   parent_pid, process_alive, process_name, process_start_time, process_words, processes_in_group,
                   read_log_tail, resolve_proxy_account, share_run_dir, wait_until)

SYSTEMD_UNIT_DIR = "/etc/systemd/system"
SYSTEMD_WANTS_DIR = os.path.join(SYSTEMD_UNIT_DIR, "multi-user.target.wants")


def hardening_lines(run_dir, own_dir, low_port, as_root=False):
    """The [Service] lines that confine a session's proxy (the sandbox of :mod:`..sandbox`).

    The proxy reads its run dir and writes only its own subdirectory; the rest
    of the file system is read-only, /home and /tmp are hidden unless the
    state dir lives there. It keeps no capability but CAP_NET_BIND_SERVICE,
    and that one only for a listener below port 1024. A proxy left root
    (``proxy_user: root``) keeps CAP_SETUID and CAP_SETGID as well: NGINX's
    master then switches its workers to ``nobody``.
    """
    caps = ["CAP_NET_BIND_SERVICE"] if low_port else []
    bounding = (["CAP_SETUID", "CAP_SETGID"] if as_root else []) + caps
    lines = unit_sandbox([own_dir], capabilities=bounding, ambient_capabilities=caps, confined=True,
                         privileged_syscalls=as_root, visible_paths=[run_dir])
    return "".join(line + "\n" for line in lines)


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


#: The programs the process runtime runs (their process names contain these).
_PROGRAMS = ("haproxy", "nginx", "stunnel")


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


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self, supervisor="auto", proxy_user="auto"):
        if supervisor == "auto":
            supervisor = "systemd" if systemd_is_pid1() else "daemon"
        if supervisor not in ("systemd", "daemon"):
            raise S2DSError("process_supervisor %r: must be auto, systemd or daemon" % supervisor,
                            field="process_supervisor", value=supervisor)
        self.supervisor = supervisor
        #: Who the proxies run as (None: root); see base.resolve_proxy_account.
        self.account = resolve_proxy_account(proxy_user)
        # A daemon parses its config before it forks and exits non-zero on an error;
        # a systemd unit would only fail later, in the background.
        self.start_checks_config = supervisor == "daemon"

    # -- paths ------------------------------------------------------------
    def paths(self, store, record):
        run_dir = store.run_dir(record.uid)
        foreground = self.supervisor == "systemd"
        # The proxy writes only in its own subdirectory; the config and keys beside it are root's.
        own_dir = os.path.join(run_dir, PROXY_OWN_DIR)
        return {
            "run_dir": run_dir,
            "pid_file": os.path.join(own_dir, "proxy.pid"),
            "log_file": os.path.join(own_dir, "proxy.log"),
            "psk_file": os.path.join(run_dir, "psk.txt"),
            "foreground": foreground,
            "stats_socket": stats_socket_path(own_dir),  # the proxy (unprivileged) creates it
        }

    def check_config(self, backend, store, record, config_name):
        paths = self.paths(store, record)
        argv = backend.check_argv(os.path.join(paths["run_dir"], config_name), "/dev/null")
        if argv is None:
            return
        # As the proxy user: the check then also proves the proxy can read its files, and
        # whatever the checker creates (NGINX opens its error log) belongs to that user.
        share_run_dir(store, record.uid, self.account)
        result = _run(drop_privileges_argv(self.account, needs_low_port(record)) + argv)
        if result.returncode != 0:
            raise S2DSError("%s rejected the rendered config: %s" % (
                backend.name, result.stdout.decode("utf-8", "replace").strip()[-2000:]),
                field="template", value=backend.name)

    def log_tail(self, store, record):
        return read_log_tail(self.paths(store, record)["log_file"])

    # -- daemon supervisor -------------------------------------------------
    # A pid file is written by the proxy (a process that may be compromised) and
    # outlives it; it is a hint, never proof. A pid is this session's proxy only
    # when the process's command line names this session's config and, where
    # one was recorded at start, its start time is the recorded one.
    def _pid(self, store, record):
        return _read_pid(self.paths(store, record)["pid_file"])

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

    # -- systemd supervisor ------------------------------------------------
    @staticmethod
    def unit_name(backend, record):
        return "scistream-%s-%s-%s.service" % (backend.name, record.role.lower(), session_key(record.uid))

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
            "[Service]\nType=simple\n%sExecStart=%s\n%sRestart=on-failure\nRestartSec=1\n"
            "KillSignal=SIGTERM\nTimeoutStopSec=10\n%s\n[Install]\nWantedBy=multi-user.target\n"
        ) % (record.uid, record.role, backend.name, record.role, record.uid, self._unit_identity(),
             shlex.join(backend.foreground_argv(config, paths["log_file"])), reload_line,
             hardening_lines(paths["run_dir"], os.path.dirname(paths["pid_file"]), needs_low_port(record),
                             as_root=self.account is None))

    def _unit_identity(self):
        if self.account is None:
            return ""
        return "User=%s\nGroup=%d\n" % (self.account.name, self.account.gid)

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
            for unit in sorted(glob.glob(os.path.join(SYSTEMD_UNIT_DIR, "scistream-*-%s.service" % session_key(uid)))):
                self._remove_unit(os.path.basename(unit))
                stopped.append("unit " + os.path.basename(unit))
            return stopped
        # Only processes started with a config from this session's run dir; the pid
        # file is not trusted (it may name any process).
        run_dir = store.run_dir(uid) + "/"
        for program in _PROGRAMS:
            for pid in _masters(program, lambda words: any(word.startswith(run_dir) for word in words)):
                name = process_name(pid)
                self._stop_daemon(program, pid, signal.SIGTERM)
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
        return self.proxy_pid(backend, store, record) is not None

    def start(self, backend, store, record):
        paths = self.paths(store, record)
        config = os.path.join(paths["run_dir"], backend.config_name)
        share_run_dir(store, record.uid, self.account)
        if self.supervisor == "systemd":
            unit = os.path.join(SYSTEMD_UNIT_DIR, self.unit_name(backend, record))
            write_file_atomic(unit, self.unit_text(backend, store, record), mode=0o644)
            self._systemctl("daemon-reload")
            self._systemctl("enable", self.unit_name(backend, record))
            self._systemctl("restart", self.unit_name(backend, record))
            return
        # Never two proxies for one session: one still running (found by its
        # command line) is stopped first, and so are workers of a master that
        # died, which still hold the ports. A stale pid file would make a daemon refuse to start.
        running = self.proxy_pid(backend, store, record)
        if running is not None:
            self._stop_daemon(backend.name, running, backend.stop_signal)
        self._stop_recorded_orphans(backend, record)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths["pid_file"])
        result = _run(drop_privileges_argv(self.account, needs_low_port(record))
                      + backend.daemon_argv(config, paths["pid_file"], paths["log_file"]))
        started = result.returncode == 0 and wait_until(
            lambda: self._pid(store, record) and _names_config(self._pid(store, record), backend.name, config), 10)
        if not started:
            output = result.stdout.decode("utf-8", "replace").strip() or self.log_tail(store, record).strip()
            raise S2DSError("%s for session %s did not start: %s" % (backend.name, record.uid, output[-2000:]),
                            field="uid", value=record.uid)
        self._remember(record, self._pid(store, record))

    def reload(self, backend, store, record):
        share_run_dir(store, record.uid, self.account)  # the rewritten files are root's 0600 until shared
        if backend.reload_signal is None:
            self.restart(backend, store, record)
        elif self.supervisor == "systemd":
            unit = os.path.join(SYSTEMD_UNIT_DIR, self.unit_name(backend, record))
            if read_text(unit) != self.unit_text(backend, store, record):
                self.start(backend, store, record)  # its user, capabilities or paths changed: a new unit
            else:
                self._systemctl("reload", self.unit_name(backend, record))
        else:
            pid = self.proxy_pid(backend, store, record)
            if pid is None:
                self.start(backend, store, record)
            else:
                self._remember(record, pid)  # adopted, when it was found by its command line
                os.kill(pid, backend.reload_signal)

    def stop(self, backend, store, record):
        if self.supervisor == "systemd":
            name = self.unit_name(backend, record)
            unit = os.path.join(SYSTEMD_UNIT_DIR, name)
            if os.path.exists(unit):
                self._remove_unit(name)
            return
        pid = self.proxy_pid(backend, store, record)
        if pid is not None:
            self._stop_daemon(backend.name, pid, backend.stop_signal)
        self._stop_recorded_orphans(backend, record)
        # Workers close their sockets a moment after the master exits.
        wait_until(lambda: not set(record.ports) & listening_ports("tcp"), 5)
