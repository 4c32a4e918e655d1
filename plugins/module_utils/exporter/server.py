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
import http.server
import logging
import os
import signal
import socket
import ssl
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
from .web import WebConfig, WebConfigError, load_web_config

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

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "scistream-exporter"
        sys_version = ""

        def do_GET(self):  # noqa: N802 (the standard library's name)
            if not web.authorized(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="scistream-exporter"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, kind = generate_latest(registry), CONTENT_TYPE_LATEST
            elif path == "/":
                body, kind = b"scistream-exporter: metrics at /metrics\n", "text/plain; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # pylint: disable=arguments-differ
            LOG.debug("%s %s", self.address_string(), fmt % args)

    return Handler


class ExporterServer(http.server.ThreadingHTTPServer):
    """The HTTP(S) server; IPv6 where the address is one. Handler threads do not block shutdown."""

    daemon_threads = True
    request_queue_size = 16

    def __init__(self, address, handler, tls_context=None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.tls_context = tls_context
        super().__init__(address, handler)

    def get_request(self):
        """Accept; the TLS handshake happens later, in the request's own thread (a client that stalls
        in it holds that thread for the timeout, never the accept loop)."""
        sock, address = super().get_request()
        sock.settimeout(10)
        if self.tls_context is not None:
            sock = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def finish_request(self, request, client_address):
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                LOG.debug("TLS handshake with %s failed: %s", client_address[0], exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        LOG.debug("request from %s failed", client_address[0], exc_info=True)


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
    return p


def serve(args, ready=None):
    """Serve until SIGTERM / SIGINT; ``ready`` (an Event) is set once it listens."""
    try:
        host, port = split_address(args.address)
        web = load_web_config(args.web_config) if args.web_config else WebConfig()
    except (ValueError, WebConfigError) as exc:
        raise SystemExit(str(exc)) from None
    registry = CollectorRegistry(auto_describe=False)
    from .collector import SessionCollector  # pylint: disable=import-outside-toplevel
    registry.register(SessionCollector(build_gateway(args.state_dir, args.process_supervisor)))
    try:
        server = ExporterServer((host, port), make_handler(registry, web), web.tls_context)
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
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
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
