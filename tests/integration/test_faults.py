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
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import (listening_ports,
                                                                                          parent_pid,
                                                                                          process_alive,
                                                                                          process_cmdline,
                                                                                          wait_until)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec

SINK_PORT = 42190


def make_gateway(state_dir):
    return Gateway(str(state_dir), {"process": lambda session: ProcessRuntime("daemon")})


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
    with open(os.path.join(gateway.store.run_dir(uid), "proxy.pid"), encoding="ascii") as handle:
        return int(handle.read().split()[0])


def carries(port, sink_port=SINK_PORT, size=1024 * 1024):
    target = Sink(port=sink_port, timeout=20)
    sent = streamcheck.send("127.0.0.1", port, size, timeout=10)
    return target.wait()["sha256"] == sent["sha256"]


@pytest.mark.parametrize("backend", ["haproxy", "nginx"])
def test_a_pid_file_naming_another_session_never_kills_it(tmp_path, backend):
    gateway = make_gateway(tmp_path / "gw")
    victim, liar = str(uuid.uuid4()), str(uuid.uuid4())
    victim_port = gateway.present(haproxy_spec(victim, "42000-42009", SINK_PORT, backend)).session["ports"][0]
    liar_port = gateway.present(haproxy_spec(liar, "42010-42019", SINK_PORT, backend)).session["ports"][0]
    victim_pid, liar_pid = read_pid(gateway, victim), read_pid(gateway, liar)

    # The liar's pid file now names the victim's proxy (a compromised proxy could write that).
    with open(os.path.join(gateway.store.run_dir(liar), "proxy.pid"), "w", encoding="ascii") as handle:
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
    with open(os.path.join(gateway.store.run_dir(broken), "proxy.pid"), "w", encoding="ascii") as handle:
        handle.write("%d\n" % other_pid)  # and its pid file lies too
    with open(gateway.store.record_path(broken), "w", encoding="utf-8") as handle:
        json.dump({"uid": broken, "backend": "evil"}, handle)
    outcome = gateway.absent(broken)
    assert outcome.session["broken"] and any("haproxy" in w for w in outcome.warnings[1:]), outcome.warnings
    assert wait_until(lambda: broken_port not in listening_ports("tcp"), 5)
    assert process_alive(other_pid) and other_port in listening_ports("tcp")
    gateway.absent(other)
