# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The interface every runtime implements, and helpers they share."""

from __future__ import annotations

import dataclasses
import os
import pwd
import stat
import time

from .. import counting, proxy_reports
from ..backends import get_backend
from ..errors import S2DSError


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
        """The last lines the proxy logged, for error messages."""
        return ""

    def release_orphan(self, store, uid):
        """Stop whatever proxy of session ``uid`` this runtime can find from the uid and the run dir alone.

        For a session whose record is broken. Returns what was stopped, for the
        caller to report; the default finds nothing.
        """
        return []


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


def wait_until(predicate, timeout, interval=0.02):
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def listening_ports(protocol="tcp"):
    """TCP ports in LISTEN state (or bound UDP ports) in this network namespace."""
    ports = set()
    for name in (protocol, protocol + "6"):
        try:
            with open("/proc/net/" + name, encoding="ascii") as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    # TCP state 0A is LISTEN; UDP sockets have no listen state.
                    if protocol == "udp" or fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def established_connections():
    """{local port: number of ESTABLISHED TCP connections} in this network namespace."""
    counts = {}
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/net/" + name, encoding="ascii") as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    if fields[3] == "01":  # TCP_ESTABLISHED
                        port = int(fields[1].rsplit(":", 1)[1], 16)
                        counts[port] = counts.get(port, 0) + 1
        except FileNotFoundError:
            continue
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


def wait_for_listeners(runtime, backend, store, record, timeout=10.0):
    """Block until every TCP listener of ``record`` listens, or fail with the proxy's log."""
    wanted = set(record.ports)
    if wait_until(lambda: wanted <= listening_ports("tcp"), timeout):
        return
    missing = sorted(wanted - listening_ports("tcp"))
    raise S2DSError("%s for session %s did not listen on port(s) %s within %ds%s" % (
        backend.name, record.uid, ", ".join(map(str, missing)), timeout, _tail(runtime.log_tail(store, record))),
        field="uid", value=record.uid)


def _tail(text):
    text = (text or "").strip()
    return (": " + " | ".join(text.splitlines()[-5:])) if text else ""


def read_log_tail(path, limit=4096):
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - limit))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
