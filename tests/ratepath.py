# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Rated streams through two gateways in namespaces, for tests/integration/test_rates.py and bench/rate.py.

    consumer --(LAN B)-- gateway B --(WAN)-- gateway A --(LAN A)-- producer

The producer serves data (a source: it sends on accept, as a SciStream
producer does); the consumer connects to gateway B's listener and reads to
the end. Each gateway shapes its own egress toward the consumer: A its WAN
veth, B its LAN veth (``rate_devices``). Every command runs in the namespace
it names; nothing leaves the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_PYTHON = "/usr/bin/python3"
PSK = "r" * 32

#: The producer's side: listen, accept one connection, send SIZE deterministic bytes, print their digest.
SOURCE = r"""
import hashlib, json, socket, sys
sys.path.insert(0, sys.argv[4])
import streamcheck
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, port)); server.listen(8); server.settimeout(60)
print("ready", flush=True)
conn, dummy = server.accept()
digest = hashlib.sha256()
with conn:
    for chunk in streamcheck.payload(size, 7):
        conn.sendall(chunk); digest.update(chunk)
print(json.dumps({"bytes": size, "sha256": digest.hexdigest()}), flush=True)
"""

#: The consumer's side: connect, read to the end (at most TIMEOUT s), print bytes, digest and the seconds from
#: the first byte to the last.
FETCH = r"""
import hashlib, json, socket, sys, time
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sock = socket.create_connection((host, port), timeout=10)
digest, nbytes, first, last = hashlib.sha256(), 0, None, None
deadline = time.monotonic() + timeout
sock.settimeout(5)
while time.monotonic() < deadline:
    data = sock.recv(1 << 20)
    if not data:
        break
    last = time.monotonic()
    first = first or last
    digest.update(data); nbytes += len(data)
print(json.dumps({"bytes": nbytes, "sha256": digest.hexdigest(), "seconds": (last - first) if first else 0}))
"""


def gateway_python(runtime):
    """The kernel runtime's Gateway runs under the distribution's Python (python3-nftables, python3-pyroute2)."""
    return SYSTEM_PYTHON if runtime == "kernel" else sys.executable


def ns_call(topo, role, request, runtime):
    """A Gateway call inside the namespace of ``role`` (bench/nsgw.py); returns the session."""
    out = topo.sh(role, gateway_python(runtime), os.path.join(ROOT, "bench", "nsgw.py"), json.dumps(request),
                  check=False, timeout=120)
    if out.returncode != 0:
        raise RuntimeError("gateway %s: %s" % (role, out.stderr.strip()[-2000:]))
    return json.loads(out.stdout)


class Chain:
    """One session through both gateways (PROD on A to the producer's ``source_port``, CONS on B to A)."""

    def __init__(self, topo, workdir, backend, runtime, rate, source_port, ports, uid=None):
        self.topo, self.backend, self.runtime, self.rate = topo, backend, runtime, rate
        self.uid = uid or str(uuid.uuid4())
        self.source_port = source_port
        self.ports = ports  # (first, last) of the block; A takes the first half, B the second
        self.states = {role: os.path.join(workdir, "ns-%s-%s-%s" % (runtime, backend, self.uid[:8]), role)
                       for role in ("a", "b")}
        self.devices = {"a": [topo.veth("a", "b")], "b": [topo.veth("b", "c")]}
        self.sessions = {}

    def request(self, role, action, spec):
        return {"state_dir": self.states[role], "action": action, "spec": spec, "rate_devices": self.devices[role],
                "network_mode": "container:%s" % self.topo.ns[role]}

    def present(self, rate=None):
        rate = self.rate if rate is None else rate
        kernel = self.runtime == "kernel"
        common = dict(uid=self.uid, num_conn=1, backend=self.backend, runtime=self.runtime,
                      psk=None if kernel or self.backend == "haproxy" else PSK, rate=rate)
        low, high = self.ports
        middle = (low + high) // 2
        self.sessions["a"] = ns_call(self.topo, "a", self.request("a", "present", dict(
            common, role="PROD", listener_ip="0.0.0.0", port_range="%d-%d" % (low, middle),
            targets=["%s:%d" % (self.topo.producer, self.source_port)])), self.runtime)
        self.sessions["b"] = ns_call(self.topo, "b", self.request("b", "present", dict(
            common, role="CONS", listener_ip="0.0.0.0", port_range="%d-%d" % (middle + 1, high),
            targets=["%s:%d" % (self.topo.a_wan, port) for port in self.sessions["a"]["ports"]])), self.runtime)
        return self

    @property
    def port(self):
        return self.sessions["b"]["ports"][0]

    def absent(self):
        for role in ("b", "a"):
            with contextlib.suppress(RuntimeError):
                ns_call(self.topo, role, self.request(role, "absent", {"uid": self.uid}), self.runtime)


@contextlib.contextmanager
def chain(topo, workdir, backend, runtime, rate, source_port, ports):
    session = Chain(topo, workdir, backend, runtime, rate, source_port, ports)
    try:
        yield session.present()
    finally:
        session.absent()


def stream(topo, source_port, size, port=None, timeout=60):
    """``size`` bytes from the producer's source to the consumer, through B's listener ``port`` (None: straight
    to the producer, the routed path). Returns the consumer's {bytes, sha256, seconds} and the producer's
    digest as ``sent``."""
    files = os.path.join(ROOT, "playbooks", "files")
    source = topo.popen("p", SYSTEM_PYTHON, "-c", SOURCE, topo.producer, str(source_port), str(size), files,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert source.stdout.readline().strip() == "ready", source.stderr.read()
        host, to = (topo.b_lan, port) if port else (topo.producer, source_port)
        out = topo.sh("c", SYSTEM_PYTHON, "-c", FETCH, host, str(to), str(timeout), timeout=timeout + 30)
        got = json.loads(out.stdout)
        sent = json.loads(source.communicate(timeout=30)[0].strip().splitlines()[-1])
        got["sent"] = sent["sha256"]
        got["bits_per_second"] = got["bytes"] * 8 / got["seconds"] if got["seconds"] else None
        return got
    finally:
        if source.poll() is None:
            source.kill()
            source.wait()


def streams_at_once(topo, jobs, timeout=60):
    """Several streams at once: ``jobs`` is [(source_port, size, b_port)]; returns their results in order."""
    files = os.path.join(ROOT, "playbooks", "files")
    sources, fetches = [], []
    try:
        for source_port, size, dummy in jobs:
            proc = topo.popen("p", SYSTEM_PYTHON, "-c", SOURCE, topo.producer, str(source_port), str(size), files,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            sources.append(proc)
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        start = time.monotonic()
        for dummy, dummy2, port in jobs:
            fetches.append(topo.popen("c", SYSTEM_PYTHON, "-c", FETCH, topo.b_lan, str(port), str(timeout),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for proc, source in zip(fetches, sources):
            out = json.loads(proc.communicate(timeout=timeout + 30)[0])
            out["sent"] = json.loads(source.communicate(timeout=30)[0].strip().splitlines()[-1])["sha256"]
            out["bits_per_second"] = out["bytes"] * 8 / out["seconds"] if out["seconds"] else None
            results.append(out)
        if results:
            results[0]["wall"] = time.monotonic() - start
        return results
    finally:
        for proc in sources + fetches:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
