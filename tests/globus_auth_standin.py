# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A local stand-in for Globus Auth's token introspection, the one call the S2CS makes.

``POST /v2/oauth2/token/introspect`` with HTTP basic auth (the confidential
client's id and secret) and a form body ``token=...``, answered as Globus
Auth documents it: ``{"active": false}`` for a token it does not know, else
active, scope (space separated), sub, exp, client_id, username. A wrong
client secret is 401 with Globus's error document. Nothing else is served.
HTTPS on loopback with the test's own certificate; globus-sdk finds it
through GLOBUS_SDK_SERVICE_URL_AUTH and trusts it through GLOBUS_SDK_VERIFY_SSL.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = "/v2/oauth2/token/introspect"
MAX_BODY = 16 * 1024


class AuthState:
    """The client it knows, the tokens it knows, and how often each was introspected."""

    def __init__(self, client_id, client_secret):
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens = {}
        self.calls = {}
        self.lock = threading.Lock()

    def add_token(self, token, **answer):
        self.tokens[token] = answer

    def count(self, token):
        with self.lock:
            return self.calls.get(token, 0)


class Handler(BaseHTTPRequestHandler):
    state = None  # set per server

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status, document):
        body = json.dumps(document).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _client_ok(self):
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, dummy, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except ValueError:
            return False
        return (user, password) == (self.state.client_id, self.state.client_secret)

    def do_POST(self):  # pylint: disable=invalid-name
        length = int(self.headers.get("Content-Length") or 0)
        if self.path.split("?")[0] != PATH:
            return self._send(404, {"errors": [{"code": "NOT_FOUND", "status": "404"}]})
        if length > MAX_BODY:
            return self._send(413, {"errors": [{"code": "TOO_LARGE", "status": "413"}]})
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8"))
        if not self._client_ok():
            return self._send(401, {"errors": [{"code": "UNAUTHORIZED", "status": "401",
                                                "detail": "Call requires authentication"}]})
        token = (form.get("token") or [""])[0]
        with self.state.lock:
            self.state.calls[token] = self.state.calls.get(token, 0) + 1
        answer = self.state.tokens.get(token)
        if answer is None:
            return self._send(200, {"active": False})
        return self._send(200, dict({"active": True, "client_id": self.state.client_id, "token_type": "Bearer"},
                                    **answer))


class GlobusAuthStandIn:
    """The stand-in on ``127.0.0.1:port`` (HTTPS when cert and key are given), in a thread."""

    def __init__(self, state, port, cert=None, key=None):
        handler = type("BoundHandler", (Handler,), {"state": state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.scheme = "http"
        if cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.url = "%s://127.0.0.1:%d/" % (self.scheme, port)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
