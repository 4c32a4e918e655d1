# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""scistream-exporter: serves the gateway's sessions on ``/metrics`` in Prometheus' text format.

    python3 -m ansible_collections.scistream.gateway.plugins.module_utils.exporter.server \\
        --state_dir /var/lib/scistream --web.listen-address 127.0.0.1:9787 [--web.config.file web.yml]

Built on prometheus_client (its collector and text encoder) and the
standard library's threading HTTP server, so it runs on the distribution's
Python (Debian: python3-prometheus-client, python3-nftables for the
counters, python3-docker for container sessions). It listens on loopback
unless told otherwise; TLS and basic auth follow the exporter-toolkit web
config (:mod:`.web`). Each scrape reads the sessions afresh through
``Gateway.sessions()``: nothing is cached between scrapes but the log
offsets of the proxies' reports.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    HAS_PROMETHEUS_CLIENT = True
except ImportError:  # reported by main()
    HAS_PROMETHEUS_CLIENT = False

from ..s2ds.errors import S2DSError
from ..s2ds.runtimes.registry import make_gateway
from ..s2ds.untrusted import escape
from .web import (DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PER_PEER, DEFAULT_REQUEST_DEADLINE, DEFAULT_WORKERS,
                  MetricsHTTPServer, WebConfig, WebConfigError, load_web_config, metrics_handler)

LOG = logging.getLogger("scistream.exporter")
DEFAULT_ADDRESS = "127.0.0.1:9787"


def build_gateway(state_dir, process_supervisor="auto"):
    """A Gateway over ``state_dir`` that reads every local runtime (process, docker, kernel; registry.make_gateway).

    A runtime that cannot be built here (no Docker SDK, no nftables binding,
    Janus: its sessions live on the Janus node) raises S2DSError for its
    own sessions only, which are then reported not up, with their error.
    """

    def janus_runtime(session):
        raise S2DSError("session %s runs on a Janus node: scrape that node's exporter" % session.uid,
                        field="runtime", value="janus")

    gateway = make_gateway(state_dir, dict(process_supervisor=process_supervisor), runtimes=("process", "docker", "kernel"))
    gateway.runtimes["janus"] = janus_runtime
    return gateway


def split_address(text):
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError naming the value."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("--web.listen-address %r: must be host:port" % text)
    return host.strip("[]") or "127.0.0.1", int(port)


def make_handler(registry, web):
    """The request handler: GET /metrics (and / for a pointer), basic auth where configured."""
    return metrics_handler(lambda: (generate_latest(registry), CONTENT_TYPE_LATEST), web)


def ExporterServer(address, handler, tls_context=None, **limits):  # noqa: N802 (kept for its callers)
    """The exporter's HTTP(S) server: the collection's bounded metrics server (:class:`.web.MetricsHTTPServer`)."""
    return MetricsHTTPServer(address, handler, tls_context, **limits)


