# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 15's two numbers: what counting costs, and how long a scrape of 200 sessions takes.

    flock /tmp/scistream-heavy.lock /usr/bin/python3 bench/metrics.py [--pairs 3] [--seconds 3]

Runs on the distribution's Python (its nftables binding keeps the counters;
prometheus_client from python3-prometheus-client), as root.

1. Throughput with counting on vs off, alternating pairs (bench/pairs.py):
   iperf3 straight over loopback with the server's port counted or not (the
   kernel's cost alone, nothing else in the way), and through a CONS and a
   PROD HAProxy session whose listeners are counted or not.
2. A scrape of 200 running sessions (HAProxy, process runtime, each counted,
   each with its stats socket): the exporter's /metrics over HTTP, median
   and range of 10 scrapes, and the time of ``Gateway.sessions()`` alone.

Ports 43200-43699 (the metrics block).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, ".build"))
sys.path.insert(0, HERE)

from pairs import alternate  # noqa: E402  (bench/pairs.py)
from run import iperf, iperf_server  # noqa: E402  (bench/run.py)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import counting  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway, Release  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord, SessionSpec  # noqa: E402

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

IPERF_PORT = 43290
EXPORTER_PORT = 43291
EXPORTER = "ansible_collections.scistream.gateway.plugins.module_utils.exporter.server"


def gateway(state_dir):
    return Gateway(state_dir, {"process": lambda s: ProcessRuntime("daemon")}, policy=LOOPBACK_POLICY)


def toggled(counter, record):
    """(off, on): functions that stop or start counting ``record``'s ports."""
    return (lambda: counter.remove(record.uid, record.role)), (lambda: counter.install(record))


def measured(switch, measure):
    def run():
        switch()
        return measure()
    return run


def bench_counting(args, workdir):
    counter = counting.shared_counter()
    rows = ["| path (iperf3, %d s, loopback) | streams | counting off Gbit/s | on Gbit/s | on / off |" % args.seconds,
            "|---|---|---|---|---|"]
    # 1. iperf3 straight to a counted port.
    direct = SessionRecord(uid=str(uuid.uuid4()), role="PROD", backend="haproxy", runtime="process",
                           listener_ip="127.0.0.1", ports=[IPERF_PORT], targets=["127.0.0.1:9"])
    off, on = toggled(counter, direct)
    with iperf_server("127.0.0.1", IPERF_PORT):
        for streams in (1, 4):
            result = alternate(measured(off, lambda: iperf("127.0.0.1", IPERF_PORT, args.seconds, streams)),
                               measured(on, lambda: iperf("127.0.0.1", IPERF_PORT, args.seconds, streams)),
                               args.pairs)
            rows.append("| direct, the server's port counted | %d | %.1f | %.1f | %s |" % (
                streams, result.baseline, result.path, result.cell()))
    off()
    # 2. Through two HAProxy hops (CONS -> PROD -> iperf3 server), both listeners counted or not.
    uid = str(uuid.uuid4())
    prod_gw, cons_gw = gateway(os.path.join(workdir, "a")), gateway(os.path.join(workdir, "b"))
    prod = prod_gw.present(SessionSpec.build(uid, "PROD", num_conn=1, listener_ip="127.0.0.1",
                                             port_range="43210-43219", targets=["127.0.0.1:%d" % IPERF_PORT]))
    cons = cons_gw.present(SessionSpec.build(uid, "CONS", num_conn=1, listener_ip="127.0.0.1",
                                             port_range="43220-43229", targets=prod.session["listeners"]))
    records = [prod_gw.store.load(uid), cons_gw.store.load(uid)]
    port = cons.session["ports"][0]
    try:
        with iperf_server("127.0.0.1", IPERF_PORT):
            for streams in (1, 4):
                def both_off():
                    for record in records:
                        counter.remove(record.uid, record.role)

                def both_on():
                    for record in records:
                        counter.install(record)
                result = alternate(measured(both_off, lambda: iperf("127.0.0.1", port, args.seconds, streams)),
                                   measured(both_on, lambda: iperf("127.0.0.1", port, args.seconds, streams)),
                                   args.pairs)
                rows.append("| two HAProxy hops, both listeners counted | %d | %.1f | %.1f | %s |" % (
                    streams, result.baseline, result.path, result.cell()))
    finally:
        cons_gw.absent(uid)
        prod_gw.absent(uid)
    return "\n".join(rows)


def median_range(values, digits=3):
    fmt = "%%.%df" % digits
    return ("%s (%s-%s)" % (fmt, fmt, fmt)) % (statistics.median(values), min(values), max(values))


def bench_scrape(args, workdir):
    state_dir = os.path.join(workdir, "scrape")
    gw = gateway(state_dir)
    specs = [SessionSpec.build(uid=str(uuid.uuid4()), role="PROD", num_conn=1, listener_ip="127.0.0.1",
                               port_range="43300-43599", targets=["127.0.0.1:9"]) for dummy in range(args.sessions)]
    started = time.monotonic()
    failures = [o.error for o in gw.apply(specs) if o.error]
    setup = time.monotonic() - started
    exporter = None
    try:
        if failures:
            raise RuntimeError(failures[0])
        sessions_times = []
        for dummy in range(10):
            begin = time.monotonic()
            listed = gw.sessions()
            sessions_times.append(time.monotonic() - begin)
        assert len(listed) == args.sessions and all(s["healthy"] and "traffic" in s for s in listed), listed[:1]
        exporter = subprocess.Popen([sys.executable, "-m", EXPORTER, "--state_dir", state_dir, "--process_supervisor",
                                     "daemon", "--web.listen-address", "127.0.0.1:%d" % EXPORTER_PORT],
                                    env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".build")),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = "http://127.0.0.1:%d/metrics" % EXPORTER_PORT
        for dummy in range(100):
            try:
                urllib.request.urlopen(url, timeout=5).read()  # noqa: S310 (loopback)
                break
            except OSError:
                time.sleep(0.1)
        scrape_times, size = [], 0
        for dummy in range(10):
            begin = time.monotonic()
            body = urllib.request.urlopen(url, timeout=10).read()  # noqa: S310 (loopback)
            scrape_times.append(time.monotonic() - begin)
            size = len(body)
        samples = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
        return "\n".join([
            "| %d running HAProxy sessions (process runtime, counted) | seconds: median (range) of 10 | goal |" % args.sessions,
            "|---|---|---|",
            "| GET /metrics from scistream-exporter (%d samples, %d kB) | %s | < 0.5 |" % (
                samples, size // 1024, median_range(scrape_times)),
            "| Gateway.sessions() alone | %s | |" % median_range(sessions_times),
            "| (setting up the %d sessions in one apply, once) | %.1f | |" % (args.sessions, setup),
        ])
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(10)
        gw.apply([Release(s.uid) for s in specs])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--only", choices=["counting", "scrape"])
    args = parser.parse_args()
    if not counting.shared_counter().available:
        raise SystemExit("counting is not available here: %s" % counting.shared_counter().reason)
    workdir = tempfile.mkdtemp(prefix="metrics-bench-")
    try:
        print("%s UTC, load average %s" % (datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
                                           open("/proc/loadavg", encoding="ascii").read().split()[0]))
        if args.only in (None, "counting"):
            print(bench_counting(args, workdir))
            print()
        if args.only in (None, "scrape"):
            print(bench_scrape(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
