# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A compromised proxy against root: its files are never trusted, and its uid is its session's alone.

Real proxies (HAProxy, NGINX, stunnel) run as pool uids (``proxy_user:
pool``); the test then acts as the proxy's own uid (a subprocess with that
uid, no groups) and swaps its pid file, log and stats socket for a symbolic
link to a root-only secret, a hard link, a FIFO, a socket or a huge file.
The gateway (``present``, ``sessions``: what s2ds, s2ds_info and the
exporter call), and the S2CS (an update whose start fails) keep answering
within their normal time, never show a byte of the secret, and change
nothing outside. Two sessions: one uid can neither read the other's key nor
signal its proxy.

Ports 46400-46499 (this file's block); pool uids 7460-7499.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

from conftest import Sink, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import proxy_reports
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import (
    listening_ports, process_alive, wait_until)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.untrusted import public_message

SINK_PORT = 46499
SECRET = "root-only: admin-token-%s" % uuid.uuid4().hex
PSK = "k" * 32
BACKENDS = {"haproxy": "46400-46409", "nginx": "46410-46419", "stunnel": "46420-46429"}

LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)  # the tests forward to loopback, as an operator allows


@pytest.fixture
def place():
    """A state dir the pool uids may reach, a registry of its own and a root-only secret outside."""
    top = tempfile.mkdtemp(prefix="/tmp/pf-")
    os.chmod(top, 0o755)
    secret = os.path.join(top, "secret.txt")
    with open(secret, "w", encoding="ascii") as handle:
        handle.write(SECRET + "\n")
    os.chmod(secret, 0o600)
    info = {"top": top, "state_dir": os.path.join(top, "gw"), "registry": os.path.join(top, "uids", "proxy-uids.json"),
            "secret": secret}
    yield info
    gateway = Gateway(info["state_dir"], {"process": lambda session: ProcessRuntime("daemon", "root")}, policy=LOOPBACK_POLICY)
    for record in gateway.store.all():
        with _quiet():
            gateway.absent(record.uid)
    shutil.rmtree(top, ignore_errors=True)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], Exception)


def pool_gateway(place, uid_range="7460-7479"):
    runtime = ProcessRuntime("daemon", "pool", proxy_uid_range=uid_range, uid_registry=place["registry"])
    return Gateway(place["state_dir"], {"process": lambda session: runtime}, policy=LOOPBACK_POLICY)


def spec(uid, backend, target_port=SINK_PORT, role="PROD"):
    return SessionSpec.build(uid=uid, role=role, num_conn=1, listener_ip="127.0.0.1", port_range=BACKENDS[backend],
                             targets=["127.0.0.1:%d" % target_port], backend=backend,
                             psk=PSK if backend == "stunnel" else None)


def as_uid(uid, script, timeout=10):
    """Run ``script`` (sh) as ``uid``:``uid`` with no other group, as the compromised proxy would."""
    return subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "sh", "-c", script],
                          capture_output=True, text=True, timeout=timeout, check=False, cwd="/")


def status_uid(pid):
    with open("/proc/%d/status" % pid, encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("Uid:"))


def fingerprint(path):
    info = os.stat(path)
    with open(path, "rb") as handle:
        return handle.read(), info.st_mtime_ns, info.st_mode, info.st_uid, info.st_ino


def no_secret(*texts):
    for text in texts:
        assert SECRET not in str(text) and "admin-token" not in str(text), text


# -- one uid per session ----------------------------------------------------------------
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_two_sessions_have_two_uids_and_neither_reaches_the_other(place, backend):
    gateway = pool_gateway(place)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        gateway.present(spec(first, backend))
        gateway.present(spec(second, backend))
        records = {uid: gateway.store.load(uid) for uid in (first, second)}
        uids = {uid: record.proxy_uid for uid, record in records.items()}
        assert len(set(uids.values())) == 2 and all(7460 <= value <= 7479 for value in uids.values()), uids
        runtime = gateway.runtime_for(records[first])
        masters = {uid: runtime.proxy_pid(get_backend(backend), gateway.store, records[uid]) for uid in uids}
        for uid, pid in masters.items():
            assert status_uid(pid) == uids[uid], (backend, uid)
            run_dir = gateway.store.run_dir(uid)
            info = os.stat(run_dir)
            assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o750, 0, uids[uid])
            own = os.stat(os.path.join(run_dir, "proxy"))
            assert (stat.S_IMODE(own.st_mode), own.st_uid, own.st_gid) == (0o700, uids[uid], uids[uid])
        other_dir = gateway.store.run_dir(second)
        key = "psk.txt" if backend == "stunnel" else get_backend(backend).config_name
        mine = as_uid(uids[first], "cat %s/%s" % (gateway.store.run_dir(first), key))
        assert mine.returncode == 0, mine.stderr  # its own key (or config): readable
        theirs = as_uid(uids[first], "cat %s/%s" % (other_dir, key))
        assert theirs.returncode != 0 and "Permission denied" in theirs.stderr and PSK not in theirs.stdout
        listing = as_uid(uids[first], "ls %s" % gateway.store.sessions_dir)
        assert listing.returncode != 0
        signal_it = as_uid(uids[first], "kill -TERM %d" % masters[second])
        assert signal_it.returncode != 0 and process_alive(masters[second])
        assert as_uid(uids[first], "kill -0 %d" % masters[first]).returncode == 0  # its own: yes
        # released: the uid goes back to the pool
        gateway.absent(second)
        assert uids[second] not in set(_registry_uids(place))
    finally:
        for uid in (first, second):
            gateway.absent(uid)


