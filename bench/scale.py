# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Facility scale, measured in one run and printed as Markdown tables (nothing is asserted).

    flock /tmp/scistream-bench.lock .venv/bin/python bench/scale.py [--pairs 3] [--only streams,info,memory,gateways]

1. streams: N streams across two gateways on this host (process runtime,
   HAProxy, one listener each) through playbooks/stream.yml (create, then an
   unchanged re-run) and playbooks/release.yml; N=100 against N=1, the two
   alternated over --pairs pairs; median ratio with its range.
2. info: one s2ds_info task on a gateway holding 200 running sessions
   against one holding 1, alternated.
3. memory: resident memory of one idle session (every process of it, or its
   container with its containerd shim) per backend and runtime; RSS and PSS
   (shared pages divided among the processes sharing them).
4. gateways: deploy.yml + stream.yml over 1, 4 and 8 producer gateways (systemd
   containers on a Docker network of this bench), each streaming to one
   consumer gateway; forks 16. forks (not in the default set): 8 gateways with
   forks 5 (Ansible's default) against 16.

Ports 33000-34999 only; containers and networks are named ssscale-*.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".build"))

# pylint: disable=wrong-import-position
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway, Release  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import processes_in_group  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec  # noqa: E402

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

BIN = os.path.dirname(sys.executable)
PLAYBOOKS = os.path.join(ROOT, "playbooks")
SYSTEMD_IMAGE = "scistream/test-systemd-gateway:local"


