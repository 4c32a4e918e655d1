# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmarks, measured in one run and printed as Markdown tables (not tests: nothing is asserted).

    .venv/bin/python bench/run.py [--seconds 4] [--runtimes process,docker] [--sessions 200]

1. iperf3 throughput on loopback: direct, and through a CONS -> PROD chain of
   two gateways per backend and runtime, single stream and 4 streams, as a
   ratio to direct measured in the same run.
2. Module times (the task's own duration from ansible-playbook): create a
   session, re-run it unchanged, release it.
3. Time of the 1st vs the Nth session created on one gateway (core calls).

Traffic goes to 127.0.0.1 only. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".build"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

# pylint: disable=wrong-import-position
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import backends  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec  # noqa: E402

IPERF_PORT = 5301
IMAGES = {b: "scistream/%s:local" % b for b in ("haproxy", "nginx", "stunnel")}


def runtimes():
    return {
        "process": lambda s: ProcessRuntime("daemon"),
        "docker": lambda s: DockerRuntime(image=IMAGES[s.backend]),
    }


@contextlib.contextmanager
def iperf_server(port):
    proc = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def iperf(port, seconds, streams):
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-P", str(streams), "-J"],
                         capture_output=True, text=True, timeout=seconds + 30, check=False)
    data = json.loads(out.stdout)
    if "error" in data:
        raise RuntimeError(data["error"])
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


@contextlib.contextmanager
def chain(workdir, backend, runtime, target_port, tag):
    """A PROD gateway (-> iperf3 server) and a CONS gateway (-> PROD) on this host; yields the CONS port."""
    uid = str(uuid.uuid4())
    prod = Gateway(os.path.join(workdir, tag, "a"), runtimes())
    cons = Gateway(os.path.join(workdir, tag, "b"), runtimes())
    common = dict(uid=uid, num_conn=1, listener_ip="127.0.0.1", backend=backend, runtime=runtime, psk="b" * 32)
    try:
        p = prod.present(SessionSpec.build(role="PROD", port_range="25100-25199",
                                           targets=["127.0.0.1:%d" % target_port], **common))
        c = cons.present(SessionSpec.build(role="CONS", port_range="25200-25299",
                                           targets=p.session["listeners"], **common))
        yield c.session["ports"][0]
    finally:
        prod.absent(uid)
        cons.absent(uid)


def bench_throughput(args, workdir):
    rows = []
    with iperf_server(IPERF_PORT):
        direct = {n: iperf(IPERF_PORT, args.seconds, n) for n in (1, 4)}
        rows.append(("direct", "-", direct[1], 1.0, direct[4], 1.0))
        for runtime in args.runtimes:
            for backend in ("haproxy", "nginx", "stunnel"):
                with chain(workdir, backend, runtime, IPERF_PORT, "%s-%s" % (runtime, backend)) as port:
                    one = iperf(port, args.seconds, 1)
                    four = iperf(port, args.seconds, 4)
                rows.append((backend, runtime, one, one / direct[1], four, four / direct[4]))
    lines = ["| path | runtime | 1 stream Gbit/s | ratio | 4 streams Gbit/s | ratio |", "|---|---|---|---|---|---|"]
    for name, runtime, one, r1, four, r4 in rows:
        label = name if name == "direct" else "two %s hops" % name
        lines.append("| %s | %s | %.1f | %.2f | %.1f | %.2f |" % (label, runtime, one, r1, four, r4))
    return lines


MODULE_PLAY = """
- name: Bench
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Session
      scistream.gateway.s2ds:
        uid: "{{ uid }}"
        state: "{{ session_state }}"
        role: PROD
        backend: haproxy
        runtime: "{{ runtime }}"
        image: scistream/haproxy:local
        num_conn: 2
        listener_ip: 127.0.0.1
        port_range: 25300-25399
        targets: [127.0.0.1:9]
        state_dir: "{{ state_dir }}"
"""


