# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmarks, measured in one run and printed as Markdown tables (not tests: nothing is asserted).

    flock /tmp/scistream-bench.lock .venv/bin/python bench/run.py [--seconds 3] [--pairs 3]
        [--runtimes process,docker] [--only loopback,namespaces,module,sessions]

1. iperf3 throughput on loopback: direct, and through a CONS -> PROD chain of
   two gateways per proxy backend and runtime, single stream and 4 streams.
2. The same on four network namespaces (consumer, gateway B, gateway A,
   producer; tests/netns.py), every backend including nftables (the kernel
   data path), against the plain routed path through the same two gateways.
   With the docker runtime the gateways are the namespaces of two idle
   containers that the proxy containers join.
3. Module times (the task's own duration from ansible-playbook): create a
   session, re-run it unchanged, release it.
4. Time of the 1st vs the Nth session created on one gateway (core calls).

Every ratio alternates baseline and path (baseline, path, baseline, path...)
over --pairs pairs (bench/pairs.py) and is the median ratio with its range.
Traffic goes to 127.0.0.1 or into the namespaces only; ports 32000-32999.
Every wait is bounded. Needs root (namespaces) and, for nftables,
python3-nftables under /usr/bin/python3.
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
sys.path.insert(0, os.path.join(ROOT, "bench"))

# pylint: disable=wrong-import-position
import netns  # noqa: E402  (tests/netns.py)
from pairs import alternate, loadavg  # noqa: E402  (bench/pairs.py)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import backends  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec  # noqa: E402

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

PROXIES = ("haproxy", "nginx", "stunnel")
LOOP_IPERF_PORT = 32900
NS_IPERF_PORT = 32901
IMAGES = {b: "scistream/%s:local" % b for b in PROXIES}
PSK = "b" * 32
SYSTEM_PYTHON = "/usr/bin/python3"


def runtimes():
    return {
        "process": lambda s: ProcessRuntime("daemon"),
        "docker": lambda s: DockerRuntime(image=IMAGES[s.backend]),
    }


@contextlib.contextmanager
def iperf_server(address, port, prefix=()):
    proc = subprocess.Popen(list(prefix) + ["iperf3", "-s", "-B", address, "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def iperf(address, port, seconds, streams, prefix=()):
    """Gbit/s received by the server, one iperf3 run of ``streams`` parallel streams."""
    for attempt in range(3):
        out = subprocess.run(list(prefix) + ["iperf3", "-c", address, "-p", str(port), "-t", str(seconds),
                                             "-P", str(streams), "-J"],
                             capture_output=True, text=True, timeout=seconds + 30, check=False)
        data = json.loads(out.stdout or "{}")
        if "error" not in data and "end" in data:
            return data["end"]["sum_received"]["bits_per_second"] / 1e9
        # "the server is busy running a test" right after the previous run: try again.
        time.sleep(1 + attempt)
    raise RuntimeError(data.get("error", out.stderr))


def ratio_row(label, runtime, measure_baseline, measure_path, args):
    """One table row: per stream count, the medians in Gbit/s and the median ratio (range)."""
    cells = [label, runtime]
    for streams in (1, 4):
        pairs = alternate(lambda: measure_baseline(streams), lambda: measure_path(streams), args.pairs)
        cells += ["%.1f" % pairs.baseline, "%.1f" % pairs.path, pairs.cell()]
    return "| %s |" % " | ".join(cells)


THROUGHPUT_HEADER = ["| path | runtime | 1 stream: %s Gbit/s | path Gbit/s | ratio (range) "
                     "| 4 streams: %s Gbit/s | path Gbit/s | ratio (range) |",
                     "|---|---|---|---|---|---|---|---|"]


# -- loopback ------------------------------------------------------------------
@contextlib.contextmanager
def chain(workdir, backend, runtime, target_port, tag):
    """A PROD gateway (-> iperf3 server) and a CONS gateway (-> PROD) on this host; yields the CONS port."""
    uid = str(uuid.uuid4())
    prod = Gateway(os.path.join(workdir, tag, "a"), runtimes(), policy=LOOPBACK_POLICY)
    cons = Gateway(os.path.join(workdir, tag, "b"), runtimes(), policy=LOOPBACK_POLICY)
    common = dict(uid=uid, num_conn=1, listener_ip="127.0.0.1", backend=backend, runtime=runtime, psk=PSK)
    try:
        p = prod.present(SessionSpec.build(role="PROD", port_range="32100-32149",
                                           targets=["127.0.0.1:%d" % target_port], **common))
        c = cons.present(SessionSpec.build(role="CONS", port_range="32150-32199",
                                           targets=p.session["listeners"], **common))
        yield c.session["ports"][0]
    finally:
        prod.absent(uid)
        cons.absent(uid)


def bench_loopback(args, workdir):
    lines = ["Loopback, two gateways on this host, ratio to direct:", ""]
    lines += [line % (("direct",) * 2) if "%s" in line else line for line in THROUGHPUT_HEADER]

    def direct(streams):
        return iperf("127.0.0.1", LOOP_IPERF_PORT, args.seconds, streams)

    with iperf_server("127.0.0.1", LOOP_IPERF_PORT):
        for runtime in args.runtimes:
            for backend in PROXIES:
                try:
                    with chain(workdir, backend, runtime, LOOP_IPERF_PORT, "%s-%s" % (runtime, backend)) as port:
                        lines.append(ratio_row(
                            "two %s hops" % backend, runtime, direct,
                            lambda streams, port=port: iperf("127.0.0.1", port, args.seconds, streams), args))
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    lines.append("| two %s hops | %s | failed: %s |" % (backend, runtime, str(exc)[:200]))
    return lines


# -- namespaces ----------------------------------------------------------------
def ns_call(topo, role, request, kernel):
    """A Gateway call inside the namespace of ``role`` (bench/nsgw.py); returns the session."""
    python = SYSTEM_PYTHON if kernel else sys.executable
    out = topo.sh(role, python, os.path.join(ROOT, "bench", "nsgw.py"), json.dumps(request), check=False, timeout=120)
    if out.returncode != 0:
        raise RuntimeError("gateway %s: %s" % (role, out.stderr.strip()[-2000:]))
    return json.loads(out.stdout)


@contextlib.contextmanager
def ns_chain(topo, workdir, backend, runtime):
    """PROD on gateway A (-> producer's iperf3), CONS on gateway B (-> A); yields B's listener port."""
    uid = str(uuid.uuid4())
    kernel = runtime == "kernel"
    common = dict(uid=uid, num_conn=1, backend=backend, runtime=runtime, psk=None if kernel else PSK)
    states = {role: os.path.join(workdir, "ns-%s-%s" % (runtime, backend), role) for role in ("a", "b")}
    modes = {role: "container:%s" % topo.ns[role] for role in ("a", "b")}
    try:
        # Listeners on 0.0.0.0: the docker runtime checks an NGINX config in a container without
        # network (nginx -t binds), where only a wildcard or loopback address can be bound.
        prod = ns_call(topo, "a", {"state_dir": states["a"], "action": "present", "network_mode": modes["a"],
                                   "spec": dict(common, role="PROD", listener_ip="0.0.0.0", port_range="32600-32649",
                                                targets=["%s:%d" % (topo.producer, NS_IPERF_PORT)])}, kernel)
        cons = ns_call(topo, "b", {"state_dir": states["b"], "action": "present", "network_mode": modes["b"],
                                   "spec": dict(common, role="CONS", listener_ip="0.0.0.0", port_range="32650-32699",
                                                targets=["%s:%d" % (topo.a_wan, port) for port in prod["ports"]])},
                       kernel)
        yield cons["ports"][0]
    finally:
        for role in ("b", "a"):
            with contextlib.suppress(RuntimeError):
                ns_call(topo, role, {"state_dir": states[role], "action": "absent", "network_mode": modes[role],
                                     "spec": {"uid": uid}}, kernel)


def bench_namespaces(args, workdir):
    docker = "docker" in args.runtimes
    topo = netns.Topology("b", net=11, docker_image="local/debian:bookworm" if docker else None)
    combos = [(runtime, backend) for runtime in args.runtimes for backend in PROXIES] + [("kernel", "nftables")]
    lines = ["Four network namespaces (consumer, gateway B, gateway A, producer), ratio to the routed path "
             "through the same gateways:", ""]
    lines += [line % (("routed",) * 2) if "%s" in line else line for line in THROUGHPUT_HEADER]
    client = ("ip", "netns", "exec", topo.ns["c"])
    try:
        topo.create()
        topo.route(True)

        def routed(streams):
            return iperf(topo.producer, NS_IPERF_PORT, args.seconds, streams, client)

        with iperf_server(topo.producer, NS_IPERF_PORT, ("ip", "netns", "exec", topo.ns["p"])):
            for runtime, backend in combos:
                label = "kernel NAT (nftables) on both gateways" if runtime == "kernel" else "two %s hops" % backend
                try:
                    with ns_chain(topo, workdir, backend, runtime) as port:
                        lines.append(ratio_row(
                            label, runtime, routed,
                            lambda streams, port=port: iperf(topo.b_lan, port, args.seconds, streams, client), args))
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    lines.append("| %s | %s | failed: %s |" % (label, runtime, str(exc)[:300]))
                print(lines[-1], file=sys.stderr, flush=True)
    finally:
        topo.destroy()
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
        port_range: 32200-32299
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
        gateway = Gateway(os.path.join(workdir, "core-" + runtime), runtimes(), policy=LOOPBACK_POLICY)
        spec = SessionSpec.build(uid=str(uuid.uuid4()), role="PROD", backend="haproxy", runtime=runtime, num_conn=2,
                                 listener_ip="127.0.0.1", port_range="32200-32299", targets=["127.0.0.1:9"])
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
    gateway = Gateway(os.path.join(workdir, "many"), runtimes(), policy=LOOPBACK_POLICY)
    uids, times = [], []
    try:
        for i in range(args.sessions):
            uid = str(uuid.uuid4())
            spec = SessionSpec.build(uid=uid, role="PROD", num_conn=1, listener_ip="127.0.0.1",
                                     port_range="32300-32599", targets=["127.0.0.1:9"], backend="haproxy")
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
    parser.add_argument("--seconds", type=int, default=3, help="length of one iperf3 run")
    parser.add_argument("--pairs", type=int, default=3, help="baseline/path pairs per ratio (>= 3)")
    parser.add_argument("--runtimes", default="process,docker")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--only", default="loopback,namespaces,module,sessions")
    parser.add_argument("--tuning", default="{}", help="JSON overrides of the template tunables")
    args = parser.parse_args()
    args.runtimes = [r for r in args.runtimes.split(",") if r]
    backends.TUNING.update(json.loads(args.tuning))
    workdir = tempfile.mkdtemp(prefix="ssnft-bench-")
    print("# scistream.gateway bench, %s, %d cores, loadavg %s, %d pairs of %d s, tuning %s\n" % (
        time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), loadavg(), args.pairs, args.seconds,
        json.dumps(backends.TUNING, sort_keys=True)), flush=True)
    try:
        for name, func in (("loopback", bench_loopback), ("namespaces", bench_namespaces), ("module", bench_module),
                           ("sessions", bench_many_sessions)):
            if name in args.only:
                print("\n".join(func(args, workdir)) + "\n", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print("loadavg at the end: %s" % loadavg())


if __name__ == "__main__":
    main()
