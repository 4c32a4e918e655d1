# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The verify playbook on this host: two gateways (state dirs), producer and consumer all local.

It reports, per stream, the bytes each gateway's listener counted during the
transfer next to what the sink received. 20 MB (not heavy); ports 43140-43149 and 43160-43169, sink 43191.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from conftest import ROOT, run_playbook, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import counting
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.registry import make_gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

CHAIN = os.path.join(ROOT, "tests", "integration", "playbooks", "chain.yml")
VERIFY = os.path.join(ROOT, "playbooks", "verify.yml")
SYSTEM_PYTHON = "/usr/bin/python3"
PAYLOAD = 20 * 1024 * 1024


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs the distribution's Python (nftables binding)")
def test_verify_reports_counted_bytes(tmp_path):
    uid = str(uuid.uuid4())
    state = {"a": str(tmp_path / "gateway-a"), "b": str(tmp_path / "gateway-b")}
    chain = {"uid": uid, "backend": "haproxy", "runtime": "process", "num_conn": 1,
             "producer_targets": ["127.0.0.1:43191"], "prod_port_range": "43140-43144",
             "cons_port_range": "43145-43149", "prod_state_dir": state["a"], "cons_state_dir": state["b"],
             "ansible_python_interpreter": SYSTEM_PYTHON}
    local = "ansible_connection=local ansible_python_interpreter=%s ansible_become_method=su" % SYSTEM_PYTHON
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[scistream_gateways]\ngw-a %s scistream_gateway_state_dir=%s\n"
        "gw-b %s scistream_gateway_state_dir=%s scistream_lan_address=127.0.0.1\n"
        "[scistream_producers]\nproducer %s\n[scistream_consumers]\nconsumer %s\n" % (
            local, state["a"], local, state["b"], local, local))
    streams = [{"name": "verify-haproxy", "uid": uid, "producer_gateway": "gw-a", "consumer_gateway": "gw-b",
                "producer_targets": ["127.0.0.1:43191"], "producer_host": "producer", "consumer_host": "consumer"}]
    rc, run = run_playbook(CHAIN, chain)
    assert rc == 0, run.failures()
    try:
        rc, run = run_playbook(VERIFY, {"scistream_streams": streams, "scistream_verify_bytes": "20M"},
                               inventory=str(inventory))
        assert rc == 0, run.failures()
        table = run.result("Show the table", "localhost")["msg"]
        assert table[0].endswith("| CONS counted | PROD counted")
        cells = [cell.strip() for cell in table[1].split("|")]
        assert cells[0] == "verify-haproxy" and cells[1] == cells[2] == str(PAYLOAD) and cells[3] == "yes"
        for counted in (int(cells[5]), int(cells[6])):
            assert PAYLOAD <= counted <= PAYLOAD * 1.05, table
    finally:
        rc, run = run_playbook(CHAIN, dict(chain, session_state="absent"))
        assert rc == 0, run.failures()


RESTORE = os.path.join(ROOT, "roles", "gateway", "files", "scistream-nft-restore.py")
INFO = os.path.join(ROOT, "tests", "integration", "playbooks", "metrics_info.yml")


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs the distribution's Python (nftables binding)")
def test_boot_restore_puts_the_counters_back(tmp_path):
    """The counting table lost (a reboot, `nft flush ruleset`): the boot-time restore's counting part brings it back."""
    uid = str(uuid.uuid4())
    state = {"a": str(tmp_path / "gateway-a"), "b": str(tmp_path / "gateway-b")}
    chain = {"uid": uid, "backend": "nginx", "runtime": "process", "num_conn": 1,
             "producer_targets": ["127.0.0.1:43191"], "prod_port_range": "43140-43144",
             "cons_port_range": "43145-43149", "prod_state_dir": state["a"], "cons_state_dir": state["b"],
             "ansible_python_interpreter": SYSTEM_PYTHON}
    info = {"state_dir": state["a"], "uid": uid, "ansible_python_interpreter": SYSTEM_PYTHON}
    rc, run = run_playbook(CHAIN, chain)
    assert rc == 0, run.failures()
    try:
        assert os.path.exists(os.path.join(state["a"], "run", uid, "counting.json"))
        subprocess.run(["nft", "delete", "table", "inet", "scistream-count"], check=True)
        rc, run = run_playbook(INFO, info)
        assert "not counted" in run.result("Sessions of the gateway")["sessions"][0]["traffic_error"]
        # Only the counting part of the restore: the root namespace's inet scistream is not this test's.
        code = ("import importlib.util, sys, nftables; spec = importlib.util.spec_from_file_location('r', sys.argv[1]); "
                "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
                "sys.exit(0 if m.restore_counting(nftables.Nftables(), sys.argv[2]) else 1)")
        subprocess.run([SYSTEM_PYTHON, "-c", code, RESTORE, state["a"]], check=True, timeout=30)
        rc, run = run_playbook(INFO, info)
        session = run.result("Sessions of the gateway")["sessions"][0]
        assert "traffic_error" not in session and session["traffic"][0]["bytes_in"] == 0, session
        rc, run = run_playbook(CHAIN, chain)  # counted as before: nothing to do for PROD
        assert rc == 0 and run.result("Producer-side gateway")["actions"] == [], run.failures()
    finally:
        rc, run = run_playbook(CHAIN, dict(chain, session_state="absent"))
        assert rc == 0, run.failures()


def test_two_gateways_with_one_uid_keep_their_own_counters(tmp_path, sink):
    """Issue 20 item 6: two gateways on one host (state dirs), one uid: each counts its own listener, and
    releasing one leaves the other's counters alone. Read in this (virtualenv) Python: issue 22 item 3."""
    if not counting.HAS_NFTABLES or os.geteuid() != 0:
        pytest.skip("needs root and the nftables binding (the distribution's, found by the adapter)")
    uid = str(uuid.uuid4())
    target = sink()
    gateways = [make_gateway(str(tmp_path / name), dict(process_supervisor="daemon"), policy=LOOPBACK_POLICY)
                for name in ("one", "two")]
    assert gateways[0].counter.instance != gateways[1].counter.instance
    ports = []
    try:
        for gateway, port_range in zip(gateways, ("43160-43164", "43165-43169")):
            outcome = gateway.present(SessionSpec.build(uid=uid, role="PROD", num_conn=1, listener_ip="127.0.0.1",
                                                        port_range=port_range, targets=["127.0.0.1:%d" % target.port]))
            assert "count" in outcome.actions, outcome
            ports.append(outcome.session["ports"][0])
        streamcheck.send("127.0.0.1", ports[0], 1024 * 1024, False)
        target.wait(30)
        first, second = (gateway.sessions(uid)[0] for gateway in gateways)
        assert "traffic_error" not in first and "traffic_error" not in second, (first, second)
        assert first["traffic"][0]["bytes_in"] >= 1024 * 1024 and second["traffic"][0]["bytes_in"] == 0
        gateways[0].absent(uid)
        second = gateways[1].sessions(uid)[0]
        assert "traffic_error" not in second and second["traffic"][0]["port"] == ports[1], second
        assert gateways[1].counter.counts(gateways[1].store.load(uid))
    finally:
        for gateway in gateways:
            gateway.absent(uid)
