# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""State that survives faults, with real proxies on the process runtime (daemon supervisor).

* A pid file is only a hint: a pid is checked against the process's command
  line (it must name this session's config) and the start time recorded when
  the proxy started, before anything is killed.
* A proxy already running for a uid is adopted, never started twice.
* A record that parses as JSON but fails the schema check is a broken record:
  listed, releasable, the other sessions unaffected.

Ports 42000-42199 (this file's block).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid

import pytest

from conftest import ROOT, Sink, run_playbook, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import (
    listening_ports, parent_pid, process_alive, process_cmdline, resolve_proxy_account, wait_until)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

SINK_PORT = 42190


def make_gateway(state_dir):
    return Gateway(str(state_dir), {"process": lambda session: ProcessRuntime("daemon")}, policy=LOOPBACK_POLICY)


def haproxy_spec(uid, port_range, target_port, backend="haproxy"):
    return SessionSpec.build(uid=uid, role="PROD", num_conn=1, listener_ip="127.0.0.1", port_range=port_range,
                             targets=["127.0.0.1:%d" % target_port], backend=backend)


def masters_of(config_path):
    """Live proxy processes whose command line names ``config_path`` and whose parent does not."""
    named = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and process_alive(int(name)) and config_path in process_cmdline(int(name)).split():
            named.add(int(name))
    return sorted(pid for pid in named if parent_pid(pid) not in named)


def children_of(pid):
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and process_alive(int(name))
            and parent_pid(int(name)) == pid]


def read_pid(gateway, uid):
    with open(os.path.join(gateway.store.run_dir(uid), "proxy", "proxy.pid"), encoding="ascii") as handle:
        return int(handle.read().split()[0])


def carries(port, sink_port=SINK_PORT, size=1024 * 1024):
    """1 MiB through ``port`` arrives intact at a sink on ``sink_port``."""
    target = Sink(port=sink_port, timeout=20)
    try:
        sent = streamcheck.send("127.0.0.1", port, size, timeout=10)
    except OSError:
        target.sock.close()  # free the sink's port for the next try
        raise
    return target.wait()["sha256"] == sent["sha256"]


@pytest.mark.parametrize("backend", ["haproxy", "nginx"])
def test_a_pid_file_naming_another_session_never_kills_it(tmp_path, backend):
    gateway = make_gateway(tmp_path / "gw")
    victim, liar = str(uuid.uuid4()), str(uuid.uuid4())
    victim_port = gateway.present(haproxy_spec(victim, "42000-42009", SINK_PORT, backend)).session["ports"][0]
    liar_port = gateway.present(haproxy_spec(liar, "42010-42019", SINK_PORT, backend)).session["ports"][0]
    victim_pid, liar_pid = read_pid(gateway, victim), read_pid(gateway, liar)

    # The liar's pid file now names the victim's proxy (a compromised proxy could write that).
    with open(os.path.join(gateway.store.run_dir(liar), "proxy", "proxy.pid"), "w", encoding="ascii") as handle:
        handle.write("%d\n" % victim_pid)
    assert gateway.present(haproxy_spec(liar, "42010-42019", SINK_PORT, backend)).changed is False  # still its own
    gateway.absent(liar)

    assert process_alive(victim_pid) and victim_port in listening_ports("tcp")
    assert carries(victim_port)
    # ... and the liar's own proxy, which its pid file no longer named, is gone.
    assert wait_until(lambda: not process_alive(liar_pid), 5)
    assert wait_until(lambda: liar_port not in listening_ports("tcp"), 5)
    gateway.absent(victim)
    assert wait_until(lambda: not process_alive(victim_pid), 5)


def test_a_reused_pid_is_not_the_proxy(tmp_path):
    """A recorded pid whose start time differs is another process, even when it names the config."""
    gateway = make_gateway(tmp_path / "gw")
    uid = str(uuid.uuid4())
    gateway.present(haproxy_spec(uid, "42020-42029", SINK_PORT))
    record = gateway.store.load(uid)
    assert record.runtime_state["pid"] == read_pid(gateway, uid) and record.runtime_state["pid_start"] > 0
    runtime = ProcessRuntime("daemon")
    backend = get_backend("haproxy")
    record.runtime_state["pid_start"] += 1  # as if the pid now belonged to a later process
    assert runtime.proxy_pid(backend, gateway.store, record, scan=False) is None
    record.runtime_state["pid_start"] -= 1
    assert runtime.proxy_pid(backend, gateway.store, record, scan=False) == read_pid(gateway, uid)
    gateway.absent(uid)


@pytest.mark.parametrize("backend", ["haproxy", "stunnel"])
def test_a_running_proxy_is_adopted_not_started_twice(tmp_path, backend):
    gateway = make_gateway(tmp_path / "gw")
    uid = str(uuid.uuid4())

    def spec(target_port):
        if backend == "haproxy":
            return haproxy_spec(uid, "42030-42039", target_port)
        return SessionSpec.build(uid=uid, role="CONS", num_conn=1, listener_ip="127.0.0.1", port_range="42030-42039",
                                 targets=["127.0.0.1:%d" % target_port], backend="stunnel", psk="f" * 32)
    port = gateway.present(spec(42191)).session["ports"][0]
    config = os.path.join(gateway.store.run_dir(uid), get_backend(backend).config_name)
    first = masters_of(config)
    assert len(first) == 1

    old_workers = children_of(first[0])
    # The run dir vanishes under the running session (pid file, config, log: all gone).
    shutil.rmtree(gateway.store.run_dir(uid))
    outcome = gateway.present(spec(SINK_PORT))
    assert outcome.changed
    masters = masters_of(config)
    assert len(masters) == 1, "started twice: %s" % masters
    if backend == "haproxy":
        assert masters == first  # adopted and reloaded, not replaced
        # A reload hands the listeners to a new worker in the background.
        assert wait_until(lambda: not any(process_alive(pid) for pid in old_workers), 10)
        assert carries(port)
    assert gateway.present(spec(SINK_PORT)).changed is False

    gateway.absent(uid)
    assert wait_until(lambda: not masters_of(config), 5)
    assert wait_until(lambda: port not in listening_ports("tcp"), 5)


BAD_RECORDS = {
    "evil-backend": {"backend": "evil"},
    "ports-not-ints": {"ports": ["42050"]},
    "bool-port": {"ports": [True]},
    "unknown-runtime": {"runtime": "bogus"},
    "wrong-uid": {"uid": "00000000-0000-4000-8000-000000000000"},
    "injected-target": {"targets": ["127.0.0.1:42190\n    program evil"]},
    "bad-listener": {"listener_ip": "127.0.0.1\nlisten 0.0.0.0:1"},
    "bad-role": {"role": "ROOT"},
    "runtime-state-not-dict": {"runtime_state": ["x"]},
}


def test_records_failing_the_schema_are_broken_records(tmp_path):
    state_dir = tmp_path / "gw"
    gateway = make_gateway(state_dir)
    good = str(uuid.uuid4())
    good_port = gateway.present(haproxy_spec(good, "42040-42049", SINK_PORT)).session["ports"][0]
    with open(gateway.store.record_path(good), encoding="utf-8") as handle:
        template = json.load(handle)
    bad = {}
    for reason, change in BAD_RECORDS.items():
        uid = str(uuid.uuid4())
        bad[uid] = reason
        record = dict(template, uid=uid, ports=[42050])
        record.update(change)
        with open(gateway.store.record_path(uid), "w", encoding="utf-8") as handle:
            json.dump(record, handle)

    # s2ds_info lists every broken record, the good session healthy beside them.
    rc, info = run_playbook(os.path.join(ROOT, "tests", "integration", "playbooks", "sessions.yml"),
                            {"state_dir": str(state_dir)})
    assert rc == 0, info.failures()
    sessions = {s["uid"]: s for s in info.result("Info")["sessions"]}
    assert sessions[good]["healthy"] and not sessions[good].get("broken")
    assert {uid for uid, s in sessions.items() if s.get("broken")} == set(bad), bad
    for uid in bad:
        assert "\n" not in sessions[uid]["error"]

    for uid, reason in bad.items():
        outcome = gateway.absent(uid)
        assert outcome.changed and outcome.session["broken"], reason
        assert not os.path.exists(gateway.store.record_path(uid))
    assert [r.uid for r in gateway.store.all()] == [good]
    assert carries(good_port)
    gateway.absent(good)


def test_release_of_a_broken_record_stops_its_proxy_only(tmp_path):
    gateway = make_gateway(tmp_path / "gw")
    broken, other = str(uuid.uuid4()), str(uuid.uuid4())
    broken_port = gateway.present(haproxy_spec(broken, "42060-42069", SINK_PORT)).session["ports"][0]
    other_port = gateway.present(haproxy_spec(other, "42070-42079", SINK_PORT)).session["ports"][0]
    other_pid = read_pid(gateway, other)
    with open(os.path.join(gateway.store.run_dir(broken), "proxy", "proxy.pid"), "w", encoding="ascii") as handle:
        handle.write("%d\n" % other_pid)  # and its pid file lies too
    with open(gateway.store.record_path(broken), "w", encoding="utf-8") as handle:
        json.dump({"uid": broken, "backend": "evil"}, handle)
    outcome = gateway.absent(broken)
    assert outcome.session["broken"] and any("haproxy" in w for w in outcome.warnings[1:]), outcome.warnings
    assert wait_until(lambda: broken_port not in listening_ports("tcp"), 5)
    assert process_alive(other_pid) and other_port in listening_ports("tcp")
    gateway.absent(other)


# -- least privilege ----------------------------------------------------------------
# The proxies drop to an unprivileged account. On this shared host the tests use an
# account of their own (faults-proxy), never the scistream user the role creates:
# ``proxy_user: auto`` would otherwise switch every other test's proxies too.
PROXY_USER = "faults-proxy"


@pytest.fixture(scope="module")
def proxy_account():
    import pwd  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    created = False
    try:
        pwd.getpwnam(PROXY_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", PROXY_USER], check=True)
        created = True
    yield resolve_proxy_account(PROXY_USER)
    if created:
        subprocess.run(["userdel", PROXY_USER], check=False)


@pytest.fixture
def open_state_dir():
    """A state dir the proxy account can reach (pytest's tmp_path is 0700 root)."""
    path = "/tmp/faults-priv-%s" % uuid.uuid4().hex[:8]
    yield path
    # A test that failed half-way leaves sessions in its gateways' state dirs (prod/, cons/): release them.
    for state_dir in (os.path.join(path, name) for name in ("prod", "cons")):
        gateway = Gateway(state_dir, {"process": lambda session: ProcessRuntime("daemon", "root"),
                                      "docker": lambda session: DockerRuntime(proxy_user="root")}, policy=LOOPBACK_POLICY)
        for record in gateway.store.all():
            gateway.absent(record.uid)
    shutil.rmtree(path, ignore_errors=True)


def status_of(pid):
    with open("/proc/%d/status" % pid, encoding="ascii") as handle:
        return dict(line.split(":", 1) for line in handle.read().splitlines() if ":" in line)


def mode_owner(path):
    info = os.lstat(path)
    return oct(info.st_mode & 0o777), info.st_uid, info.st_gid


@pytest.mark.parametrize("backend", ["haproxy", "nginx", "stunnel"])
def test_proxies_run_as_the_proxy_user_with_no_capability(open_state_dir, proxy_account, backend):
    account = proxy_account
    runtimes = {"process": lambda session: ProcessRuntime("daemon", PROXY_USER)}
    prod_gw = Gateway(open_state_dir + "/prod", runtimes, policy=LOOPBACK_POLICY)
    cons_gw = Gateway(open_state_dir + "/cons", runtimes, policy=LOOPBACK_POLICY)
    uid = str(uuid.uuid4())
    common = dict(uid=uid, num_conn=2, listener_ip="127.0.0.1", backend=backend, psk="p" * 32 if backend == "stunnel" else None)
    prod = prod_gw.present(SessionSpec.build(role="PROD", port_range="42200-42209",
                                             targets=["127.0.0.1:%d" % SINK_PORT], **common)).session
    cons = cons_gw.present(SessionSpec.build(role="CONS", port_range="42210-42219", targets=prod["listeners"],
                                             **common)).session
    for gateway, session in ((prod_gw, prod), (cons_gw, cons)):
        run_dir = gateway.store.run_dir(uid)
        master = read_pid(gateway, uid)
        for pid in [master] + children_of(master):
            status = status_of(pid)
            assert status["Uid"].split()[:2] == [str(account.uid)] * 2, (backend, pid)
            assert status["Gid"].split()[:2] == [str(account.gid)] * 2
            assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapBnd"], 16) == 0
            assert status["NoNewPrivs"].strip() == "1"
        assert mode_owner(run_dir) == ("0o750", 0, account.gid)
        assert mode_owner(os.path.join(run_dir, "proxy")) == ("0o700", account.uid, account.gid)
        assert mode_owner(gateway.store.sessions_dir) == ("0o700", 0, 0)
        for name in os.listdir(run_dir):
            if name == "counting.json":  # the boot restore's, root's alone
                assert mode_owner(os.path.join(run_dir, name)) == ("0o600", 0, 0)
            elif name != "proxy":
                assert mode_owner(os.path.join(run_dir, name)) == ("0o640", 0, account.gid), name
    assert carries(cons["ports"][0])

    # A change is applied (reload or restart) and still readable by the proxy; a second run changes nothing.
    old_workers = children_of(read_pid(prod_gw, uid))
    changed = prod_gw.present(SessionSpec.build(role="PROD", port_range="42200-42209",
                                                targets=["127.0.0.1:%d" % (SINK_PORT + 1)], **common))
    assert changed.actions[-1] in ("reload", "restart")
    assert wait_until(lambda: not any(process_alive(pid) for pid in old_workers), 10)
    assert prod_gw.present(SessionSpec.build(role="PROD", port_range="42200-42209",
                                             targets=["127.0.0.1:%d" % (SINK_PORT + 1)], **common)).changed is False
    assert wait_until(lambda: carries_safely(cons["ports"][1], SINK_PORT + 1), 10, 0.5)
    for gateway in (prod_gw, cons_gw):
        gateway.absent(uid)
    assert wait_until(lambda: not set(prod["ports"] + cons["ports"]) & listening_ports("tcp"), 5)


def carries_safely(port, sink_port):
    try:
        return carries(port, sink_port)
    except OSError:
        return False


def test_a_proxy_user_that_cannot_reach_the_state_dir_is_a_clear_error(tmp_path, proxy_account):
    gateway = Gateway(str(tmp_path / "gw"), {"process": lambda session: ProcessRuntime("daemon", PROXY_USER)}, policy=LOOPBACK_POLICY)
    with pytest.raises(S2DSError) as caught:
        gateway.present(haproxy_spec(str(uuid.uuid4()), "42220-42229", SINK_PORT))
    assert caught.value.field == "state_dir" and PROXY_USER in str(caught.value)
    assert gateway.store.all() == []
    with pytest.raises(S2DSError) as unknown:
        ProcessRuntime("daemon", "no-such-user-faults")
    assert unknown.value.field == "proxy_user" and "'no-such-user-faults'" in str(unknown.value)


@pytest.mark.docker
@pytest.mark.parametrize("backend", ["haproxy", "nginx", "stunnel"])
def test_docker_proxies_run_as_the_proxy_user(open_state_dir, proxy_account, backend):
    from conftest import docker_client  # pylint: disable=import-outside-toplevel
    runtimes = {"docker": lambda session: DockerRuntime(image="scistream/%s:local" % backend, proxy_user=PROXY_USER)}
    prod_gw = Gateway(open_state_dir + "/prod", runtimes, policy=LOOPBACK_POLICY)
    cons_gw = Gateway(open_state_dir + "/cons", runtimes, policy=LOOPBACK_POLICY)
    uid = str(uuid.uuid4())
    common = dict(uid=uid, num_conn=1, listener_ip="127.0.0.1", backend=backend, runtime="docker",
                  psk="d" * 32 if backend == "stunnel" else None)
    prod = prod_gw.present(SessionSpec.build(role="PROD", port_range="42230-42239",
                                             targets=["127.0.0.1:%d" % SINK_PORT], **common)).session
    cons = cons_gw.present(SessionSpec.build(role="CONS", port_range="42240-42249", targets=prod["listeners"],
                                             **common)).session
    for role in ("prod", "cons"):
        container = docker_client().containers.get("scistream-%s-%s-%s" % (backend, role, uid))
        assert container.attrs["Config"]["User"] == "%d:%d" % (proxy_account.uid, proxy_account.gid)
        assert container.attrs["HostConfig"]["CapAdd"] in (None, [])
        assert status_of(container.attrs["State"]["Pid"])["Uid"].split()[0] == str(proxy_account.uid)
    assert wait_until(lambda: carries_safely(cons["ports"][0], SINK_PORT), 10, 0.5)
    for gateway in (prod_gw, cons_gw):
        gateway.absent(uid)
