# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Backend nftables end to end, on four network namespaces (consumer, gateway B, gateway A, producer).

The s2ds module runs inside each gateway's namespace under the
distribution's Python (where python3-nftables lives). Real rules, real
bytes: >= 200 MB consumer -> B -> A -> producer with the same SHA-256, UDP
datagrams too; no path without the session; an unchanged re-run changes
nothing; rules flushed by hand come back; release removes exactly the
session's rules. With a forward chain that drops by default (Docker's),
the module warns and the README's DOCKER-USER rule lets the stream through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from conftest import ROOT, files_under, run_playbook
import netns

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "nftables.yml")
CASES = os.path.join(ROOT, "tests", "integration", "playbooks", "nftables_cases.yml")
STREAMCHECK = os.path.join(ROOT, "playbooks", "files", "streamcheck.py")
PAYLOAD = "200M"
SINK_PORT = 32500

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))


@pytest.fixture(scope="module")
def topology():
    topo = netns.Topology("t", net=1)
    try:
        yield topo.create()
    finally:
        topo.destroy()


@pytest.fixture
def gateways(topology, tmp_path):
    """An inventory of gateways A and B, each run in its namespace, and the playbook's variables."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "gw-a ansible_connection=local ansible_python_interpreter=%s state_dir=%s wan_address=%s\n"
        "gw-b ansible_connection=local ansible_python_interpreter=%s state_dir=%s lan_address=%s\n" % (
            topology.interpreter("a", str(tmp_path)), tmp_path / "gateway-a", topology.a_wan,
            topology.interpreter("b", str(tmp_path)), tmp_path / "gateway-b", topology.b_lan))
    yield str(inventory)
    # Safety net for a failed test: release whatever is left (the test itself checks release).
    run_playbook(PLAYBOOK, {"uids": [], "session_state": "absent", "producer_targets": []}, inventory=str(inventory))
    for role in ("a", "b"):
        topology.sh(role, "nft", "flush", "ruleset", check=False)


def sink(topology, udp=False):
    argv = [sys.executable, STREAMCHECK, "sink", "--listen", "%s:%d" % (topology.producer, SINK_PORT), "--timeout", "90"]
    proc = topology.popen("p", *(argv + (["--udp"] if udp else [])), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    assert proc.stderr.readline().strip() == "listening"  # bound before anything is sent
    return proc


def send(topology, listener, size, udp=False, timeout=60):
    argv = [sys.executable, STREAMCHECK, "send", "--to", listener, "--bytes", size, "--timeout", str(timeout)]
    proc = topology.sh("c", *(argv + (["--udp"] if udp else [])), check=False, timeout=timeout + 30)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def received(proc):
    out, err = proc.communicate(timeout=120)
    err = "listening\n" + err
    assert proc.returncode == 0, err
    return json.loads(out)


def ruleset(topology, role):
    out = topology.sh(role, "nft", "-j", "list", "ruleset").stdout
    return [e for e in json.loads(out)["nftables"] if "metainfo" not in e]


def chains_of(entries, uid):
    return sorted(e["chain"]["name"] for e in entries if "chain" in e and e["chain"]["name"].endswith(uid))


def test_two_gateways_forward_in_the_kernel(topology, gateways, tmp_path):
    uid, other = str(uuid.uuid4()), str(uuid.uuid4())
    producer = ["%s:%d" % (topology.producer, SINK_PORT)]
    base = {"uids": [uid], "producer_targets": producer}

    # No path from the consumer to the producer without a session.
    tcp_sink = sink(topology)
    assert send(topology, "%s:%d" % (topology.producer, SINK_PORT), "1K", timeout=3) is None

    rc, run = run_playbook(PLAYBOOK, base, inventory=gateways)
    assert rc == 0, run.failures()
    prod = run.result("PROD session", "gw-a")["results"][0]
    cons = run.result("CONS session", "gw-b")["results"][0]
    assert prod["changed"] and cons["changed"] and prod["runtime"] == cons["runtime"] == "kernel"
    assert cons["targets"] == prod["listeners"] and len(cons["listeners"]) == 2
    assert all(s["healthy"] for h in ("gw-a", "gw-b") for s in run.result("Sessions", h)["sessions"])

    # >= 200 MB through both gateways, TCP; then UDP datagrams through the same listener.
    sent = send(topology, cons["listeners"][0], PAYLOAD)
    assert sent, topology.sh("b", "nft", "list", "ruleset").stdout + topology.sh("b", "ip", "a").stdout
    got = received(tcp_sink)
    assert sent and got["bytes"] == sent["bytes"] == 200 * 1024 * 1024 and got["sha256"] == sent["sha256"]
    udp_sink = sink(topology, udp=True)
    sent_udp = send(topology, cons["listeners"][0], "512K", udp=True)
    got_udp = received(udp_sink)
    assert got_udp["sha256"] == sent_udp["sha256"] and got_udp["datagrams"] == 512

    # An unchanged re-run changes nothing; the counters saw the stream.
    rc, again = run_playbook(PLAYBOOK, base, inventory=gateways)
    assert rc == 0 and again.changed == 0, again.failures()
    traffic = again.result("Sessions", "gw-b")["sessions"][0]["traffic"]
    assert traffic[0]["listener"] == cons["listeners"][0] and traffic[0]["bytes"] > 200 * 1024 * 1024
    assert traffic[1]["bytes"] == 0

    # Rules flushed by hand: unhealthy, then back after the next run, and carrying data.
    topology.sh("a", "nft", "flush", "ruleset")
    rc, healed = run_playbook(PLAYBOOK, base, inventory=gateways)
    assert rc == 0 and healed.changed == 1, healed.failures()
    assert healed.result("PROD session", "gw-a")["results"][0]["actions"] == ["start"]
    tcp_sink = sink(topology)
    sent = send(topology, cons["listeners"][0], "8M")
    assert received(tcp_sink)["sha256"] == sent["sha256"]

    # A second session and a rule of someone else on gateway A survive the release of the first.
    rc, run = run_playbook(PLAYBOOK, dict(base, uids=[uid, other], num_conn=1), inventory=gateways)
    assert rc == 0, run.failures()
    topology.sh("a", "nft", "add table inet ssnft-other; add chain inet ssnft-other input "
                "{ type filter hook input priority 0; }; add rule inet ssnft-other input tcp dport 32999 counter")
    before = ruleset(topology, "a")
    rc, released = run_playbook(PLAYBOOK, dict(base, session_state="absent"), inventory=gateways)
    assert rc == 0 and released.changed == 2, released.failures()
    after = ruleset(topology, "a")
    assert chains_of(after, uid) == [] and chains_of(after, other) == chains_of(before, other) != []
    gone = [e for e in before if e not in after]
    assert gone and all(uid in json.dumps(e) for e in gone), gone
    assert any(e.get("rule", {}).get("table") == "ssnft-other" for e in after)
    # ... and the released listener no longer leads anywhere.
    assert send(topology, cons["listeners"][0], "1K", timeout=3) is None

    rc, released = run_playbook(PLAYBOOK, dict(base, uids=[other], session_state="absent"), inventory=gateways)
    assert rc == 0 and released.changed == 2, released.failures()
    assert chains_of(ruleset(topology, "a"), other) == []
    topology.sh("a", "nft", "delete table inet ssnft-other")
    assert files_under(str(tmp_path / "gateway-a")) == files_under(str(tmp_path / "gateway-b")) == []


def test_a_forward_chain_that_drops_is_named_and_the_readmes_rule_lets_the_stream_through(topology, gateways, tmp_path):
    """Both gateways filter forwarded packets as Docker does (iptables: FORWARD policy DROP, DOCKER-USER jumped to
    first): the run that puts a session in place warns, naming the chain; the stream is dropped there until the
    README's DOCKER-USER rule accepts each listener's DNAT'd connections; an unchanged run says nothing again."""
    for role in ("a", "b"):
        topology.sh(role, "iptables", "-P", "FORWARD", "DROP")
        topology.sh(role, "iptables", "-N", "DOCKER-USER")
        topology.sh(role, "iptables", "-A", "FORWARD", "-j", "DOCKER-USER")
    uid = str(uuid.uuid4())
    base = {"uids": [uid], "producer_targets": ["%s:%d" % (topology.producer, SINK_PORT)]}
    rc, run = run_playbook(PLAYBOOK, base, inventory=gateways)
    assert rc == 0, run.failures()
    prod = run.result("PROD session", "gw-a")["results"][0]
    cons = run.result("CONS session", "gw-b")["results"][0]
    for task, host in (("PROD session", "gw-a"), ("CONS session", "gw-b")):  # a loop's warnings are the task's
        warnings = run.result(task, host).get("warnings", [])
        assert [w for w in warnings if "'ip filter FORWARD'" in w and uid in w], warnings

    tcp_sink = sink(topology)
    assert send(topology, cons["listeners"][0], "1K", timeout=3) is None  # dropped by the chain named
    for role, result in (("a", prod), ("b", cons)):
        for listener in result["listeners"]:
            topology.sh(role, "iptables", "-I", "DOCKER-USER", "-m", "conntrack", "--ctstate", "DNAT",
                        "--ctorigdstport", listener.rpartition(":")[2], "-j", "ACCEPT")
    sent = send(topology, cons["listeners"][0], "8M")
    assert sent and received(tcp_sink)["sha256"] == sent["sha256"]

    rc, again = run_playbook(PLAYBOOK, base, inventory=gateways)
    assert rc == 0 and again.changed == 0, again.failures()
    assert not again.result("PROD session", "gw-a").get("warnings")
    rc, released = run_playbook(PLAYBOOK, dict(base, session_state="absent"), inventory=gateways)
    assert rc == 0 and released.changed == 2, released.failures()
    assert files_under(str(tmp_path / "gateway-a")) == files_under(str(tmp_path / "gateway-b")) == []