def _registry_uids(place):
    try:
        with open(place["registry"], encoding="utf-8") as handle:
            return [int(uid) for uid in json.load(handle)["uids"]]
    except FileNotFoundError:
        return []


def test_a_record_from_before_the_pool_keeps_working(place):
    """An old record (no proxy_uid) of a root proxy: listed, then moved to a pool uid by its next change."""
    root_gateway = Gateway(place["state_dir"], {"process": lambda session: ProcessRuntime("daemon", "root")}, policy=LOOPBACK_POLICY)
    uid = str(uuid.uuid4())
    try:
        root_gateway.present(spec(uid, "haproxy"))
        path = root_gateway.store.record_path(uid)
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        data.pop("proxy_uid", None)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        gateway = pool_gateway(place)
        assert gateway.sessions(uid)[0]["healthy"]
        outcome = gateway.present(spec(uid, "haproxy"))
        record = gateway.store.load(uid)
        assert record.proxy_uid is not None and "restart" in outcome.actions, outcome.actions
        pid = gateway.runtime_for(record).proxy_pid(get_backend("haproxy"), gateway.store, record)
        assert status_uid(pid) == record.proxy_uid
    finally:
        root_gateway.absent(uid)


# -- hostile files ------------------------------------------------------------------------
KINDS = ("symlink", "hardlink", "fifo", "socket", "huge", "devzero")


def plant(kind, path, secret, proxy_uid):
    """Put ``kind`` at ``path`` as the proxy's uid would (a hard link to a root file needs
    fs.protected_hardlinks=0, so root makes that one, as on a host where it is off)."""
    if kind == "symlink":
        done = as_uid(proxy_uid, "rm -f %s; ln -s %s %s" % (path, secret, path))
    elif kind == "devzero":
        done = as_uid(proxy_uid, "rm -f %s; ln -s /dev/zero %s" % (path, path))
    elif kind == "fifo":
        done = as_uid(proxy_uid, "rm -f %s; mkfifo %s" % (path, path))
    elif kind == "huge":
        done = as_uid(proxy_uid, "rm -f %s; truncate -s 8G %s" % (path, path))
    elif kind == "socket":
        done = as_uid(proxy_uid, "rm -f %s; /usr/bin/python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX);"
                                 " s.bind(sys.argv[1])' %s" % (path, path))
    else:
        refused = as_uid(proxy_uid, "rm -f %s; ln %s %s" % (path, secret, path))
        assert refused.returncode != 0  # the kernel refuses the proxy a hard link to root's file
        os.link(secret, path)
        return
    assert done.returncode == 0, done.stderr


