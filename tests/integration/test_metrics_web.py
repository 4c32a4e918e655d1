# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one metrics HTTP server (exporter/web.py MetricsHTTPServer) against clients that misbehave.

Slow request heads (slowloris), stalled TLS handshakes, floods from one
address, oversized heads: the scrape that behaves is answered at once, and
the bounds (deadline, connection caps, worker pool) hold. Also: the S2CS's
--metrics_port is served by the same server. Ports 46200-46299. Every wait
is bounded.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.exporter.web import (
    MetricsHTTPServer, WebConfig, metrics_handler)

bcrypt = pytest.importorskip("bcrypt")


class Running:
    def __init__(self, port, tls=None, web=None, **limits):
        self.server = MetricsHTTPServer(("127.0.0.1", port), metrics_handler(lambda: (b"up 1\n", "text/plain"), web),
                                        tls, **limits)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.port = port

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def metrics_server():
    started = []

    def start(port, **kwargs):
        running = Running(port, **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def scrape(port, headers=None, scheme="http", context=None, timeout=5):
    started = time.monotonic()
    request = urllib.request.Request("%s://127.0.0.1:%d/metrics" % (scheme, port), headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
        body = answer.read()
    return body, time.monotonic() - started


def slow_connections(port, count, sources=8, first=b"GET /metrics HTTP/1.1\r\n"):
    """``count`` connections from 127.0.0.2.. that send part of a head and then nothing."""
    socks = []
    for index in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.%d" % (2 + index % sources), 0))
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
            if first:
                sock.sendall(first)
        except OSError:
            sock.close()
            continue
        socks.append(sock)
    return socks


def test_slowloris_does_not_hold_off_a_scrape(metrics_server):
    """1,000 slow heads from 8 addresses, basic auth on: the scrape is answered at once, the slow ones are closed."""
    hashed = bcrypt.hashpw(b"scrape-secret", bcrypt.gensalt(rounds=4)).decode()
    running = metrics_server(46200, web=WebConfig(users={"prometheus": hashed}), request_deadline=2)
    auth = {"Authorization": "Basic " + base64.b64encode(b"prometheus:scrape-secret").decode()}
    quiet = min(scrape(46200, auth)[1] for dummy in range(3))
    socks = slow_connections(46200, 1000)
    try:
        times = []
        for dummy in range(5):
            body, took = scrape(46200, auth)
            assert body == b"up 1\n"
            times.append(took)
        assert max(times) - quiet < 0.2, (quiet, times)
        assert running.server._open_count() <= running.server.max_connections  # pylint: disable=protected-access
        # Past the deadline every slow head is closed: the server side reads EOF.
        time.sleep(2.5)
        assert running.server._open_count() == 0  # pylint: disable=protected-access
    finally:
        for sock in socks:
            sock.close()


def test_caps_per_address_and_in_total(metrics_server):
    running = metrics_server(46201, max_connections=10, max_per_peer=3, request_deadline=5)
    socks = slow_connections(46201, 6, sources=1)
    try:
        time.sleep(0.3)
        assert running.server._open_count() == 3  # pylint: disable=protected-access
        more = slow_connections(46201, 14, sources=7)  # from 127.0.0.2-8: the total cap evicts the busiest address
        time.sleep(0.3)
        assert running.server._open_count() <= 10  # pylint: disable=protected-access
        assert scrape(46201)[0] == b"up 1\n"
        for sock in more:
            sock.close()
    finally:
        for sock in socks:
            sock.close()


def test_oversized_head_and_idle_connection_are_closed(metrics_server):
    metrics_server(46202, request_deadline=1)
    big = socket.create_connection(("127.0.0.1", 46202), timeout=5)
    try:
        try:
            big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 40000)
        except OSError:
            pass
        assert big.recv(100) == b""
    except ConnectionResetError:
        pass
    finally:
        big.close()
    idle = socket.create_connection(("127.0.0.1", 46202), timeout=5)
    started = time.monotonic()
    try:
        assert idle.recv(100) == b"" and time.monotonic() - started < 3
    finally:
        idle.close()


def test_a_stalled_tls_handshake_holds_no_thread(metrics_server, tmp_path):
    """TLS: 50 connections that never say ClientHello; a TLS scrape is answered meanwhile."""
    import subprocess  # pylint: disable=import-outside-toplevel
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-subj", "/CN=127.0.0.1", "-days", "1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    metrics_server(46203, tls=context, workers=2, request_deadline=3)
    socks = slow_connections(46203, 50, first=b"")
    try:
        client = ssl.create_default_context(cafile=str(cert))
        body, took = scrape(46203, scheme="https", context=client)
        assert body == b"up 1\n" and took < 1
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture(scope="module")
def fuzz_server():
    running = Running(46204, request_deadline=2)
    yield running
    running.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=3000),
                 st.builds(lambda line, headers: line + b"\r\n" + headers + b"\r\n\r\n",
                           st.sampled_from([b"GET /metrics HTTP/1.1", b"GET / HTTP/1.0", b"POST /metrics HTTP/1.1",
                                            b"GET /../../etc/passwd HTTP/1.1", b"GET http://x/metrics HTTP/1.1",
                                            b"\x00\xff GET", b"GET /metrics HTTP/9.9"]),
                           st.binary(max_size=2000))))
def test_fuzz_any_request_head_gets_an_answer_or_a_close(fuzz_server, head):
    """Whatever bytes a client sends: an HTTP answer or a closed connection within the deadline; the server stays up."""
    sock = socket.create_connection(("127.0.0.1", 46204), timeout=5)
    try:
        try:
            sock.sendall(head)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = b""
        try:
            while len(answer) < 100000:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
        assert answer == b"" or answer.startswith(b"HTTP/1."), answer[:200]
    finally:
        sock.close()
    assert scrape(46204)[0] == b"up 1\n"
