# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Who a proxy runs as: the proxy account, sharing a run dir with it, and dropping root to it (``setpriv``)."""

from __future__ import annotations

import dataclasses
import os
import pwd
import stat

from ..errors import S2DSError

__all__ = ["DEFAULT_PROXY_USER", "PRIVILEGED_PORT_LIMIT", "PROXY_OWN_DIR", "ProxyAccount", "drop_privileges_argv",
           "needs_low_port", "resolve_proxy_account", "share_run_dir"]


#: The account the gateway role creates for the proxies; ``proxy_user: auto`` uses it where it exists.
DEFAULT_PROXY_USER = "scistream"
#: The run dir's subdirectory the proxy itself writes (its pid file and log); everything else it only reads.
PROXY_OWN_DIR = "proxy"
#: Below this port a proxy needs CAP_NET_BIND_SERVICE, and is given it and nothing else.
PRIVILEGED_PORT_LIMIT = 1024


@dataclasses.dataclass(frozen=True)
class ProxyAccount:
    """The unprivileged user and group a proxy runs as."""

    name: str
    uid: int
    gid: int


def resolve_proxy_account(value="auto"):
    """``proxy_user`` into a ProxyAccount, or None for root.

    ``auto`` is the ``scistream`` user where it exists on this host (the
    gateway role creates it) and root elsewhere, as before there was one;
    ``root`` keeps the proxies root; any other name must exist.
    """
    value = "auto" if value is None else str(value)
    if value == "root":
        return None
    name = DEFAULT_PROXY_USER if value == "auto" else value
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if value == "auto":
            return None
        raise S2DSError("proxy_user %r does not exist on this host (the scistream.gateway.gateway role creates %s)" % (
            value, DEFAULT_PROXY_USER), field="proxy_user", value=value) from None
    if entry.pw_uid == 0:
        return None
    return ProxyAccount(name, entry.pw_uid, entry.pw_gid)


def needs_low_port(record):
    return bool(record.ports) and min(record.ports) < PRIVILEGED_PORT_LIMIT


def share_run_dir(store, uid, account):
    """Let ``account`` read the session's run dir, and write only its own subdirectory.

    With a proxy account the state dir and run root become 0710 root:<group>
    (the group may pass, not list), the run dir 0750 root:<group>, every file
    in it 0640 root:<group> - key files included: they are readable by root
    and that group only, and the group holds only the proxy user - and
    ``proxy/`` (pid file, log) belongs to the account, 0700. The session
    records (``sessions/``) stay 0700 root. Without one (root) the modes stay
    0700 / as written. Nothing in a directory the account can write is
    chowned or chmodded (no symlink can redirect these calls).
    """
    run_dir = store.run_dir(uid)
    own_dir = os.path.join(run_dir, PROXY_OWN_DIR)
    os.makedirs(own_dir, mode=0o700, exist_ok=True)
    if account is None:
        os.chown(own_dir, 0, 0)
        return
    for path in (store.state_dir, store.run_root):
        _set_owner(path, 0, account.gid, 0o710)
    _set_owner(run_dir, 0, account.gid, 0o750)
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if name != PROXY_OWN_DIR and stat.S_ISREG(os.lstat(path).st_mode):
            _set_owner(path, 0, account.gid, 0o640)
    _set_owner(own_dir, account.uid, account.gid, 0o700)
    _check_reachable(account, os.path.dirname(store.state_dir))


def _check_reachable(account, directory):
    """Fail clearly when a directory above the state dir keeps ``account`` out (a 0700 home, pytest's tmp)."""
    while True:
        info = os.stat(directory)
        may_pass = (info.st_mode & stat.S_IXOTH or (info.st_gid == account.gid and info.st_mode & stat.S_IXGRP)
                    or (info.st_uid == account.uid and info.st_mode & stat.S_IXUSR))
        if not may_pass:
            raise S2DSError("state_dir: proxy_user %s cannot reach it: %s is mode %o, owner %d:%d; put the state dir "
                            "where that user may pass (or set proxy_user: root)" % (
                                account.name, directory, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid),
                            field="state_dir", value=directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            return
        directory = parent


def _set_owner(path, uid, gid, mode):
    """chown and chmod ``path`` (never following a symlink), only where they differ."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise S2DSError("%s is a symbolic link; the gateway does not follow links in its state dir" % path)
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.chown(path, uid, gid, follow_symlinks=False)
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


def drop_privileges_argv(account, low_port):
    """A ``setpriv`` (util-linux) prefix that runs a command as ``account`` with no capabilities,

    or with CAP_NET_BIND_SERVICE alone (bounding, inheritable and ambient
    sets) when the session listens below port 1024; no new privileges can be
    gained (no setuid binaries). Empty for root.
    """
    if account is None:
        return []
    caps = "+net_bind_service" if low_port else "-all"
    argv = ["setpriv", "--reuid=%d" % account.uid, "--regid=%d" % account.gid, "--clear-groups", "--no-new-privs",
            "--inh-caps=" + ("-all," + caps if low_port else caps)]
    if low_port:
        argv.append("--ambient-caps=+net_bind_service")
    return argv + ["--bounding-set=" + ("-all," + caps if low_port else caps)]
