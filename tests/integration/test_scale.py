# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A facility's load: 100 streams declared in inventory across two gateways, through the
stream and release playbooks (one s2ds_sessions call per gateway and side).

Both gateways are this host (two inventory hosts, two state dirs), process
runtime, HAProxy, one listener per stream. Bytes go through the first and
the last stream; a re-run changes nothing; release leaves nothing behind.
"""

from __future__ import annotations

import os
import uuid

import yaml

from conftest import ROOT, Sink, files_under, run_playbook, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import listening_ports, wait_until

# By their collection names, as the README runs them (the Molecule scenarios import them by path).
STREAM = "scistream.gateway.stream"
RELEASE = "scistream.gateway.release"
COUNT = 100
# Ports of this test: 33000-33399 (the producer host's sink on 33900).
PROD_RANGE, CONS_RANGE, SINK_PORT = "33000-33199", "33200-33399", 33900


def facility_inventory(tmp_path, count):
    """Two gateways on this host, ``count`` streams from gw-a to gw-b."""
    streams = [{"name": "detector-%03d" % i, "uid": str(uuid.UUID(int=0x5ca1e << 96 | i)),
                "producer_gateway": "gw-a", "consumer_gateway": "gw-b",
                "producer_targets": ["127.0.0.1:%d" % SINK_PORT], "num_conn": 1} for i in range(count)]
    common = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
              "ansible_become": False, "scistream_listener_ip": "127.0.0.1"}
    inventory = {"scistream_gateways": {
        "hosts": {
            "gw-a": dict(common, scistream_gateway_state_dir=str(tmp_path / "gw-a"),
                         scistream_gateway_port_range=PROD_RANGE, scistream_wan_address="127.0.0.1"),
            "gw-b": dict(common, scistream_gateway_state_dir=str(tmp_path / "gw-b"),
                         scistream_gateway_port_range=CONS_RANGE, scistream_lan_address="127.0.0.1"),
        },
        "vars": {"scistream_gateway_runtime": "process", "scistream_streams": streams},
    }}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump({"all": {"children": inventory}}))
    return str(path), streams


def push_through(port, size=4 * 1024 * 1024):
    sink = Sink(port=SINK_PORT, timeout=30)
    sent = streamcheck.send("127.0.0.1", port, size, timeout=30)
    return sent, sink.wait()


def test_hundred_streams_two_gateways(tmp_path):
    inventory, streams = facility_inventory(tmp_path, COUNT)

    rc, first = run_playbook(STREAM, inventory=inventory, timeout=600)
    assert rc == 0, (first.failures(), first.stderr[-2000:])
    prod = first.result("PROD sessions of this gateway's streams", "gw-a")["sessions"]
    cons = first.result("CONS sessions forwarding to the producer gateways' listeners", "gw-b")["sessions"]
    assert [s["uid"] for s in prod] == [s["uid"] for s in cons] == [s["uid"] for s in streams]
    # "count" follows where the host counts the session's bytes (nftables present).
    assert all(s["actions"] in (["reserve", "write_config", "start"], ["reserve", "write_config", "start", "count"])
               for s in prod + cons), [s["actions"] for s in prod + cons][:3]
    assert len({s["ports"][0] for s in prod}) == COUNT and len({s["ports"][0] for s in cons}) == COUNT
    # Each CONS session forwards to its own stream's PROD listener.
    assert [c["targets"] for c in cons] == [["127.0.0.1:%d" % p["ports"][0]] for p in prod]
    assert set(s["ports"][0] for s in prod + cons) <= listening_ports("tcp")

    for session in (cons[0], cons[-1]):
        sent, got = push_through(session["ports"][0])
        assert sent["sha256"] == got["sha256"] and sent["bytes"] == got["bytes"]

    rc, again = run_playbook(STREAM, inventory=inventory, timeout=600)
    assert rc == 0 and again.changed == 0, again.failures()

    rc, check = run_playbook(RELEASE, inventory=inventory, check=True, timeout=600)
    assert rc == 0 and set(s["ports"][0] for s in prod) <= listening_ports("tcp")

    rc, released = run_playbook(RELEASE, inventory=inventory, timeout=600)
    assert rc == 0, released.failures()
    assert released.changed == 2  # one task per gateway
    assert not set(s["ports"][0] for s in prod + cons) & listening_ports("tcp")
    assert files_under(str(tmp_path / "gw-a")) == [] and files_under(str(tmp_path / "gw-b")) == []

    rc, twice = run_playbook(RELEASE, inventory=inventory, timeout=600)
    assert rc == 0 and twice.changed == 0


SESSIONS = os.path.join(ROOT, "tests", "integration", "playbooks", "sessions.yml")


def test_broken_record_real_proxies(tmp_path, sink):
    """A truncated record: named in errors, listed as broken, the others keep working, release frees its proxy."""
    state_dir = str(tmp_path / "gw")
    broken, good = str(uuid.uuid4()), str(uuid.uuid4())
    target = sink(port=33901)
    items = [{"uid": u, "role": "PROD", "num_conn": 1, "listener_ip": "127.0.0.1", "port_range": "33400-33499",
              "targets": ["127.0.0.1:33901"]} for u in (broken, good)]
    rc, first = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": items})
    assert rc == 0, first.failures()
    ports = {s["uid"]: s["ports"][0] for s in first.result("Sessions")["sessions"]}
    record = os.path.join(state_dir, "sessions", broken + ".json")
    with open(record, "r+", encoding="utf-8") as handle:
        handle.truncate(20)

    rc, info = run_playbook(SESSIONS, {"state_dir": state_dir})
    listed = {s["uid"]: s for s in info.result("Info")["sessions"]}
    assert rc == 0 and listed[good]["healthy"] and listed[broken]["broken"] and not listed[broken]["healthy"]
    assert record in listed[broken]["error"]

    # The good one still carries bytes and takes changes in the same call that reports the broken one.
    changed = [dict(items[0]), dict(items[1], num_conn=2)]
    rc, mixed = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": changed})
    results = mixed.result("Sessions")["sessions"]
    assert rc != 0 and results[0]["failed"] and record in results[0]["msg"]
    assert not results[1]["failed"] and results[1]["changed"]
    sent = streamcheck.send("127.0.0.1", ports[good], 1024 * 1024, timeout=30)
    assert target.wait()["sha256"] == sent["sha256"]

    # Release: the broken session's proxy (found from its run dir) stops and its port is free.
    assert ports[broken] in listening_ports("tcp")
    rc, released = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": [{"uid": broken, "state": "absent"}]})
    assert rc == 0 and released.result("Sessions")["sessions"][0]["changed"], released.failures()
    assert ports[broken] not in listening_ports("tcp")
    assert not os.path.exists(os.path.join(state_dir, "run", broken)) and not os.path.exists(record)
    rc, after = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": [dict(items[1], num_conn=2)]})
    assert rc == 0 and after.changed == 0 and [s["uid"] for s in after.result("Info")["sessions"]] == [good]


def test_bad_config_for_a_new_session_fails_at_start_and_leaves_nothing(tmp_path):
    """A new session skips the separate config check where starting checks it (daemon): a bad
    config still fails with the proxy's message and leaves nothing; an update is checked first."""
    state_dir = str(tmp_path / "gw")
    bad = tmp_path / "bad.cfg.j2"
    bad.write_text("global\n    no-such-keyword {{ uid }}\n")
    uid = str(uuid.uuid4())
    item = {"uid": uid, "role": "PROD", "num_conn": 1, "listener_ip": "127.0.0.1", "port_range": "33950-33959",
            "targets": ["127.0.0.1:33960"]}
    rc, new = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": [dict(item, template=str(bad))]})
    assert rc != 0 and "no-such-keyword" in new.result("Sessions")["sessions"][0]["msg"]
    assert files_under(state_dir) == [] and 33950 not in listening_ports("tcp")

    rc, good = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": [item]})
    assert rc == 0 and 33950 in listening_ports("tcp")
    rc, update = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": [dict(item, template=str(bad))]})
    result = update.result("Sessions")["sessions"][0]
    assert rc != 0 and "rejected the rendered config" in result["msg"] and result.get("field") == "template"
    assert 33950 in listening_ports("tcp")
    rc, dummy = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": [dict(item, state="absent")]})
    assert rc == 0 and files_under(state_dir) == []


