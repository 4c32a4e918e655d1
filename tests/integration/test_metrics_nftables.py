# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Backend nftables seen by scistream-exporter, on four network namespaces of its own (10.97.61-63.0/24).

The exporter runs inside gateway B's namespace (on B's LAN address, port
43109) and is scraped from the consumer's namespace, the way a site's
Prometheus on the LAN would; the root namespace's Prometheus of
test_metrics.py cannot reach into these namespaces. 200 MB through the
kernel path: the bytes B counted are within 5% of what was sent; after the
rules are flushed the session is down (``scistream_session_up 0``).
Heavy (200 MB): run under ``flock /tmp/scistream-heavy.lock``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from conftest import BUILD, ROOT, run_playbook
import netns

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "nftables.yml")
STREAMCHECK = os.path.join(ROOT, "playbooks", "files", "streamcheck.py")
EXPORTER = "ansible_collections.scistream.gateway.plugins.module_utils.exporter.server"
PAYLOAD = 200 * 1024 * 1024
SINK_PORT = 43180
EXPORTER_PORT = 43109

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))


@pytest.fixture(scope="module")
def topology():
    topo = netns.Topology("m", net=61)
    try:
        yield topo.create()
    finally:
        topo.destroy()


def scrape(topology):
    """The exporter's page, fetched from the consumer's namespace."""
    code = "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    proc = topology.sh("c", sys.executable, "-c", code, "http://%s:%d/metrics" % (topology.b_lan, EXPORTER_PORT),
                       check=False)
    return proc.stdout if proc.returncode == 0 else None


def sample(text, name, **labels):
    for line in (text or "").splitlines():
        if line.startswith(name + "{") and all('%s="%s"' % item in line for item in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_exporter_counts_the_kernel_path(topology, tmp_path):
    uid = str(uuid.uuid4())
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "gw-a ansible_connection=local ansible_python_interpreter=%s state_dir=%s wan_address=%s\n"
        "gw-b ansible_connection=local ansible_python_interpreter=%s state_dir=%s lan_address=%s\n" % (
            topology.interpreter("a", str(tmp_path)), tmp_path / "gateway-a", topology.a_wan,
            topology.interpreter("b", str(tmp_path)), tmp_path / "gateway-b", topology.b_lan))
    variables = {"uids": [uid], "producer_targets": ["%s:%d" % (topology.producer, SINK_PORT)], "num_conn": 1}
    exporter = None
    try:
        rc, run = run_playbook(PLAYBOOK, variables, inventory=str(inventory))
        assert rc == 0, run.failures()
        listener = run.result("CONS session", "gw-b")["results"][0]["listeners"][0]
        exporter = topology.popen("b", "env", "PYTHONPATH=" + BUILD, "/usr/bin/python3", "-m", EXPORTER,
                                  "--state_dir", str(tmp_path / "gateway-b"),
                                  "--web.listen-address", "%s:%d" % (topology.b_lan, EXPORTER_PORT),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while scrape(topology) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        before = scrape(topology)
        assert sample(before, "scistream_session_up", uid=uid) == 1.0, before
        assert sample(before, "scistream_listener_bytes_total", uid=uid, direction="in") == 0.0

        sink = topology.popen("p", sys.executable, STREAMCHECK, "sink", "--listen",
                              "%s:%d" % (topology.producer, SINK_PORT), "--timeout", "90",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert sink.stderr.readline().strip() == "listening"
        sent = json.loads(topology.sh("c", sys.executable, STREAMCHECK, "send", "--to", listener, "--bytes", "200M",
                                      timeout=120).stdout)
        got = json.loads(sink.communicate(timeout=120)[0])
        assert got["sha256"] == sent["sha256"] and got["bytes"] == PAYLOAD

        after = scrape(topology)
        counted = sample(after, "scistream_listener_bytes_total", uid=uid, direction="in")
        assert PAYLOAD <= counted <= PAYLOAD * 1.05, (counted, counted / PAYLOAD)
        assert sample(after, "scistream_listener_bytes_total", uid=uid, direction="out") > 0  # the ACKs
        assert re.search(r'scistream_listener_up\{[^}]*uid="%s"[^}]*\} 1\.0' % uid, after)

        topology.sh("b", "nft", "flush", "ruleset")  # the session's rules are gone
        assert sample(scrape(topology), "scistream_session_up", uid=uid) == 0.0
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(10)
        run_playbook(PLAYBOOK, dict(variables, session_state="absent"), inventory=str(inventory))
        for role in ("a", "b"):
            topology.sh(role, "nft", "flush", "ruleset", check=False)