def parser():
    p = argparse.ArgumentParser(prog="scistream-exporter", fromfile_prefix_chars="@",
                                description="Prometheus exporter for the sessions of a SciStream gateway. "
                                            "@FILE reads options from FILE, one per line.")
    p.add_argument("--state_dir", default="/var/lib/scistream", help="the gateway's state dir (default %(default)s)")
    p.add_argument("--web.listen-address", dest="address", default=DEFAULT_ADDRESS,
                   help="host:port to listen on (default %(default)s, loopback)")
    p.add_argument("--web.config.file", dest="web_config",
                   help="exporter-toolkit web config: tls_server_config, basic_auth_users (bcrypt)")
    p.add_argument("--process_supervisor", default="auto", choices=["auto", "systemd", "daemon"])
    p.add_argument("--pid_file", help="write the exporter's pid here once it listens")
    p.add_argument("--log_file", help="log here instead of stderr")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.add_argument("--web.max-connections", dest="max_connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                   help="connections open at once; at the cap the address holding most gives way (default %(default)s)")
    p.add_argument("--web.max-connections-per-peer", dest="max_per_peer", type=int, default=DEFAULT_MAX_PER_PEER,
                   help="connections open at once per client address (default %(default)s)")
    p.add_argument("--web.request-deadline", dest="request_deadline", type=float, default=DEFAULT_REQUEST_DEADLINE,
                   help="seconds from accept to a complete request (TLS handshake and headers), and again for the "
                        "answer (default %(default)s)")
    p.add_argument("--web.workers", dest="workers", type=int, default=DEFAULT_WORKERS,
                   help="threads answering complete requests (default %(default)s)")
    p.add_argument("--expire_interval", type=float, default=0.0,
                   help="every this many seconds, release the sessions past their lifetime or idle timeout, as the "
                        "control server's loop does (for gateways without one; 1-300, default 0: off)")
    return p


def expire_loop(gateway, interval, stop):
    """``gateway.expire()`` every ``interval`` seconds until ``stop`` (an Event) is set; logs what it released."""
    while not stop.wait(interval):
        try:
            released = gateway.expire()
        except Exception:  # pylint: disable=broad-exception-caught
            LOG.exception("expiring sessions failed")
            continue
        for entry in released:
            if entry.get("error"):
                LOG.error("session %s expired (%s) but its release failed: %s", entry["uid"], entry["reason"],
                          escape(entry["error"]))
            else:
                LOG.info("session %s expired (%s): released, ports %s freed", entry["uid"], entry["reason"],
                         ",".join(str(port) for port in entry["ports"]))


def web_limits(args):
    """The HTTP server's bounds from the options (each at least 1, the deadline a positive finite number)."""
    limits = {name: getattr(args, name, default) for name, default in (
        ("workers", DEFAULT_WORKERS), ("max_connections", DEFAULT_MAX_CONNECTIONS),
        ("max_per_peer", DEFAULT_MAX_PER_PEER), ("request_deadline", DEFAULT_REQUEST_DEADLINE))}
    for name, value in limits.items():
        if not (not math.isnan(value) and 0 < value < float("inf")) or (name != "request_deadline" and value < 1):
            raise SystemExit("--web.%s %r: must be a positive number" % (name.replace("_", "-"), value))
    return limits


def serve(args, ready=None):
    """Serve until SIGTERM / SIGINT; ``ready`` (an Event) is set once it listens."""
    try:
        host, port = split_address(args.address)
        web = load_web_config(args.web_config) if args.web_config else WebConfig()
    except (ValueError, WebConfigError) as exc:
        raise SystemExit(str(exc)) from None
    interval = getattr(args, "expire_interval", 0.0)
    if interval and not (math.isfinite(interval) and 1 <= interval <= 300):
        raise SystemExit("--expire_interval %r: must be 0 (off) or between 1 and 300 seconds" % interval)
    registry = CollectorRegistry(auto_describe=False)
    from .collector import SessionCollector  # pylint: disable=import-outside-toplevel
    gateway = build_gateway(args.state_dir, args.process_supervisor)
    registry.register(SessionCollector(gateway))
    try:
        server = ExporterServer((host, port), make_handler(registry, web), web.tls_context,
                                **web_limits(args))
    except OSError as exc:
        raise SystemExit("cannot listen on %s: %s" % (args.address, exc.strerror)) from None
    LOG.info("scistream-exporter on %s://%s/metrics (basic auth %s), state %s",
             "https" if web.tls_context else "http", args.address, "on" if web.auth_required else "off",
             args.state_dir)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *a: threading.Thread(target=server.shutdown, daemon=True).start())
    if args.pid_file:
        with open(args.pid_file, "w", encoding="ascii") as handle:
            handle.write("%d\n" % os.getpid())
    stop_expiring = threading.Event()
    if interval:
        threading.Thread(target=expire_loop, args=(gateway, interval, stop_expiring), name="expire",
                         daemon=True).start()
        LOG.info("releasing expired sessions every %gs", interval)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        stop_expiring.set()
        server.server_close()
        if args.pid_file and os.path.exists(args.pid_file):
            os.unlink(args.pid_file)


def main(argv=None):
    args = parser().parse_args(argv)
    where = {"filename": args.log_file} if args.log_file else {"stream": sys.stderr}
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", **where)
    LOG.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not HAS_PROMETHEUS_CLIENT:
        raise SystemExit("scistream-exporter needs prometheus_client (Debian: python3-prometheus-client)")
    serve(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
