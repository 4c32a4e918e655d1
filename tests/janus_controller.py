# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A local stand-in for an ESnet Janus controller, keeping to the documented API contract.

Base path /api/janus/controller, JSON, HTTP basic auth on every call, integer
ids; create / start / stop / active / delete with the documented error codes.
It places no container: it only keeps sessions, so the tests can see what the
runtime asked for. Its sessions outlive a restart of the HTTP server, as a
real controller's do. Loopback only.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "/api/janus/controller"


class JanusState:
    """What the controller knows; kept across server restarts."""

    def __init__(self, user="admin", password="s3cret-janus-pass", nodes=("dtn-a",), profiles=("scistream",),
                 images=("scistream/haproxy:local", "scistream/nginx:local", "scistream/stunnel:local")):
        self.user, self.password = user, password
        self.nodes, self.profiles, self.images = list(nodes), list(profiles), list(images)
        self.sessions = {}
        self.next_id = 1
        self.calls = []
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    state = None  # set per server

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _send(self, code, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self):
        expected = "Basic " + base64.b64encode(("%s:%s" % (self.state.user, self.state.password)).encode()).decode()
        return self.headers.get("Authorization") == expected

    def _route(self, method):
        path = self.path.split("?", 1)[0]
        if not path.startswith(API):
            return self._send(404, {"error": "Not found"})
        if not self._authorized():
            return self._send(401, {"error": "Unauthorized"})
        path = path[len(API):]
        with self.state.lock:
            self.state.calls.append((method, path))
            return self._dispatch(method, path)

    def _dispatch(self, method, path):
        st = self.state
        if method == "POST" and path == "/create":
            return self._create()
        match = re.match(r"^/(start|stop)/(\d+)$", path)
        if method == "PUT" and match:
            session = st.sessions.get(int(match.group(2)))
            if session is None:
                return self._send(404, {"error": "Not found"})
            session["state"] = "started" if match.group(1) == "start" else "stopped"
            return self._send(200, session)
        match = re.match(r"^/active(?:/(\d+))?$", path)
        if match and method == "GET":
            if match.group(1) is None:
                return self._send(200, list(st.sessions.values()))
            session = st.sessions.get(int(match.group(1)))
            return self._send(200, session) if session else self._send(404, {"error": "Not found"})
        if match and method == "DELETE" and match.group(1):
            if st.sessions.pop(int(match.group(1)), None) is None:
                return self._send(404, {"error": "Not found"})
            return self._send(204)
        if method == "GET" and path in ("/nodes", "/images", "/profiles"):
            return self._send(200, {"/nodes": st.nodes, "/images": st.images, "/profiles": st.profiles}[path])
        return self._send(404, {"error": "Not found"})

    def _create(self):
        st = self.state
        try:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            return self._send(400, {"error": "invalid JSON"})
        requests = body if isinstance(body, list) else [body]
        for req in requests:
            if not isinstance(req, dict) or not isinstance(req.get("instances"), list) or not req["instances"] \
                    or not isinstance(req.get("image"), str) or not isinstance(req.get("profile"), str):
                return self._send(400, {"error": "invalid session request"})
            nodes = [n if isinstance(n, str) else n.get("name") for n in req["instances"]]
            if any(n not in st.nodes for n in nodes):
                return self._send(404, {"error": "unknown node %s" % nodes})
            if req["profile"] not in st.profiles:
                return self._send(404, {"error": "unknown profile %s" % req["profile"]})
            if req["image"] not in st.images:
                return self._send(404, {"error": "unknown image %s" % req["image"]})
        answer = {}
        for req in requests:
            sid = st.next_id
            st.next_id += 1
            st.sessions[sid] = dict(req, id=sid, state="created")
            answer[str(sid)] = {"id": sid}
        return self._send(200, answer)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._route("GET")

    def do_POST(self):  # noqa: N802
        self._route("POST")

    def do_PUT(self):  # noqa: N802
        self._route("PUT")

    def do_DELETE(self):  # noqa: N802
        self._route("DELETE")


class JanusController:
    """Serve ``state`` on 127.0.0.1:port (HTTPS when given a cert and key); restartable."""

    def __init__(self, state=None, port=0, certfile=None, keyfile=None):
        self.state = state or JanusState()
        self.port = port
        self.certfile, self.keyfile = certfile, keyfile
        self.server = None
        self.thread = None

    def start(self):
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.server.daemon_threads = True
        if self.certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.certfile, self.keyfile)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
            self.server = None

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.certfile else "http", self.port)


def make_tls_files(directory):
    """A CA and a server certificate for 127.0.0.1, written to ``directory``; returns (ca, cert, key) paths."""
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import NameOID  # pylint: disable=import-outside-toplevel

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test Janus CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [str(directory / name) for name in ("ca.pem", "server.pem", "server.key")]
    with open(paths[0], "wb") as handle:
        handle.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return paths
