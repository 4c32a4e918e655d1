# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The control server's own metrics, served on ``--metrics_port`` (off unless given).

* ``scistream_s2cs_calls_total{method, code}``: finished calls by gRPC status code;
* ``scistream_s2cs_call_duration_seconds{method}``: latency histogram (a req lasts until its hello);
* ``scistream_s2cs_calls_in_progress{method}``: calls running now; for ``req`` these are the
  pending reqs, waiting for their hello;
* ``scistream_s2cs_auth_failures_total``: calls refused with UNAUTHENTICATED;
* ``scistream_s2cs_sessions{role}``: the gateway's sessions by role;
* ``scistream_s2cs_connections_refused_total{cap}``: new connections the kernel reset at the connection caps
  (``cap`` ``per_peer`` or ``total``; guard.py's rule counters, so they count what never reached the server).

The bookkeeping (:class:`CallMetrics`) knows nothing of the transport; the
gRPC adapter is :func:`interceptor` (``grpc.aio.ServerInterceptor``). The
token check runs inside the servicer's methods, so the interceptor sees the
calls it refuses too.

They are served by the collection's one metrics HTTP server, the
exporter's bounded one (:class:`..exporter.web.MetricsHTTPServer`: a fixed
worker pool, a deadline for each request, caps on connections), in a
thread of its own; not by prometheus_client's start_http_server, which
gives every connection a thread for as long as the client likes.
"""

from __future__ import annotations

import contextlib
import threading
import time

try:
    import grpc
    import grpc.aio  # noqa: F401  (the server is grpc.aio)
    HAS_GRPC = True
except ImportError:  # the server reports it
    grpc = None
    HAS_GRPC = False

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    HAS_PROMETHEUS_CLIENT = True
except ImportError:  # reported by install()
    HAS_PROMETHEUS_CLIENT = False

#: Seconds: a req spans the other side's setup (hello), so the buckets reach a minute.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: The methods of the protocol; anything else is counted as "other" (labels stay bounded).
METHODS = ("req", "hello", "update", "release")


def method_name(full_method):
    """``/scistream.Control/req`` -> ``req``; unknown methods -> ``other``."""
    name = str(full_method).rsplit("/", 1)[-1]
    return name if name in METHODS else "other"


class CallMetrics:
    """Counters, histogram and gauges of one server, in a registry of their own."""

    def __init__(self, registry=None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.calls = Counter("scistream_s2cs_calls", "Control server calls finished, by method and gRPC status code.",
                             ["method", "code"], registry=self.registry)
        self.duration = Histogram("scistream_s2cs_call_duration_seconds", "Control server call latency by method.",
                                  ["method"], buckets=BUCKETS, registry=self.registry)
        self.in_progress = Gauge("scistream_s2cs_calls_in_progress", "Control server calls running now (req: "
                                 "waiting for its hello).", ["method"], registry=self.registry)
        self.auth_failures = Counter("scistream_s2cs_auth_failures", "Calls refused for a missing or invalid token.",
                                     registry=self.registry)
        for method in METHODS:  # every series exists from the start, at 0
            self.in_progress.labels(method)
            self.calls.labels(method, "OK")

    @contextlib.contextmanager
    def track(self, method, code_of):
        """Around one call: ``code_of()`` tells its status code name once it is over."""
        started = time.monotonic()
        gauge = self.in_progress.labels(method)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()
            code = code_of() or "OK"
            self.calls.labels(method, code).inc()
            self.duration.labels(method).observe(time.monotonic() - started)
            if code == "UNAUTHENTICATED":
                self.auth_failures.inc()

    def watch_sessions(self, gateway):
        """``scistream_s2cs_sessions{role}``, read from the gateway's records at each scrape."""
        self.registry.register(_SessionsByRole(gateway))

    def watch_refusals(self, refused):
        """``scistream_s2cs_connections_refused_total{cap}`` from ``refused()`` (``{cap: count}``) at each scrape."""
        self.registry.register(_Refusals(refused))


class _Refusals:
    def __init__(self, refused):
        self.refused = refused

    def describe(self):
        return []

    def collect(self):
        family = CounterMetricFamily("scistream_s2cs_connections_refused",
                                     "New connections to the control port the kernel reset at a connection cap.",
                                     labels=["cap"])
        try:
            counts = self.refused() or {}
        except Exception:  # pylint: disable=broad-exception-caught  # a failed read leaves the metric out
            counts = {}
        for cap, count in sorted(counts.items()):
            family.add_metric([cap], count)
        yield family


class _SessionsByRole:
    def __init__(self, gateway):
        self.gateway = gateway

    def describe(self):
        return []

    def collect(self):
        family = GaugeMetricFamily("scistream_s2cs_sessions", "Sessions on the control server's gateway by role.",
                                   labels=["role"])
        roles = {"PROD": 0, "CONS": 0}
        for record in self.gateway.store.all():
            roles[record.role] = roles.get(record.role, 0) + 1
        for role, count in sorted(roles.items()):
            family.add_metric([role], count)
        yield family


def _code_name(context):
    code = context.code() if hasattr(context, "code") else None
    return getattr(code, "name", None) or (str(code) if code is not None else None)


def interceptor(metrics):
    """A ``grpc.aio.ServerInterceptor`` that tracks every unary call in ``metrics``.

    The server's methods are coroutines; a refused call ends in
    ``context.abort``, which raises, and ``context.code()`` then tells its code.
    """

    def wrap(behavior, method):
        async def tracked(request, context):
            failed = []

            def code_of():
                return _code_name(context) or ("UNKNOWN" if failed else "OK")

            with metrics.track(method, code_of):
                try:
                    return await behavior(request, context)
                except BaseException:
                    failed.append(True)
                    raise
        return tracked

    class MetricsInterceptor(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, handler_call_details):
            handler = await continuation(handler_call_details)
            if handler is None or handler.unary_unary is None:
                return handler
            return grpc.unary_unary_rpc_method_handler(
                wrap(handler.unary_unary, method_name(handler_call_details.method)),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)

    return MetricsInterceptor()


def install(args, gateway, refused=None):
    """Serve the metrics when ``args.metrics_port`` is set; return the interceptors to put FIRST.

    ``refused`` (optional) gives the connection caps' refusals, ``{cap: count}``, at each scrape.
    """
    if not getattr(args, "metrics_port", None):
        return []
    if not HAS_PROMETHEUS_CLIENT:
        raise SystemExit("--metrics_port needs prometheus_client (Debian: python3-prometheus-client)")
    metrics = CallMetrics()
    metrics.watch_sessions(gateway)
    if refused is not None:
        metrics.watch_refusals(refused)
    serve_http(metrics.registry, args.metrics_address, args.metrics_port)
    return [interceptor(metrics)]


def serve_http(registry, address, port):
    """Serve ``registry`` on ``address:port`` with the exporter's bounded HTTP server, in a daemon thread."""
    from ..exporter.web import MetricsHTTPServer, metrics_handler  # pylint: disable=import-outside-toplevel
    handler = metrics_handler(lambda: (generate_latest(registry), CONTENT_TYPE_LATEST), name="scistream-s2cs")
    try:
        server = MetricsHTTPServer((address.strip("[]"), port), handler)
    except OSError as exc:
        raise SystemExit("--metrics_port %d: cannot listen on %s: %s" % (port, address, exc.strerror)) from None
    threading.Thread(target=server.serve_forever, name="s2cs-metrics-http", daemon=True).start()
    return server
