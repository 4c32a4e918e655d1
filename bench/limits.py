# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What hostile clients cost a behaving one, with the servers' default limits.

    flock /tmp/scistream-heavy.lock timeout 900 .venv/bin/python bench/limits.py [--pairs 5] [--only idle,release,pending,slowloris]

The behaving S2CS client does what stream_request does for one side: a new
TLS channel, req + hello, release (median of 5 such streams is one sample).
Its quiet time and its time beside the attack alternate (bench/pairs.py),
the attack set up afresh for each path sample:

* ``idle``: 1,100 TCP connections to the control port from 127.0.0.2-9 that
  never send a byte; the server starts with a soft open-file limit of 1,024
  (what a unit without LimitNOFILE gets) and raises it itself;
* ``release``: 3,000 ``release`` calls of made-up uids, fired at once from
  127.0.0.2 (through a relay bound to that address);
* ``pending``: 200 reqs that never say hello, 25 from each of 127.0.0.2-9
  (relays); the defaults let 16 wait per address;
* ``slowloris``: the exporter (/usr/bin/python3, basic auth on), its
  scrape's time alone and beside ~1,000 connections from 127.0.0.2-9 that
  send a header line a second and never finish.

Ports 46210-46299 on loopback only; every wait is bounded. Not a test:
nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import os
import pathlib
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".build"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

# pylint: disable=wrong-import-position
import grpc  # noqa: E402
from pairs import alternate  # noqa: E402
from s2cs_real import BUILD, Server, client_request, make_pki, sessions  # noqa: E402

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs import protocol  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import ControlClient  # noqa: E402

TARGET = "127.0.0.1:9"
CONTROL_PORT = 46210
PORT_RANGE = "46230-46299"
RELAY_PORTS = range(46211, 46219)
EXPORTER_PORT = 46220
ATTACKERS = ["127.0.0.%d" % n for n in range(2, 10)]


def behaving(server):
    """Median seconds of 5 streams (new channel, req + hello, release) of a client that behaves."""
    times = []
    for dummy in range(5):
        uid = str(uuid.uuid4())
        start = time.perf_counter()
        with ControlClient(server.address, ca_path=server.pki["ca.crt"], timeout=30) as client:
            client.request(uid, "PROD", 1, [TARGET])
            client.release(uid)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Relays:
    """TCP relays on 127.0.0.1:RELAY_PORTS[i] that reach ``port`` from ATTACKERS[i] (a hostile client's addresses)."""

    def __init__(self, port):
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        for source, port in zip(ATTACKERS, RELAY_PORTS):
            self.loop.run_until_complete(asyncio.start_server(
                lambda r, w, s=source: self._relay(r, w, s), "127.0.0.1", port))
        self.ready.set()
        self.loop.run_forever()

    async def _relay(self, reader, writer, source):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))
        except OSError:
            writer.close()
            return

        async def pipe(src, dst):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def address(self, index):
        return "127.0.0.1:%d" % RELAY_PORTS[index]

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def hostile_stub(server, address):
    channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(open(server.pki["ca.crt"], "rb").read()),
                                  options=(("grpc.ssl_target_name_override", "127.0.0.1"),))
    return channel, protocol.ControlStub(channel)


# -- the attacks ---------------------------------------------------------------
def beside_idle(server, count=1100):
    socks = []
    for index in range(count):
        sock = socket.socket()
        sock.bind((ATTACKERS[index % len(ATTACKERS)], 0))
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", CONTROL_PORT))
            socks.append(sock)
        except OSError:
            sock.close()
    STATS.setdefault("idle_open", []).append(len(socks))
    try:
        return behaving(server)
    finally:
        for sock in socks:
            sock.close()


def beside_releases(server, relays, count=3000):
    channel, stub = hostile_stub(server, relays.address(0))
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        calls = [stub.release.future(protocol.Release(uid=str(uuid.uuid4())), timeout=60) for dummy in range(count)]
        time.sleep(0.05)
        seconds = behaving(server)
        codes = {}
        for call in calls:
            try:
                call.result()
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            codes[code] = codes.get(code, 0) + 1
        STATS.setdefault("release_codes", []).append(codes)
        return seconds
    finally:
        channel.close()


