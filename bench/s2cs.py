# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Session setup through the S2CS control servers vs the same session made by the s2ds module.

    flock /tmp/scistream-bench.lock .venv/bin/python bench/s2cs.py [--pairs 5] [--backends haproxy,nginx,stunnel]

Two S2CS processes on 127.0.0.1 (TLS, self-signed CA) play the PROD and CONS
gateways. One "stream" is what S2UC does end to end: a new TLS channel to
each server, req + hello + update on PROD, then req + hello + update on CONS
with PROD's listeners (proxies started and listening on both sides). The
baseline is the same two sessions made by two `scistream.gateway.s2ds` tasks
(the tasks' own durations from ansible-playbook, Ansible's per-task cost
included, as a user of the module pays it), and, for scale, the two core
calls alone (`Gateway.present`). Path and baseline alternate over --pairs
pairs; medians with their ranges. Not a test: nothing is asserted.
Ports 31900-31999 on 127.0.0.1 only; every wait is bounded.

    flock /tmp/scistream-heavy.lock .venv/bin/python bench/s2cs.py --starvation [--pending 200] [--pairs 5]

measures instead what a hostile client costs a behaving one: one S2CS, a
behaving client's req + hello + release (median of 5) alone, then the same
beside --pending reqs that never say hello (all reserved and waiting),
alternating. Ports 41751-41990 (the s2cs block).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".build"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

# pylint: disable=wrong-import-position
from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import (  # noqa: E402
    close_stream, consumer_policy, open_stream)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec  # noqa: E402
from s2cs_real import Server, make_pki  # noqa: E402  (tests/s2cs_real.py)

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)
LOOPBACK_ANSWERS = consumer_policy(WITH_LOOPBACK)  # what open_stream lets PROD answer

TARGET = "127.0.0.1:9"  # proxies start and listen; nothing is sent

MODULE_PLAY = """---
- name: The same two sessions made by the s2ds module
  hosts: localhost
  gather_facts: false
  tasks:
    - name: PROD
      scistream.gateway.s2ds:
        uid: "{{ uid }}"
        role: PROD
        backend: "{{ backend }}"
        num_conn: 1
        listener_ip: 127.0.0.1
        port_range: "{{ prod_range }}"
        targets: ["%s"]
        state_dir: "{{ prod_state }}"
        process_supervisor: daemon
      register: prod
    - name: CONS
      scistream.gateway.s2ds:
        uid: "{{ uid }}"
        role: CONS
        backend: "{{ backend }}"
        num_conn: 1
        listener_ip: 127.0.0.1
        port_range: "{{ cons_range }}"
        targets: "{{ prod.listeners }}"
        state_dir: "{{ cons_state }}"
        process_supervisor: daemon
""" % TARGET


