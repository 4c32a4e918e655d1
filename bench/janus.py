# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What running a proxy through the real Janus controller costs, against the docker runtime.

One HAProxy PROD session (one listener, -> an iperf3 server on loopback),
through the core (Gateway.present / absent, no Ansible), alternating the
docker runtime (baseline) and the janus runtime (janus-dtnaas 1.1 with the
Portainer-API stand-in, tests/janus_real.py) in pairs (bench/pairs.py):

* setup: a new session until its listener listens;
* change: a changed target applied (docker: SIGUSR2 to the container; janus:
  stop and start of the same container through Janus);
* release;
* throughput of the running proxy, iperf3 single stream (both containers
  use the host network, so the data path should not differ).

Run under ``flock /tmp/scistream-heavy.lock``; ports 44400-44599.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".build"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

# pylint: disable=wrong-import-position
from janus_real import PROFILE_DIR, RealJanus, pick_port  # noqa: E402  (tests/janus_real.py)
from pairs import Pairs  # noqa: E402  (bench/pairs.py)
from run import iperf, iperf_server  # noqa: E402  (bench/run.py)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.janus import JanusRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec  # noqa: E402

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

IMAGE = "scistream/haproxy:local"
IPERF_PORTS = (44400, 44401)
PORT_RANGE = "44500-44599"


def timed(action):
    start = time.monotonic()
    action()
    return time.monotonic() - start


class Bench:
    def __init__(self, workdir):
        self.state_dir = os.path.join(workdir, "node")
        profiles = os.path.join(workdir, "profiles")
        os.makedirs(profiles)
        with open(os.path.join(PROFILE_DIR, "scistream.yml"), encoding="utf-8") as handle:
            text = handle.read().replace("source: /var/lib/scistream/janus/session",
                                         "source: " + os.path.join(self.state_dir, "janus", "session"))
        with open(os.path.join(profiles, "scistream.yml"), "w", encoding="utf-8") as handle:
            handle.write(text)
        self.janus = RealJanus(workdir, pick_port(44402, 44450), pick_port(44451, 44499), profile_dir=profiles).start()
        runtimes = {
            "docker": lambda spec: DockerRuntime(image=IMAGE),
            "janus": lambda spec: JanusRuntime(url=self.janus.url, user=self.janus.user, password=self.janus.password,
                                               node="dtn-a", profile="scistream", image=IMAGE),
        }
        self.gateway = Gateway(self.state_dir, runtimes, policy=LOOPBACK_POLICY)
        self.uids = {}

    def spec(self, runtime, target_port):
        return SessionSpec.build(uid=self.uids[runtime], role="PROD", num_conn=1, listener_ip="127.0.0.1",
                                 port_range=PORT_RANGE, targets=["127.0.0.1:%d" % target_port], runtime=runtime)

    def setup(self, runtime):
        self.uids[runtime] = str(uuid.uuid4())
        return timed(lambda: self.gateway.present(self.spec(runtime, IPERF_PORTS[0])))

    def change(self, runtime):
        return timed(lambda: self.gateway.present(self.spec(runtime, IPERF_PORTS[1])))

    def listener(self, runtime):
        return self.gateway.store.load(self.uids[runtime]).ports[0]

    def release(self, runtime):
        return timed(lambda: self.gateway.absent(self.uids[runtime]))

    def close(self):
        for uid in list(self.uids.values()):
            try:
                self.gateway.absent(uid)
            except Exception:  # pylint: disable=broad-exception-caught
                pass
        self.janus.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="janus-bench-")
    bench = Bench(workdir)
    samples = {"setup": [], "change": [], "release": []}
    try:
        throughput = []
        with iperf_server("127.0.0.1", IPERF_PORTS[1]):
            for dummy in range(args.pairs):
                pair = {}
                for runtime in ("docker", "janus"):
                    pair[runtime] = [bench.setup(runtime), bench.change(runtime)]
                throughput.append((iperf("127.0.0.1", bench.listener("docker"), args.seconds, 1),
                                   iperf("127.0.0.1", bench.listener("janus"), args.seconds, 1)))
                for runtime in ("docker", "janus"):
                    pair[runtime].append(bench.release(runtime))
                for index, name in enumerate(("setup", "change", "release")):
                    samples[name].append((pair["docker"][index], pair["janus"][index]))
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print("## Janus runtime (`bench/janus.py`, %s, load average %.1f)\n" % (
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), os.getloadavg()[0]))
    print("| step (one HAProxy PROD session) | docker runtime | janus runtime | janus / docker (range) |")
    print("|---|---|---|---|")
    for name, unit in (("setup", "s"), ("change", "s"), ("release", "s")):
        pairs = Pairs(samples[name])
        print("| %s | %.2f %s | %.2f %s | %s |" % (name, pairs.baseline, unit, pairs.path, unit, pairs.cell()))
    pairs = Pairs(throughput)
    print("| throughput, 1 stream | %.1f Gbit/s | %.1f Gbit/s | %s |" % (pairs.baseline, pairs.path, pairs.cell()))


if __name__ == "__main__":
    main()