def test_bad_input_for_nftables_fails_clearly_and_leaves_nothing(tmp_path):
    state_dir = str(tmp_path / "gw")
    uid = str(uuid.uuid4())
    template = tmp_path / "t.j2"
    template.write_text("x")
    cases = [
        dict(label="docker", uid=uid, runtime="docker"),
        dict(label="janus", uid=uid, runtime="janus"),
        dict(label="psk", uid=uid, psk="a-secret-key-0123456789"),
        dict(label="template", uid=uid, template=str(template)),
        dict(label="host name", uid=uid, targets=["producer.example.org:5000"]),
        dict(label="families", uid=uid, targets=["[2001:db8::1]:5000"]),
    ]
    rc, run = run_playbook(CASES, {"cases": cases, "state_dir": state_dir})
    assert rc == 0
    out = run.result("Each case")["results"]
    assert all(r["failed"] for r in out), [r.get("msg") for r in out]
    expected = [("runtime", "docker"), ("runtime", "janus"), ("psk", "(hidden)"), ("template", str(template)),
                ("targets", "producer.example.org:5000"), ("targets", "[2001:db8::1]:5000")]
    for result, (field, value) in zip(out, expected):
        assert result.get("field") == field and value in result["msg"], result["msg"]
    # The loop item holds the key (the test's own variable); the module's answer never does.
    assert "a-secret-key" not in json.dumps([{k: v for k, v in r.items() if k != "item"} for r in out])
    assert files_under(state_dir) == []