def beside_pending(server, relays, count=200):
    channels, calls = [], []
    try:
        for index in range(len(ATTACKERS)):
            channel, stub = hostile_stub(server, relays.address(index))
            grpc.channel_ready_future(channel).result(timeout=10)
            channels.append(channel)
            calls += [stub.req.future(client_request(str(uuid.uuid4()), "PROD", 1), timeout=120)
                      for dummy in range(count // len(ATTACKERS))]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(1 for c in calls if not c.done()) > len(sessions(server.state_dir)):
            time.sleep(0.05)
        STATS.setdefault("pending_waiting", []).append(sum(1 for c in calls if not c.done()))
        return behaving(server)
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            channel.close()
        deadline = time.monotonic() + 60
        while sessions(server.state_dir) and time.monotonic() < deadline:
            time.sleep(0.05)


STATS = {}


def scrape(auth):
    times = []
    for dummy in range(5):
        request = urllib.request.Request("http://127.0.0.1:%d/metrics" % EXPORTER_PORT, headers=auth)
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def beside_slowloris(auth, count=1000):
    socks = []
    for index in range(count):
        sock = socket.socket()
        sock.bind((ATTACKERS[index % len(ATTACKERS)], 0))
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", EXPORTER_PORT))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        except OSError:
            sock.close()
    stop = threading.Event()

    def drip():  # a header line a second on every connection still open
        while not stop.wait(1):
            for sock in socks:
                try:
                    sock.send(b"X-a: b\r\n")
                except OSError:
                    pass

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        time.sleep(1.5)
        return scrape(auth)
    finally:
        stop.set()
        dripper.join(10)
        for sock in socks:
            sock.close()


def summary(values):
    return "%.3f (%.3f-%.3f)" % (statistics.median(values), min(values), max(values))


def row(name, result):
    delays = [path - base for base, path in result.samples]
    print("| %s | %s |" % (name, result.samples), flush=True)
    return "| %s | %s | %s | %s | %s |" % (name, summary([b for b, d in result.samples]),
                                           summary([p for d, p in result.samples]), summary(delays), result.cell())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--only", default="idle,release,pending,slowloris")
    parser.add_argument("--verbose", action="store_true",
                        help="run the S2CS with --verbose (a log line per call), as the tests do")
    args = parser.parse_args()
    only = args.only.split(",")
    rows = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with tempfile.TemporaryDirectory(prefix="s2cs-limits-bench-") as tmp:
        pki = make_pki(pathlib.Path(tmp))
        if set(only) & {"idle", "release", "pending"}:
            # The server inherits 1,024 descriptors (soft), as from a unit without LimitNOFILE; this process then
            # takes its own back up for the attack's sockets.
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
            # 8 addresses x 16 pending (the default per identity) would hold 128 ports, more than this bench's
            # 70: with authentication off nothing tells those addresses from a behaving one, so the port range
            # runs out (the finding). Here 8 per address, to measure the cost of waiting calls.
            server = Server(pki, os.path.join(tmp, "gw"), CONTROL_PORT, PORT_RANGE,
                            extra=["--max_pending_per_identity", "8"], start=False)
            if not args.verbose:  # the tests' servers log every call; a deployed one does not (the role's default)
                server.argv.remove("--verbose")
            server.start()
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            relays = Relays(CONTROL_PORT)
            try:
                with open("/proc/%d/limits" % server.pid, encoding="ascii") as handle:
                    STATS["server_nofile"] = [line.split()[3] for line in handle if line.startswith("Max open files")]
                behaving(server)  # warm-up
                if "idle" in only:
                    rows.append(row("1,100 idle TCP connections (8 addresses)",
                                    alternate(lambda: behaving(server), lambda: beside_idle(server), args.pairs)))
                if "release" in only:
                    rows.append(row("3,000 unknown-uid releases at once (1 address)",
                                    alternate(lambda: behaving(server), lambda: beside_releases(server, relays),
                                              args.pairs)))
                if "pending" in only:
                    rows.append(row("200 pending reqs (8 addresses x 25)",
                                    alternate(lambda: behaving(server), lambda: beside_pending(server, relays),
                                              args.pairs)))
            finally:
                relays.close()
                server.stop()
        if "slowloris" in only:
            import bcrypt  # pylint: disable=import-outside-toplevel
            web = os.path.join(tmp, "web.yml")
            with open(web, "w", encoding="utf-8") as handle:
                handle.write("basic_auth_users:\n  prometheus: '%s'\n" % bcrypt.hashpw(
                    b"scrape-secret", bcrypt.gensalt(rounds=6)).decode())
            state = os.path.join(tmp, "exporter-state")
            os.makedirs(state)
            exporter = subprocess.Popen(
                ["/usr/bin/python3", "-m", "ansible_collections.scistream.gateway.plugins.module_utils.exporter.server",
                 "--state_dir", state, "--web.listen-address", "127.0.0.1:%d" % EXPORTER_PORT,
                 "--web.config.file", web, "--process_supervisor", "daemon"],
                env=dict(os.environ, PYTHONPATH=BUILD), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            auth = {"Authorization": "Basic " + base64.b64encode(b"prometheus:scrape-secret").decode()}
            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    try:
                        scrape(auth)
                        break
                    except OSError:
                        time.sleep(0.2)
                rows.append(row("exporter scrape (basic auth) beside ~1,000 slowloris connections (8 addresses)",
                                alternate(lambda: scrape(auth), lambda: beside_slowloris(auth), args.pairs)))
            finally:
                exporter.terminate()
                exporter.wait(10)
    print("| attack | behaving client alone, s | beside the attack, s | delay, s | ratio |")
    print("|---|---|---|---|---|")
    for line in rows:
        print(line)
    print("\nmedian (min-max) over %d alternating pairs, %s; %s" % (
        args.pairs, datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), STATS))


if __name__ == "__main__":
    main()
