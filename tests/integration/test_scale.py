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
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import listening_ports

STREAM = os.path.join(ROOT, "playbooks", "stream.yml")
RELEASE = os.path.join(ROOT, "playbooks", "release.yml")
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
    assert all(s["actions"] == ["reserve", "write_config", "start"] for s in prod + cons)
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
