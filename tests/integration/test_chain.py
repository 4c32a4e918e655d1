# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""End to end through ansible-playbook: a PROD and a CONS gateway chained on this host.

Real proxies, real bytes: >= 200 MB pushed through the CONS listeners arrive
at the producer's sink with the same SHA-256; a second run changes nothing;
a killed proxy is back after the next run; release leaves no process, no
listening port and no file.
"""

from __future__ import annotations

import os
import signal

import pytest

from conftest import ROOT, docker_available, docker_client, files_under, run_playbook, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import (
    listening_ports, process_alive, wait_until)

CHAIN = os.path.join(ROOT, "tests", "integration", "playbooks", "chain.yml")
PAYLOAD = 200 * 1024 * 1024
BACKENDS = ["haproxy", "nginx", "stunnel"]


def chain_vars(tmp_path, uid, backend, runtime, sink_port, slot):
    base = 20000 + 400 * slot
    return {
        "uid": uid, "backend": backend, "runtime": runtime, "image": "scistream/%s:local" % backend,
        "producer_targets": ["127.0.0.1:%d" % sink_port],
        "prod_port_range": "%d-%d" % (base, base + 99), "cons_port_range": "%d-%d" % (base + 200, base + 299),
        "prod_state_dir": str(tmp_path / "gateway-a"), "cons_state_dir": str(tmp_path / "gateway-b"),
    }


def push(listener, size=PAYLOAD, udp=False):
    host, dummy, port = listener.rpartition(":")
    return streamcheck.send(host, int(port), size, udp=udp, timeout=60)


def proxy_pids(state_dir):
    """Live processes whose command line names this state dir (the daemon supervisor's proxies)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = open("/proc/%s/cmdline" % name, "rb").read().decode("utf-8", "replace")
            except OSError:
                continue
            if state_dir in cmdline and process_alive(int(name)):
                pids.append(int(name))
    return pids


def kill_prod_proxy(cvars):
    """Kill the PROD gateway's proxy the hard way: SIGKILL to the master, or `docker kill`."""
    if cvars["runtime"] == "docker":
        container = docker_client().containers.get("scistream-%s-prod-%s" % (cvars["backend"], cvars["uid"]))
        container.kill()
        assert wait_until(lambda: docker_client().containers.get(container.id).status != "running", 10)
        return
    pidfile = os.path.join(cvars["prod_state_dir"], "run", cvars["uid"], "proxy", "proxy.pid")
    pid = int(open(pidfile).read().split()[0])
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not process_alive(pid), 5)


def session_containers(uid):
    if not docker_available():
        return []
    return docker_client().containers.list(all=True, filters={"label": "org.scistream.uid=%s" % uid})


@pytest.mark.parametrize("runtime,backend", [
    ("process", "haproxy"), ("process", "nginx"), ("process", "stunnel"),
    pytest.param("docker", "haproxy", marks=pytest.mark.docker),
    pytest.param("docker", "nginx", marks=pytest.mark.docker),
    pytest.param("docker", "stunnel", marks=pytest.mark.docker),
])
def test_chain_carries_data_idempotently_and_releases_cleanly(tmp_path, uid, sink, runtime, backend):
    data_sink = sink()
    udp_sink = sink(udp=True, port=data_sink.port) if backend == "nginx" else None
    cvars = chain_vars(tmp_path, uid, backend, runtime, data_sink.port,
                       BACKENDS.index(backend) + (3 if runtime == "docker" else 0))

    rc, run = run_playbook(CHAIN, cvars)
    assert rc == 0, run.failures()
    prod, cons = run.result("Producer-side gateway"), run.result("Consumer-side gateway")
    assert prod["changed"] and cons["changed"] and cons["targets"] == prod["listeners"]
    assert len(cons["listeners"]) == 2

    sent = push(cons["listeners"][1])
    got = data_sink.wait()
    assert got["bytes"] == sent["bytes"] == PAYLOAD and got["sha256"] == sent["sha256"]

    if udp_sink:
        sent_udp = push(cons["listeners"][0], size=512 * 1024, udp=True)
        got_udp = udp_sink.wait()
        assert got_udp["sha256"] == sent_udp["sha256"] and got_udp["datagrams"] == 512

    rc, again = run_playbook(CHAIN, cvars)
    assert rc == 0 and again.changed == 0, again.failures()

    # A proxy that dies is back after the next run, and carries data again.
    kill_prod_proxy(cvars)
    rc, healed = run_playbook(CHAIN, cvars)
    assert rc == 0 and healed.result("Producer-side gateway")["actions"] == ["start"], healed.failures()
    again_sink = sink(port=data_sink.port)
    sent = push(cons["listeners"][0], size=8 * 1024 * 1024)
    assert again_sink.wait()["sha256"] == sent["sha256"]

    rc, released = run_playbook(CHAIN, dict(cvars, session_state="absent"))
    assert rc == 0 and released.changed == 2, released.failures()
    ports = set(prod["ports"] + cons["ports"])
    assert wait_until(lambda: not ports & listening_ports("tcp"), 5)
    assert proxy_pids(str(tmp_path)) == []
    assert session_containers(uid) == []
    assert files_under(str(tmp_path)) == []
