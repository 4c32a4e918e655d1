# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Session rates through two gateways in network namespaces: how close the rate got is to the rate asked.

    flock /tmp/scistream-heavy.lock .venv/bin/python bench/rate.py [--seconds 3] [--pairs 3] [--only ...]

Four namespaces (tests/netns.py, prefix ssr, 10.97.91-93.0/24): consumer, gateway B, gateway A, producer;
each session is PROD on A (to the producer's iperf3 server) and CONS on B (to A), both with the rate, each
gateway shaping its own egress toward the consumer (tests/ratepath.py). iperf3 runs reversed (``-R``: the
producer sends, as a SciStream producer does) and reports what the consumer received (payload bits).

1. **achieved / asked** at 100 Mbit/s, 1 Gbit/s and 5 Gbit/s, HAProxy (process) and nftables (kernel);
   median of the pairs (asked, achieved) with its range (bench/pairs.py).
2. **two streams of different rates on one gateway** at once: each one's achieved / asked.
3. **overhead of shaping that does not bind**: the same session unshaped (baseline) and with a rate far above
   what the path reaches (30 Gbit/s), alternated (the session's rate changed in place between samples).
4. **Jain fairness of 4 equal streams of one capped identity**: per-identity caps are admission limits (the
   control server gives each session its share, docs/rates.md), so 4 sessions of 250Mbit (an identity capped at
   1Gbit) run at once; Jain's index (sum x)^2 / (n sum x^2) of what each got, and their sum against the cap.

Not a test: nothing is asserted. Ports 49300-49499 (iperf3 49301-49304, sessions 49310-49479).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

# pylint: disable=wrong-import-position
import netns  # noqa: E402  (tests/netns.py)
import ratepath  # noqa: E402  (tests/ratepath.py)
from pairs import alternate, loadavg  # noqa: E402  (bench/pairs.py)

IPERF_PORT = 49301
PATHS = (("haproxy", "process"), ("nftables", "kernel"))
RATES = (("100Mbit", 100e6), ("1Gbit", 1e9), ("5Gbit", 5e9))


class Iperf:
    """An iperf3 server in the producer's namespace (several: one per port)."""

    def __init__(self, topo, ports):
        self.procs = [topo.popen("p", "iperf3", "-s", "-B", topo.producer, "-p", str(port),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
        time.sleep(0.5)

    def close(self):
        for proc in self.procs:
            proc.terminate()
            proc.wait(10)


def iperf_args(topo, port, seconds):
    return ["iperf3", "-c", topo.b_lan, "-p", str(port), "-t", str(seconds), "-R", "-J", "-O", "1"]


def received(out):
    data = json.loads(out or "{}")
    if "error" in data or "end" not in data:
        raise RuntimeError(data.get("error", "no result"))
    return data["end"]["sum_received"]["bits_per_second"]


def measure(topo, port, seconds):
    """Bits per second the consumer received through B's listener ``port`` (one reversed iperf3 run)."""
    for attempt in range(3):
        out = topo.sh("c", *iperf_args(topo, port, seconds), check=False, timeout=seconds + 30)
        try:
            return received(out.stdout)
        except (RuntimeError, ValueError):
            time.sleep(1 + attempt)  # "the server is busy" right after the previous run
    raise RuntimeError(out.stdout[-500:] + out.stderr[-500:])


def at_once(topo, ports, seconds):
    procs = [topo.popen("c", *iperf_args(topo, port, seconds), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True) for port in ports]
    return [received(proc.communicate(timeout=seconds + 30)[0]) for proc in procs]


def bench_rates(topo, workdir, args):
    lines = ["achieved / asked, one session through both gateways (payload bits received by the consumer):", "",
             "| path | runtime | asked | achieved Mbit/s (median) | achieved / asked (range) |", "|---|---|---|---|---|"]
    block = 49310
    for backend, runtime in PATHS:
        for text, bits in RATES:
            try:
                with ratepath.chain(topo, workdir, backend, runtime, text, IPERF_PORT, (block, block + 9)) as session:
                    pairs = alternate(lambda bits=bits: bits, lambda: measure(topo, session.port, args.seconds),
                                      args.pairs)
                lines.append("| %s | %s | %s | %.0f | %s |" % (backend, runtime, text, pairs.path / 1e6, pairs.cell(3)))
            except Exception as exc:  # pylint: disable=broad-exception-caught
                lines.append("| %s | %s | %s | failed: %s | |" % (backend, runtime, text, str(exc)[:200]))
            print(lines[-1], file=sys.stderr, flush=True)
            block += 10
    return lines


def bench_two(topo, workdir, args):
    lines = ["Two sessions of different rates on the same gateways at once (HAProxy, process):", "",
             "| session | asked | achieved Mbit/s (median of %d runs) | achieved / asked (range) |" % args.pairs,
             "|---|---|---|---|"]
    first = ratepath.Chain(topo, workdir, "haproxy", "process", "200Mbit", IPERF_PORT, (49400, 49409))
    second = ratepath.Chain(topo, workdir, "haproxy", "process", "600Mbit", IPERF_PORT + 1, (49410, 49419))
    try:
        first.present()
        second.present()
        runs = [at_once(topo, [first.port, second.port], args.seconds) for dummy in range(args.pairs)]
        for index, (name, bits) in enumerate((("200Mbit", 200e6), ("600Mbit", 600e6))):
            ratios = sorted(run[index] / bits for run in runs)
            achieved = sorted(run[index] for run in runs)[len(runs) // 2]
            lines.append("| %s | %s | %.0f | %.3f (%.3f-%.3f) |" % (
                "first" if index == 0 else "second", name, achieved / 1e6, ratios[len(ratios) // 2], ratios[0],
                ratios[-1]))
    finally:
        first.absent()
        second.absent()
    return lines


def bench_fairness(topo, workdir, args):
    lines = ["4 sessions of one identity capped at 1Gbit (250Mbit each, HAProxy, process), at once:", "",
             "| run | per session Mbit/s | sum / cap | Jain index |", "|---|---|---|---|"]
    sessions = [ratepath.Chain(topo, workdir, "haproxy", "process", "250Mbit", IPERF_PORT + i,
                               (49440 + 10 * i, 49449 + 10 * i)) for i in range(4)]
    try:
        for session in sessions:
            session.present()
        for run in range(args.pairs):
            got = at_once(topo, [session.port for session in sessions], args.seconds)
            jain = sum(got) ** 2 / (len(got) * sum(x * x for x in got))
            lines.append("| %d | %s | %.3f | %.4f |" % (run + 1, ", ".join("%.0f" % (x / 1e6) for x in got),
                                                        sum(got) / 1e9, jain))
    finally:
        for session in sessions:
            session.absent()
    return lines


def bench_overhead(topo, workdir, args):
    lines = ["Shaping configured but not binding (30Gbit) vs the same session unshaped, alternated:", "",
             "| path | runtime | unshaped Gbit/s | shaped, not binding, Gbit/s | ratio (range) |", "|---|---|---|---|---|"]
    block = 49420
    for backend, runtime in PATHS:
        session = ratepath.Chain(topo, workdir, backend, runtime, None, IPERF_PORT, (block, block + 9))
        try:
            session.present()

            def unshaped(session=session):
                session.present(rate="0bit")
                return measure(topo, session.port, args.seconds)

            def shaped(session=session):
                session.present(rate="30Gbit")
                return measure(topo, session.port, args.seconds)

            pairs = alternate(unshaped, shaped, args.pairs)
            lines.append("| %s | %s | %.2f | %.2f | %s |" % (backend, runtime, pairs.baseline / 1e9, pairs.path / 1e9,
                                                             pairs.cell()))
        except Exception as exc:  # pylint: disable=broad-exception-caught
            lines.append("| %s | %s | failed: %s | | |" % (backend, runtime, str(exc)[:200]))
        finally:
            session.absent()
        print(lines[-1], file=sys.stderr, flush=True)
        block += 10
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=3, help="length of one iperf3 run")
    parser.add_argument("--pairs", type=int, default=3, help="pairs per ratio (>= 3)")
    parser.add_argument("--only", default="rates,two,overhead,fairness")
    args = parser.parse_args()
    reason = netns.available()
    if reason:
        raise SystemExit("bench/rate.py " + reason)
    topo = netns.Topology("q", net=91, prefix="ssr")
    workdir = tempfile.mkdtemp(prefix="ssr-bench-")
    print("# scistream.gateway rate bench, %s, %d cores, loadavg %s, %d pairs of %d s\n" % (
        time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), loadavg(), args.pairs, args.seconds), flush=True)
    servers = None
    try:
        topo.create()
        servers = Iperf(topo, [IPERF_PORT + i for i in range(4)])
        for name, func in (("rates", bench_rates), ("two", bench_two), ("overhead", bench_overhead),
                           ("fairness", bench_fairness)):
            if name in args.only:
                print("\n".join(func(topo, workdir, args)) + "\n", flush=True)
    finally:
        if servers is not None:
            servers.close()
        topo.destroy()
        print("loadavg at the end: %s" % loadavg())


if __name__ == "__main__":
    main()