def test_daemon_sessions_after_a_reboot_are_reported_not_running(tmp_path):
    """Without systemd nothing restarts a proxy after a reboot: s2ds_info says so, the next present run restarts it."""
    import signal  # pylint: disable=import-outside-toplevel
    state_dir = str(tmp_path / "gw")
    item = {"uid": str(uuid.uuid4()), "role": "PROD", "num_conn": 1, "listener_ip": "127.0.0.1",
            "port_range": "33970-33979", "targets": ["127.0.0.1:33980"]}
    rc, first = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": [item]})
    assert rc == 0 and first.result("Info")["sessions"][0]["running"]
    with open(os.path.join(state_dir, "run", item["uid"], "proxy", "proxy.pid"), encoding="ascii") as handle:
        master = int(handle.read().split()[0])
    os.killpg(master, signal.SIGKILL)  # what a reboot does to a daemon and its workers
    assert wait_until(lambda: 33970 not in listening_ports("tcp"), 10)

    rc, after = run_playbook(SESSIONS, {"state_dir": state_dir})
    info = after.result("Info")["sessions"][0]
    assert rc == 0 and info["running"] is False and info["healthy"] is False
    rc, again = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": [item]})
    assert rc == 0 and again.result("Sessions")["sessions"][0]["actions"] == ["start"]
    assert again.result("Info")["sessions"][0]["healthy"]
    rc, planned = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": [dict(item, num_conn=2)]}, check=True, diff=True)
    result = planned.result("Sessions")
    assert rc == 0 and result["changed"] and "127.0.0.1:33971" in result["diff"][0]["after"]
    assert 33971 not in listening_ports("tcp")
    rc, dummy = run_playbook(SESSIONS, {"state_dir": state_dir, "sessions": [dict(item, state="absent")]})
    assert rc == 0