def timed(call, limit, label=""):
    """``call()``'s result or exception, failing when it takes more than ``limit`` seconds (it may block)."""
    box = {}

    def run():
        try:
            box["value"] = call()
        except Exception as exc:  # pylint: disable=broad-except
            box["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "blocked for more than %ss %s" % (limit, label)
    box["seconds"] = time.monotonic() - started
    return box


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_hostile_pid_log_and_socket_are_never_trusted(place, backend):
    """For each hostile kind, at the pid file, the log and (HAProxy) the stats socket: the proxy's uid kills its
    proxy and plants it; root's next present, sessions and traffic report (the exporter's) answer in time, quote
    nothing of the secret, and change nothing outside."""
    gateway = pool_gateway(place)
    uid = str(uuid.uuid4())
    before = fingerprint(place["secret"])
    sink = None
    try:
        gateway.present(spec(uid, backend))
        record = gateway.store.load(uid)
        own = os.path.join(gateway.store.run_dir(uid), "proxy")
        names = ["proxy.pid", "proxy.log"] + (["haproxy.sock"] if backend == "haproxy" else [])
        runtime = gateway.runtime_for(record)
        for name in names:
            for kind in KINDS:
                record = gateway.store.load(uid)
                pid = runtime.proxy_pid(get_backend(backend), gateway.store, record)
                if pid:
                    killed = as_uid(record.proxy_uid, "kill -KILL %d" % pid)
                    assert killed.returncode == 0, killed.stderr
                    wait_until(lambda: not process_alive(pid), 5)
                plant(kind, os.path.join(own, name), place["secret"], record.proxy_uid)
                started = timed(lambda: gateway.present(spec(uid, backend)), 15, (name, kind))
                error = started.get("error")
                if error is not None:
                    assert isinstance(error, S2DSError), (name, kind, error)
                    no_secret(str(error), public_message(error))
                    assert "\n" not in public_message(error)
                listed = timed(lambda: gateway.sessions(uid), 3, (name, kind))
                assert "error" not in listed or isinstance(listed["error"], S2DSError), listed
                no_secret(json.dumps(listed.get("value"), default=str))
                report = timed(lambda: proxy_reports.connection_errors(
                    get_backend(backend), runtime.paths(gateway.store, record), gateway.store, record), 3)
                no_secret(report)
                assert fingerprint(place["secret"]) == before, (name, kind)
                # the operator (root) clears the file; the next run heals the session
                path = os.path.join(own, name)
                if os.path.lexists(path):
                    os.unlink(path)
                healed = timed(lambda: gateway.present(spec(uid, backend)), 15, (name, kind))
                assert "error" not in healed, (name, kind, healed)
        if backend == "stunnel":
            return  # a PROD stunnel listener speaks TLS-PSK only: the forwarding check needs a CONS side
        sink = Sink(port=SINK_PORT, timeout=20)
        port = gateway.store.load(uid).ports[0]
        sent = streamcheck.send("127.0.0.1", port, 256 * 1024, timeout=10)
        assert sink.wait()["sha256"] == sent["sha256"]  # and it still forwards
        sink = None
    finally:
        if sink is not None:
            sink.sock.close()
        gateway.absent(uid)


def test_a_fifo_does_not_hold_the_lock_from_other_sessions(place):
    """The issue's freeze: a FIFO as one session's pid file; another session's change goes through at once."""
    gateway = pool_gateway(place)
    hostile, other = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        gateway.present(spec(hostile, "nginx"))
        record = gateway.store.load(hostile)
        own = os.path.join(gateway.store.run_dir(hostile), "proxy")
        plant("fifo", os.path.join(own, "proxy.pid"), place["secret"], record.proxy_uid)
        assert "error" not in timed(lambda: gateway.present(spec(hostile, "nginx")), 15)
        assert "error" not in timed(lambda: gateway.present(spec(other, "haproxy")), 15)
        assert "error" not in timed(gateway.sessions, 3)
    finally:
        for uid in (hostile, other):
            gateway.absent(uid)


@pytest.mark.parametrize("backend", ["nginx", "haproxy"])
def test_a_start_error_quotes_no_log_through_a_link(place, backend):
    """The issue's leak: the log is a link to a root-only file, the proxy cannot start; the error names what
    failed, the proxy's own output is escaped, and not one byte of the secret is in it. (A start first removes
    such a link: here it is planted after that, as a racing process of the proxy's uid could, and the port is
    taken, so the start fails and its error reads the log.)"""
    gateway = pool_gateway(place)
    uid = str(uuid.uuid4())
    blocker = None
    try:
        gateway.present(spec(uid, backend))
        record = gateway.store.load(uid)
        runtime = gateway.runtime_for(record)
        runtime.clear_own_files = lambda store, record: []
        own = os.path.join(gateway.store.run_dir(uid), "proxy")
        as_uid(record.proxy_uid, "kill -KILL -1")  # every process of its uid: master and workers
        assert wait_until(lambda: record.ports[0] not in listening_ports("tcp"), 5)
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", record.ports[0]))
        blocker.listen(1)
        plant("symlink", os.path.join(own, "proxy.log"), place["secret"], record.proxy_uid)
        with pytest.raises(S2DSError) as caught:
            gateway.present(spec(uid, backend))
        no_secret(str(caught.value), public_message(caught.value))
        assert "did not start" in public_message(caught.value) or "did not listen" in public_message(caught.value)
        assert "\n" not in str(caught.value) and all(" " <= char <= "~" for char in str(caught.value))
    finally:
        if blocker is not None:
            blocker.close()
        gateway.absent(uid)


def test_a_stats_socket_linked_to_a_root_socket_is_never_connected(place):
    gateway = pool_gateway(place)
    uid = str(uuid.uuid4())
    root_socket = os.path.join(place["top"], "root-service.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(root_socket)
    server.listen(4)
    server.settimeout(0.2)
    try:
        gateway.present(spec(uid, "haproxy"))
        record = gateway.store.load(uid)
        path = os.path.join(gateway.store.run_dir(uid), "proxy", "haproxy.sock")
        done = as_uid(record.proxy_uid, "rm -f %s; ln -s %s %s" % (path, root_socket, path))
        assert done.returncode == 0, done.stderr
        listed = timed(lambda: gateway.sessions(uid), 3)["value"]
        assert listed[0]["traffic"] is None or all(entry.get("errors") is None for entry in listed[0]["traffic"] or [])
        with pytest.raises(socket.timeout):
            server.accept()  # nobody connected
    finally:
        server.close()
        gateway.absent(uid)


def test_ports_and_uids_are_free_after_release(place):
    gateway = pool_gateway(place)
    uid = str(uuid.uuid4())
    ports = gateway.present(spec(uid, "haproxy")).session["ports"]
    gateway.absent(uid)
    assert wait_until(lambda: not set(ports) & listening_ports("tcp"), 5)
    assert _registry_uids(place) == []


# -- systemd: the pool too (tests/integration/test_systemd.py runs the units) ----------------
def test_systemd_takes_the_pool(place):
    """systemd's User= needs an account (217/USER without one): the supervisor makes the pool's own (unit tests:
    tests/unit/test_systemd_unit.py); the runtime has the pool under systemd as under the daemon supervisor."""
    runtime = ProcessRuntime("systemd", "pool", proxy_uid_range="7460-7479", uid_registry=place["registry"])
    assert runtime.uid_pool is not None and runtime.supervisor.name == "systemd"


# -- docker: the container runs as the session's pool uid, hardened ----------------------
@pytest.mark.docker
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_docker_sessions_run_as_their_own_uids_hardened(place, backend):
    from conftest import docker_client  # pylint: disable=import-outside-toplevel
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import (  # pylint: disable=import-outside-toplevel
        DockerRuntime)
    runtime = DockerRuntime(image="scistream/%s:local" % backend, proxy_user="pool", proxy_uid_range="7480-7499",
                            uid_registry=place["registry"])
    gateway = Gateway(place["state_dir"], {"docker": lambda session: runtime}, policy=LOOPBACK_POLICY)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    def docker_spec(uid):
        return SessionSpec.build(uid=uid, role="PROD", num_conn=1, listener_ip="127.0.0.1", port_range="46440-46459",
                                 targets=["127.0.0.1:%d" % SINK_PORT], backend=backend, runtime="docker",
                                 psk=PSK if backend == "stunnel" else None)
    try:
        for uid in (first, second):
            gateway.present(docker_spec(uid))
        records = {uid: gateway.store.load(uid) for uid in (first, second)}
        assert records[first].proxy_uid != records[second].proxy_uid
        pids = {}
        for uid, record in records.items():
            attrs = docker_client().containers.get("scistream-%s-prod-%s" % (backend, uid)).attrs
            host = attrs["HostConfig"]
            assert attrs["Config"]["User"] == "%d:%d" % (record.proxy_uid, record.proxy_uid)
            assert host["ReadonlyRootfs"] is True and host["PidsLimit"] == 256
            assert host["CapDrop"] == ["ALL"] and host["CapAdd"] in (None, [])
            assert "no-new-privileges" in host["SecurityOpt"] and set(host["Tmpfs"]) == {"/tmp", "/run"}
            pids[uid] = attrs["State"]["Pid"]
            assert status_uid(pids[uid]) == record.proxy_uid
        key = "psk.txt" if backend == "stunnel" else get_backend(backend).config_name
        theirs = as_uid(records[first].proxy_uid, "cat %s/%s" % (gateway.store.run_dir(second), key))
        assert theirs.returncode != 0 and PSK not in theirs.stdout
        assert as_uid(records[first].proxy_uid, "kill -TERM %d" % pids[second]).returncode != 0
        assert process_alive(pids[second])
    finally:
        for uid in (first, second):
            gateway.absent(uid)