PING_PLAY = """
- name: Baseline
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""


def task_seconds(playbook, extra):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), playbook, "-e", json.dumps(extra)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    data = json.loads(out.stdout[out.stdout.index("{"):])
    task = data["plays"][0]["tasks"][0]
    result = task["hosts"]["localhost"]
    if result.get("failed"):
        raise RuntimeError(result.get("msg"))
    result.setdefault("changed", False)
    duration = task["task"]["duration"]
    parse = datetime.datetime.fromisoformat
    return (parse(duration["end"].rstrip("Z")) - parse(duration["start"].rstrip("Z"))).total_seconds(), result["changed"]


def bench_module(args, workdir):
    playbook = os.path.join(workdir, "module.yml")
    with open(playbook, "w", encoding="utf-8") as handle:
        handle.write(MODULE_PLAY)
    ping = os.path.join(workdir, "ping.yml")
    with open(ping, "w", encoding="utf-8") as handle:
        handle.write(PING_PLAY)
    baseline = sorted(task_seconds(ping, {})[0] for dummy in range(3))[1]
    lines = ["| runtime | create s | no-op re-run s | release s |", "|---|---|---|---|",
             "| ansible.builtin.ping task (Ansible's own cost of any task) | %.2f | %.2f | %.2f |" % ((baseline,) * 3)]
    for runtime in args.runtimes:
        extra = {"uid": str(uuid.uuid4()), "runtime": runtime, "state_dir": os.path.join(workdir, "module-" + runtime)}
        create, c1 = task_seconds(playbook, dict(extra, session_state="present"))
        noop, c2 = task_seconds(playbook, dict(extra, session_state="present"))
        release, c3 = task_seconds(playbook, dict(extra, session_state="absent"))
        assert c1 and not c2 and c3, (c1, c2, c3)
        lines.append("| %s, s2ds task | %.2f | %.2f | %.2f |" % (runtime, create, noop, release))
    for runtime in args.runtimes:
        gateway = Gateway(os.path.join(workdir, "core-" + runtime), runtimes())
        spec = SessionSpec.build(uid=str(uuid.uuid4()), role="PROD", backend="haproxy", runtime=runtime, num_conn=2,
                                 listener_ip="127.0.0.1", port_range="25400-25499", targets=["127.0.0.1:9"])
        timings = []
        for call in (lambda: gateway.present(spec), lambda: gateway.present(spec), lambda: gateway.absent(spec.uid)):
            start = time.perf_counter()
            call()
            timings.append(time.perf_counter() - start)
        lines.append("| %s, core call | %.3f | %.3f | %.3f |" % ((runtime,) + tuple(timings)))
    return lines


def median(values):
    return sorted(values)[len(values) // 2]


def bench_many_sessions(args, workdir):
    gateway = Gateway(os.path.join(workdir, "many"), runtimes())
    uids, times = [], []
    try:
        for i in range(args.sessions):
            uid = str(uuid.uuid4())
            spec = SessionSpec.build(uid=uid, role="PROD", num_conn=1, listener_ip="127.0.0.1",
                                     port_range="26000-26999", targets=["127.0.0.1:9"], backend="haproxy")
            start = time.perf_counter()
            gateway.present(spec)
            times.append(time.perf_counter() - start)
            uids.append(uid)
    finally:
        for uid in uids:
            gateway.absent(uid)
    n = len(times)
    first10, last10 = median(times[:10]), median(times[-10:])
    return ["| session | create s (core call, process runtime, HAProxy, 1 listener) |", "|---|---|",
            "| 1st | %.3f |" % times[0], "| %dth | %.3f |" % (n, times[-1]),
            "| median of 1st-10th | %.3f |" % first10, "| median of %dth-%dth | %.3f |" % (n - 9, n, last10),
            "| ratio of those medians | %.2f |" % (last10 / first10)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--runtimes", default="process,docker")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--only", default="throughput,module,sessions")
    parser.add_argument("--tuning", default="{}", help="JSON overrides of the template tunables")
    args = parser.parse_args()
    args.runtimes = [r for r in args.runtimes.split(",") if r]
    backends.TUNING.update(json.loads(args.tuning))
    workdir = tempfile.mkdtemp(prefix="scistream-bench-")
    print("# scistream.gateway bench, %s, %d cores, tuning %s\n" % (
        time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), json.dumps(backends.TUNING, sort_keys=True)))
    try:
        for name, func in (("throughput", bench_throughput), ("module", bench_module), ("sessions", bench_many_sessions)):
            if name in args.only:
                print("\n".join(func(args, workdir)) + "\n", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