def playbook(path, inventory, *extra, check=True):
    """Run ansible-playbook; return its wall time in seconds."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    start = time.monotonic()
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, path] + list(extra),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    elapsed = time.monotonic() - start
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed:\n%s\n%s" % (path, proc.stdout[-3000:], proc.stderr[-2000:]))
    return elapsed


def median_range(values):
    return "%.2f (%.2f-%.2f)" % (statistics.median(values), min(values), max(values))


# -- 1. many streams through the playbooks --------------------------------------
def two_gateway_inventory(directory, count, tag):
    streams = [{"name": "s%03d" % i, "uid": str(uuid.uuid4()), "producer_gateway": "gw-a-" + tag,
                "consumer_gateway": "gw-b-" + tag, "producer_targets": ["127.0.0.1:34990"], "num_conn": 1}
               for i in range(count)]
    common = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
              "ansible_become": False, "scistream_listener_ip": "127.0.0.1"}
    hosts = {
        "gw-a-" + tag: dict(common, scistream_gateway_state_dir=os.path.join(directory, "a"),
                            scistream_gateway_port_range="33000-33199", scistream_wan_address="127.0.0.1"),
        "gw-b-" + tag: dict(common, scistream_gateway_state_dir=os.path.join(directory, "b"),
                            scistream_gateway_port_range="33200-33399", scistream_lan_address="127.0.0.1"),
    }
    path = os.path.join(directory, "inventory.yml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"all": {"children": {"scistream_gateways": {
            "hosts": hosts, "vars": {"scistream_gateway_runtime": "process", "scistream_streams": streams}}}}}, handle)
    return path


def stream_cycle(count):
    directory = tempfile.mkdtemp(prefix="ssscale-streams-")
    try:
        inventory = two_gateway_inventory(directory, count, str(count))
        create = playbook(os.path.join(PLAYBOOKS, "stream.yml"), inventory)
        rerun = playbook(os.path.join(PLAYBOOKS, "stream.yml"), inventory)
        release = playbook(os.path.join(PLAYBOOKS, "release.yml"), inventory)
        return {"create": create, "rerun": rerun, "release": release}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def bench_streams(pairs, many=100):
    runs = {1: [], many: []}
    for dummy in range(pairs):
        for count in (1, many):
            runs[count].append(stream_cycle(count))
    lines = ["| step | 1 stream s | %d streams s | ratio (median, range) | goal |" % many, "|---|---|---|---|---|"]
    goals = {"create": 10, "rerun": 3, "release": 10}
    for step in ("create", "rerun", "release"):
        one = [r[step] for r in runs[1]]
        lots = [r[step] for r in runs[many]]
        ratios = [b / a for a, b in zip(one, lots)]
        lines.append("| %s (playbook wall time) | %s | %s | %s | <= %dx |" % (
            step, median_range(one), median_range(lots), median_range(ratios), goals[step]))
    return "\n".join(lines)


# -- 2. s2ds_info with many sessions -----------------------------------------------
def filled_gateway(count, first_port):
    state_dir = tempfile.mkdtemp(prefix="ssscale-info-")
    gateway = Gateway(state_dir, {"process": lambda s: ProcessRuntime("daemon")}, policy=LOOPBACK_POLICY)
    specs = [SessionSpec.build(uid=str(uuid.uuid4()), role="PROD", num_conn=1, listener_ip="127.0.0.1",
                               port_range="%d-%d" % (first_port, first_port + count + 49), targets=["127.0.0.1:34991"])
             for dummy in range(count)]
    failures = [o.error for o in gateway.apply(specs) if o.error]
    if failures:
        raise RuntimeError(failures[0])
    return gateway, specs


def info_playbook(directory, state_dir):
    path = os.path.join(directory, "info.yml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump([{"name": "info", "hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "Info", "scistream.gateway.s2ds_info": {"state_dir": state_dir}, "register": "info"},
            {"name": "All healthy", "ansible.builtin.assert": {
                "that": "info.sessions | rejectattr('healthy') | list | length == 0", "quiet": True}}]}], handle)
    return path


def bench_info(pairs, many=200):
    directory = tempfile.mkdtemp(prefix="ssscale-infopb-")
    inventory = os.path.join(directory, "hosts.ini")
    with open(inventory, "w", encoding="utf-8") as handle:
        handle.write("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    one, one_specs = filled_gateway(1, 33400)
    lots, lots_specs = filled_gateway(many, 33500)
    try:
        times = {1: [], many: []}
        for dummy in range(max(pairs, 5)):
            for count, gateway in ((1, one), (many, lots)):
                times[count].append(playbook(info_playbook(directory, gateway.store.state_dir), inventory))
        ratios = [b / a for a, b in zip(times[1], times[many])]
        return "\n".join([
            "| s2ds_info playbook (info + assert all healthy) | 1 session s | %d sessions s | ratio | goal |" % many,
            "|---|---|---|---|---|",
            "| process runtime, HAProxy, running | %s | %s | %s | <= 2x |" % (
                median_range(times[1]), median_range(times[many]), median_range(ratios))])
    finally:
        for gateway, specs in ((one, one_specs), (lots, lots_specs)):
            gateway.apply([Release(s.uid) for s in specs])
            shutil.rmtree(gateway.store.state_dir, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)


# -- 3. memory per idle session -------------------------------------------------------
def proc_memory(pid):
    """(RSS, PSS) of a process in bytes, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    try:
        with open("/proc/%d/smaps_rollup" % pid, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def pids_matching(text):
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as handle:
                    if text.encode() in handle.read():
                        pids.append(int(name))
            except OSError:
                continue
    return pids


def container_pids(container_id):
    """Every process of a container (its cgroup) and its containerd shim."""
    pids = []
    for cgroup_root in ("/sys/fs/cgroup/memory/docker", "/sys/fs/cgroup/pids/docker", "/sys/fs/cgroup/docker",
                        "/sys/fs/cgroup/system.slice/docker-%s.scope" % container_id):
        path = os.path.join(cgroup_root, container_id, "cgroup.procs")
        if not os.path.exists(path):
            path = os.path.join(cgroup_root, "cgroup.procs")
        if os.path.exists(path) and container_id in path:
            with open(path, encoding="ascii") as handle:
                pids = [int(line) for line in handle if line.strip()]
            break
    return pids + [p for p in pids_matching(container_id) if p not in pids]


def bench_memory(per_kind=5):
    images = {b: "scistream/%s:local" % b for b in ("haproxy", "nginx", "stunnel")}
    lines = ["| backend | runtime | processes per session | RSS MB per session | PSS MB per session | of which shim RSS MB | goal |",
             "|---|---|---|---|---|---|---|"]
    port = 34000
    for runtime_name in ("process", "docker"):
        for backend in ("haproxy", "nginx", "stunnel"):
            state_dir = tempfile.mkdtemp(prefix="ssscale-mem-")
            runtimes = {"process": lambda s: ProcessRuntime("daemon"), "docker": lambda s, b=backend: DockerRuntime(image=images[b])}
            gateway = Gateway(state_dir, runtimes, policy=LOOPBACK_POLICY)
            specs = [SessionSpec.build(uid=str(uuid.uuid4()), role="PROD", num_conn=1, listener_ip="127.0.0.1",
                                       port_range="%d-%d" % (port, port + 99), targets=["127.0.0.1:34992"],
                                       backend=backend, runtime=runtime_name, psk="m" * 32)
                     for dummy in range(per_kind)]
            port += 100
            try:
                failures = [o.error for o in gateway.apply(specs) if o.error]
                if failures:
                    raise RuntimeError(failures[0])
                time.sleep(2)  # idle
                totals = []
                for spec in specs:
                    if runtime_name == "process":
                        # The master names the run dir; its workers share its process group.
                        pids = set(pids_matching(gateway.store.run_dir(spec.uid) + "/"))
                        with open(os.path.join(gateway.store.run_dir(spec.uid), "proxy", "proxy.pid"), encoding="ascii") as handle:
                            pids |= set(processes_in_group(int(handle.read().split()[0])))
                        pids = sorted(pids)
                        shim = []
                    else:
                        import docker  # pylint: disable=import-outside-toplevel
                        container = docker.from_env().containers.get("scistream-%s-prod-%s" % (backend, spec.uid))
                        pids = container_pids(container.id)
                        shim = [p for p in pids if b"containerd-shim" in open("/proc/%d/cmdline" % p, "rb").read()]
                    memory = [proc_memory(p) for p in pids]
                    totals.append((len(pids), sum(m[0] for m in memory), sum(m[1] for m in memory),
                                   sum(proc_memory(p)[0] for p in shim)))
                lines.append("| %s | %s | %d | %s | %s | %s | <= 25 |" % (
                    backend, runtime_name, totals[0][0], median_range([t[1] / 2 ** 20 for t in totals]),
                    median_range([t[2] / 2 ** 20 for t in totals]),
                    median_range([t[3] / 2 ** 20 for t in totals]) if runtime_name == "docker" else "-"))
            finally:
                gateway.apply([Release(s.uid) for s in specs])
                shutil.rmtree(state_dir, ignore_errors=True)
    return "\n".join(lines)


# -- 4. many gateways -------------------------------------------------------------------
def docker(*args, check=True):
    return subprocess.run(["docker"] + list(args), capture_output=True, text=True, timeout=300, check=check).stdout


def start_gateways(count, network):
    names = ["ssscale-gw-%d" % i for i in range(count)] + ["ssscale-gw-cons"]
    for name in names:
        docker("run", "-d", "--name", name, "--network", network, "--cap-add", "SYS_ADMIN",
               "--security-opt", "seccomp=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
               "--tmpfs", "/run", "--tmpfs", "/run/lock", "--cgroupns", "host", "--label", "org.scistream.bench=scale",
               SYSTEMD_IMAGE)
    deadline = time.monotonic() + 90
    for name in names:
        while docker("exec", name, "systemctl", "is-system-running", check=False).strip() not in ("running", "degraded"):
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not boot" % name)
            time.sleep(0.5)
    return names


def gateway_inventory(directory, names, network):
    addresses = {name: json.loads(docker("inspect", name))[0]["NetworkSettings"]["Networks"][network]["IPAddress"]
                 for name in names}
    consumer = names[-1]
    streams = [{"name": "from-%s" % name, "uid": str(uuid.uuid4()), "producer_gateway": name,
                "consumer_gateway": consumer, "producer_targets": ["127.0.0.1:34993"], "num_conn": 1}
               for name in names[:-1]]
    hosts = {name: {"ansible_connection": "community.docker.docker", "ansible_host": name,
                    "scistream_wan_address": addresses[name], "scistream_lan_address": addresses[name]}
             for name in names}
    group_vars = {"ansible_python_interpreter": "/usr/bin/python3", "ansible_become": False,
                  "scistream_gateway_runtime": "process", "scistream_gateway_backends": ["haproxy"],
                  "scistream_gateway_tune_kernel": False, "scistream_gateway_port_range": "33000-33099",
                  "scistream_streams": streams}
    path = os.path.join(directory, "inventory.yml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"all": {"children": {"scistream_gateways": {"hosts": hosts, "vars": group_vars}}}}, handle)
    return path


def gateway_runs(pairs, variants):
    """deploy + stream times per (count, forks) variant, the variants alternated within each pair."""
    network = "ssscale-bench-net"
    times = {v: [] for v in variants}
    docker("network", "create", network, check=False)
    try:
        for dummy in range(pairs):
            for count, forks in variants:
                directory = tempfile.mkdtemp(prefix="ssscale-gws-")
                names = []
                try:
                    names = start_gateways(count, network)
                    inventory = gateway_inventory(directory, names, network)
                    deploy = playbook(os.path.join(PLAYBOOKS, "deploy.yml"), inventory, "-f", str(forks))
                    stream = playbook(os.path.join(PLAYBOOKS, "stream.yml"), inventory, "-f", str(forks))
                    times[(count, forks)].append((deploy, stream))
                finally:
                    for name in names or ["ssscale-gw-%d" % i for i in range(count)] + ["ssscale-gw-cons"]:
                        docker("rm", "-f", name, check=False)
                    shutil.rmtree(directory, ignore_errors=True)
    finally:
        docker("network", "rm", network, check=False)
    return times


def bench_forks(pairs, count=8):
    """8 gateways with Ansible's default forks (5) against forks 16."""
    times = gateway_runs(pairs, [(count, 5), (count, 16)])
    few = [d + s for d, s in times[(count, 5)]]
    many = [d + s for d, s in times[(count, 16)]]
    return "\n".join([
        "| %d producer gateways (+1 consumer) | forks 5 s | forks 16 s | ratio 5 / 16 |" % count, "|---|---|---|---|",
        "| deploy + stream | %s | %s | %s |" % (
            median_range(few), median_range(many), median_range([a / b for a, b in zip(few, many)]))])


def bench_gateways(pairs, counts=(1, 4, 8), forks=16):
    times = gateway_runs(pairs, [(n, forks) for n in counts])
    times = {count: times[(count, forks)] for count in counts}
    base = [d + s for d, s in times[counts[0]]]
    lines = ["| producer gateways (+1 consumer) | deploy s | stream s | deploy + stream s | ratio to %d | goal |" % counts[0],
             "|---|---|---|---|---|---|"]
    for count in counts:
        total = [d + s for d, s in times[count]]
        lines.append("| %d | %s | %s | %s | %s | %s |" % (
            count, median_range([d for d, s in times[count]]), median_range([s for d, s in times[count]]),
            median_range(total), median_range([t / b for t, b in zip(total, base)]), "<= 2x" if count == counts[-1] else ""))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--only", default="streams,info,memory,gateways", help="any of streams,info,memory,gateways,forks")
    parser.add_argument("--streams", type=int, default=100)
    args = parser.parse_args()
    only = args.only.split(",")
    with open("/proc/loadavg", encoding="ascii") as handle:
        print("load average at start: %s" % " ".join(handle.read().split()[:3]))
    if "streams" in only:
        print("\n## Streams: 1 vs %d through stream.yml / release.yml\n" % args.streams)
        print(bench_streams(args.pairs, args.streams), flush=True)
    if "info" in only:
        print("\n## s2ds_info: 1 vs 200 sessions\n")
        print(bench_info(args.pairs), flush=True)
    if "memory" in only:
        print("\n## Memory per idle session\n")
        print(bench_memory(), flush=True)
    if "forks" in only:
        print("\n## Gateways: forks 5 vs 16\n")
        print(bench_forks(args.pairs), flush=True)
    if "gateways" in only:
        print("\n## Gateways: deploy + stream over 1, 4, 8\n")
        print(bench_gateways(args.pairs), flush=True)
    with open("/proc/loadavg", encoding="ascii") as handle:
        print("\nload average at end: %s" % " ".join(handle.read().split()[:3]))


if __name__ == "__main__":
    main()