def task_seconds(playbook, extra):
    """Sum of the playbook's task durations (each task's own, from the JSON callback)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), playbook, "-e",
                          json.dumps(extra)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    data = json.loads(out.stdout[out.stdout.index("{"):])
    total = 0.0
    for task in data["plays"][0]["tasks"]:
        result = task["hosts"]["localhost"]
        if result.get("failed"):
            raise RuntimeError(result.get("msg"))
        duration = task["task"]["duration"]
        parse = datetime.datetime.fromisoformat
        total += (parse(duration["end"].rstrip("Z")) - parse(duration["start"].rstrip("Z"))).total_seconds()
    return total


def through_servers(prod_server, cons_server, uid):
    start = time.perf_counter()
    with prod_server.client() as prod, cons_server.client() as cons:
        open_stream(prod, cons, uid, 1, [TARGET], cons_policy=LOOPBACK_ANSWERS)
        seconds = time.perf_counter() - start
        close_stream(prod, cons, uid)
    return seconds


def through_core(prod_state, cons_state, backend, uid, ranges):
    runtimes = {"process": lambda s: ProcessRuntime("daemon")}
    prod_gw, cons_gw = Gateway(prod_state, runtimes, policy=LOOPBACK_POLICY), Gateway(cons_state, runtimes, policy=LOOPBACK_POLICY)
    start = time.perf_counter()
    prod = prod_gw.present(SessionSpec.build(uid, "PROD", 1, "127.0.0.1", ranges[0], [TARGET], backend))
    cons_gw.present(SessionSpec.build(uid, "CONS", 1, "127.0.0.1", ranges[1], prod.session["listeners"], backend))
    seconds = time.perf_counter() - start
    prod_gw.absent(uid)
    cons_gw.absent(uid)
    return seconds


def through_module(playbook, prod_state, cons_state, backend, uid, ranges):
    try:
        return task_seconds(playbook, {"uid": uid, "backend": backend, "prod_range": ranges[0],
                                       "cons_range": ranges[1], "prod_state": prod_state, "cons_state": cons_state})
    finally:  # a failed run leaves no proxy behind
        runtimes = {"process": lambda s: ProcessRuntime("daemon")}
        Gateway(prod_state, runtimes, policy=LOOPBACK_POLICY).absent(uid)
        Gateway(cons_state, runtimes, policy=LOOPBACK_POLICY).absent(uid)


def behaving_stream(server):
    """Median seconds of 5 req + hello + release from a client that behaves."""
    times = []
    with server.client() as client:
        for dummy in range(5):
            uid = str(uuid.uuid4())
            start = time.perf_counter()
            client.request(uid, "PROD", 1, [TARGET])
            client.release(uid)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def beside_pending(server, pending):
    """behaving_stream() while ``pending`` reqs wait for a hello that never comes; they are cancelled after."""
    from s2cs_real import client_request, sessions  # pylint: disable=import-outside-toplevel
    with server.client() as hostile:
        futures = [hostile.stub.req.future(client_request(str(uuid.uuid4()), "PROD", 1), metadata=hostile.metadata,
                                           timeout=120) for dummy in range(pending)]
        try:
            deadline = time.monotonic() + 60
            while len(sessions(server.state_dir)) < pending and time.monotonic() < deadline:
                time.sleep(0.05)
            return behaving_stream(server)
        finally:
            for future in futures:
                future.cancel()
            deadline = time.monotonic() + 60
            while sessions(server.state_dir) and time.monotonic() < deadline:
                time.sleep(0.05)


def starvation(args):
    from pairs import alternate  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory(prefix="s2cs-starve-bench-") as tmp:
        pki = make_pki(pathlib.Path(tmp))
        server = Server(pki, os.path.join(tmp, "gw"), 41990, "41751-41989", extra=[
            "--max_pending_per_peer", str(args.pending + 10), "--quota_sessions", str(args.pending + 10),
            "--quota_ports", str(args.pending + 10),
            # One hostile client on one channel from one address: lift the limits that would refuse it outright
            # (bench/limits.py measures those defaults).
            "--max_pending_per_identity", str(args.pending + 10), "--max_pending", str(args.pending + 10),
            "--max_anonymous_sessions", str(args.pending + 10), "--rate_burst", str(10 * args.pending),
            "--max_concurrent_streams", str(args.pending + 10)])
        try:
            behaving_stream(server)  # warm-up
            result = alternate(lambda: behaving_stream(server), lambda: beside_pending(server, args.pending),
                               pairs=args.pairs)
        finally:
            server.stop()
    delays = [path - base for base, path in result.samples]
    print("| behaving client: req+hello+release alone, s | beside %d pending reqs, s | delay, s | ratio |"
          % args.pending)
    print("|---|---|---|---|")
    print("| %s | %s | %s | %s |" % (summary([b for b, dummy in result.samples]),
                                     summary([p for dummy, p in result.samples]), summary(delays), result.cell()))
    print("\nmedian (min-max) over %d alternating pairs, %s" % (args.pairs, datetime.date.today().isoformat()))


def summary(values):
    return "%.3f (%.3f-%.3f)" % (statistics.median(values), min(values), max(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--backends", default="haproxy,nginx,stunnel")
    parser.add_argument("--starvation", action="store_true", help="a behaving client beside pending reqs instead")
    parser.add_argument("--pending", type=int, default=200)
    args = parser.parse_args()
    if args.starvation:
        starvation(args)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="sss2cs-bench-") as tmp:
        pki = make_pki(pathlib.Path(tmp))
        playbook = os.path.join(tmp, "module.yml")
        with open(playbook, "w", encoding="utf-8") as handle:
            handle.write(MODULE_PLAY)
        for slot, backend in enumerate(args.backends.split(",")):
            port = 31900 + 2 * slot
            base = 31920 + 20 * slot
            server_ranges = ("%d-%d" % (base, base + 4), "%d-%d" % (base + 5, base + 9))
            direct_ranges = ("%d-%d" % (base + 10, base + 14), "%d-%d" % (base + 15, base + 19))
            servers = [Server(pki, os.path.join(tmp, "%s-%s" % (backend, side)), port + i, server_ranges[i],
                              backend=backend) for i, side in enumerate(("prod", "cons"))]
            states = [os.path.join(tmp, "%s-module-%s" % (backend, side)) for side in ("prod", "cons")]
            try:
                # One warm-up of each path (imports, first TLS handshake), not counted.
                through_servers(servers[0], servers[1], str(uuid.uuid4()))
                through_module(playbook, states[0], states[1], backend, str(uuid.uuid4()), direct_ranges)
                s2cs, module, core, ratios = [], [], [], []
                for dummy in range(args.pairs):
                    module.append(through_module(playbook, states[0], states[1], backend, str(uuid.uuid4()),
                                                 direct_ranges))
                    s2cs.append(through_servers(servers[0], servers[1], str(uuid.uuid4())))
                    core.append(through_core(states[0], states[1], backend, str(uuid.uuid4()), direct_ranges))
                    ratios.append(s2cs[-1] / module[-1])
            finally:
                for server in servers:
                    server.stop()
            rows.append((backend, summary(s2cs), summary(module), summary(core), summary(ratios)))
    print("| backend (process runtime) | S2CS: req+hello+update on both, s | s2ds module: two tasks, s "
          "| core calls alone, s | S2CS / module |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| %s |" % " | ".join(row))
    print("\nmedian (min-max) over %d alternating pairs, %s" % (args.pairs, datetime.date.today().isoformat()))


if __name__ == "__main__":
    main()
