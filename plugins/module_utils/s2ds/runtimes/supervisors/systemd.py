# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The systemd supervisor (where systemd is PID 1).

One unit per session, the proxy in the foreground, ``systemctl reload``
sends the backend's reload signal. The unit is enabled
(``WantedBy=multi-user.target``), so the proxy comes back by itself when the
host boots; release disables and removes it. A unit fails in the background,
so the gateway checks a config before a start.

Each session's unit runs as the session's pool uid (``User=``/``Group=``
with the numbers the uid pool gave, :mod:`...uidpool`), like the daemon
supervisor's ``setpriv`` and the docker runtime's ``--user``. Why not
``DynamicUser=`` with ``LoadCredential=``: systemd would pick the uid (from
its own range) only when the unit starts, and hand it to another unit after
this one stops, so the gateway could neither give the run dir and its
``proxy/`` dir to that uid beforehand nor keep one uid per session across
the runtimes (the pool's registry, the daemon supervisor, docker); and the
configs would have to name keys at ``$CREDENTIALS_DIRECTORY`` paths that do
not exist when the gateway checks them. Why not a root unit that drops to
the uid with ``setpriv``: systemd would then see (and ``systemd-analyze
security`` score) a root service holding CAP_SETUID/CAP_SETGID/CAP_SETPCAP
and the set-uid system calls. But systemd runs a unit only as a uid the
user database knows (a bare number fails with status 217/USER), so before a
unit first runs as a pool uid the supervisor makes the pool's own account for
it (:func:`ensure_pool_account`: ``scistream-p<uid>``, no member, password,
home or shell), which the pool then recognises as its own.
"""

from __future__ import annotations

import contextlib
import glob
import grp
import os
import pwd
import shlex
import time

from ...errors import S2DSError
from ...names import session_key
from ...sandbox import unit_sandbox
from ...store import read_text, write_file_atomic
from ...uidpool import PoolAccount, is_pool_account, pool_account_name
from ..privileges import needs_low_port
from . import Supervisor, run_command

__all__ = ["SYSTEMD_UNIT_DIR", "SYSTEMD_WANTS_DIR", "SystemdSupervisor", "ensure_pool_account", "hardening_lines"]

SYSTEMD_UNIT_DIR = "/etc/systemd/system"
SYSTEMD_WANTS_DIR = os.path.join(SYSTEMD_UNIT_DIR, "multi-user.target.wants")
#: A pool account's comment (GECOS) field.
POOL_ACCOUNT_COMMENT = "SciStream session proxy (uid pool)"
#: Seconds to keep trying while another program holds the user database's lock.
ACCOUNT_LOCK_WAIT = 10


def _nologin_shell():
    for path in ("/usr/sbin/nologin", "/sbin/nologin"):
        if os.path.exists(path):
            return path
    return "/bin/false"


def _account_tool(argv):
    """Run groupadd / useradd (shadow's tools, which lock and rewrite the user database themselves), again while
    another program holds its lock, for at most ACCOUNT_LOCK_WAIT seconds."""
    deadline = time.monotonic() + ACCOUNT_LOCK_WAIT
    while True:
        result = run_command(argv)
        output = result.stdout.decode("utf-8", "replace").strip()
        if result.returncode == 0:
            return
        if "lock" not in output.lower() or time.monotonic() > deadline:
            raise S2DSError("%s failed (exit %d): %s" % (shlex.join(argv), result.returncode, output[-300:]),
                            field="proxy_user", value="pool")
        time.sleep(0.2)


def ensure_pool_account(uid):
    """Make the pool's own account for ``uid`` unless the user database has it: a system group
    ``scistream-p<uid>`` of gid ``uid`` with no member, and a system user of that name and uid, that group
    as its only group, no password (locked), home ``/`` (not made), no login shell, no lastlog/faillog entry.
    True when something was made. Refuses (naming ``proxy_user``) a uid or name some other account has."""
    name = pool_account_name(uid)
    if is_pool_account(uid):
        return False
    for by_name, what in ((pwd.getpwnam, "user"), (grp.getgrnam, "group")):
        with contextlib.suppress(KeyError):
            other = by_name(name)
            number = other.pw_uid if what == "user" else other.gr_gid
            if number != uid:
                raise S2DSError("pool uid %d: the %s name %s is taken by %s %d" % (uid, what, name, what, number),
                                field="proxy_user", value="pool")
    if not is_pool_account(uid, user=False, group=False):
        raise S2DSError("pool uid %d: an account or group of this host has it; it is not the pool's" % uid,
                        field="proxy_user", value="pool")
    made = False
    try:
        grp.getgrgid(uid)
    except KeyError:
        _account_tool(["groupadd", "--system", "--gid", str(uid), name])
        made = True
    try:
        pwd.getpwuid(uid)
    except KeyError:
        _account_tool(["useradd", "--system", "--no-log-init", "--no-create-home", "--no-user-group",
                       "--uid", str(uid), "--gid", str(uid), "--home-dir", "/", "--shell", _nologin_shell(),
                       "--comment", POOL_ACCOUNT_COMMENT, name])
        made = True
    if not is_pool_account(uid):
        raise S2DSError("pool uid %d: the account %s was not made as asked" % (uid, name), field="proxy_user",
                        value="pool")
    return made


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


class SystemdSupervisor(Supervisor):
    name = "systemd"
    foreground = True

    @staticmethod
    def unit_name(backend, record):
        return "scistream-%s-%s-%s.service" % (backend.name, record.role.lower(), session_key(record.uid))

    def unit_text(self, backend, store, record):
        paths = self.runtime.paths(store, record)
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
        ) % (record.uid, record.role, backend.name, record.role, record.uid, self._unit_identity(record),
             shlex.join(backend.foreground_argv(config, paths["log_file"])), reload_line,
             hardening_lines(paths["run_dir"], os.path.dirname(paths["pid_file"]), needs_low_port(record),
                             as_root=self.runtime.account_for(record) is None))

    def _unit_identity(self, record):
        """``User=`` and ``Group=``: the session's pool uid and gid (as numbers; ``start`` makes the pool account
        that lets systemd resolve them), else the proxy account; nothing for root."""
        account = self.runtime.account_for(record)
        if account is None:
            return ""
        return "User=%s\nGroup=%d\n" % (account.name, account.gid)

    def _systemctl(self, *args):
        result = run_command(["systemctl"] + list(args))
        if result.returncode != 0 and args[0] not in ("is-active",):
            raise S2DSError("systemctl %s failed: %s" % (" ".join(args), result.stdout.decode("utf-8", "replace").strip()))
        return result

    def _remove_unit(self, name):
        self._systemctl("disable", "--now", name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SYSTEMD_UNIT_DIR, name))
        self._systemctl("daemon-reload")

    # -- the Supervisor interface -------------------------------------------
    def is_running(self, backend, store, record):
        # Running counts only when it also comes back at boot: a unit that is
        # not enabled (written by an older version) is started, and enabled, again.
        name = self.unit_name(backend, record)
        return (os.path.lexists(os.path.join(SYSTEMD_WANTS_DIR, name))
                and self._systemctl("is-active", "--quiet", name).returncode == 0)

    def start(self, backend, store, record):
        account = self.runtime.account_for(record)
        if isinstance(account, PoolAccount):
            ensure_pool_account(account.uid)  # before the unit names it: systemd resolves User= when it starts
        unit = os.path.join(SYSTEMD_UNIT_DIR, self.unit_name(backend, record))
        write_file_atomic(unit, self.unit_text(backend, store, record), mode=0o644)
        self._systemctl("daemon-reload")
        self._systemctl("enable", self.unit_name(backend, record))
        self._systemctl("restart", self.unit_name(backend, record))

    def reload(self, backend, store, record):
        unit = os.path.join(SYSTEMD_UNIT_DIR, self.unit_name(backend, record))
        if read_text(unit) != self.unit_text(backend, store, record):
            self.start(backend, store, record)  # its user, capabilities or paths changed: a new unit
        else:
            self._systemctl("reload", self.unit_name(backend, record))

    def stop(self, backend, store, record):
        name = self.unit_name(backend, record)
        if os.path.exists(os.path.join(SYSTEMD_UNIT_DIR, name)):
            self._remove_unit(name)

    def release_orphan(self, store, uid):
        """The unit(s) named with ``uid``."""
        stopped = []
        for unit in sorted(glob.glob(os.path.join(SYSTEMD_UNIT_DIR, "scistream-*-%s.service" % session_key(uid)))):
            self._remove_unit(os.path.basename(unit))
            stopped.append("unit " + os.path.basename(unit))
        return stopped
