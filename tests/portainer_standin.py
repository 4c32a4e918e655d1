# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A stand-in for the part of Portainer's API that ESnet Janus (janus-dtnaas 1.1) calls.

Portainer is a Docker Hub image and cannot be had on the test machines, so
this serves exactly what Janus's ``PortainerDockerApi`` uses, read from its
source (janus/api/portainer/portainer_docker.py, endpoints_api.py and the
``portainer_api`` client):

* ``POST /api/auth`` with ``{"Username", "Password"}`` -> ``{"jwt": ...}``
  (422 ``{"message": ...}`` for bad credentials, as Portainer answers);
* ``GET /api/endpoints`` -> one Docker endpoint (Id, Name, Type, Status,
  GroupId, URL, PublicURL: the fields Janus parses);
* ``/api/endpoints/<id>/docker/<path>`` -> passed through to the local Docker
  Engine with the Docker SDK's low-level client, method, query and body as
  they came, status and body as Docker gave them. Image pulls
  (``POST .../images/create``) are refused: nothing may be fetched here.

Every call but ``/api/auth`` needs ``Authorization: Bearer <jwt>``. Loopback
only; request bodies are capped. Janus finds it through ``PORTAINER_URI`` in
its janus.conf (``http://127.0.0.1:<port>/api``).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker

MAX_BODY = 1024 * 1024
DOCKER_PATH = re.compile(r"^/api/endpoints/(\d+)/docker(/.*)$")


class PortainerStandIn:
    """One Portainer "endpoint" (``endpoint_name``) that is the local Docker Engine."""

    def __init__(self, user="janus", password=None, endpoint_name="dtn-a", public_url="127.0.0.1",
                 docker_url="unix:///var/run/docker.sock", port=0):
        self.user = user
        self.password = password or secrets.token_urlsafe(16)
        self.endpoint = {"Id": 1, "Name": endpoint_name, "Type": 1, "Status": 1, "GroupId": 1,
                         "URL": docker_url, "PublicURL": public_url}
        self.docker = docker.APIClient(base_url=docker_url, version="auto", timeout=60)
        self.tokens = set()
        self.calls = []  # (method, path) of every call, for the tests to read
        self.port = port
        self.server = None
        self.thread = None

    @property
    def url(self):
        return "http://127.0.0.1:%d/api" % self.port

    def start(self):
        handler = type("BoundPortainerHandler", (_Handler,), {"standin": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
            self.server = None

    def forward(self, method, path, query, body, content_type):
        """One Docker Engine API call; returns (status, content type, body bytes)."""
        headers = {"Content-Type": content_type} if content_type else {}
        response = self.docker.request(method, self.docker.base_url + path, params=query or None, data=body or None,
                                       headers=headers, timeout=60)
        return response.status_code, response.headers.get("Content-Type", ""), response.content


class _Handler(BaseHTTPRequestHandler):
    standin = None  # set per server
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet test output
        pass

    def _send(self, status, body=b"", content_type="application/json"):
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        self.send_response(status)
        if data:
            self.send_header("Content-Type", content_type or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body of %d bytes is over the limit" % length)
        return self.rfile.read(length) if length else b""

    def _route(self, method):
        path, dummy, query = self.path.partition("?")
        self.standin.calls.append((method, path))
        try:
            body = self._body()
        except ValueError as exc:
            return self._send(413, {"message": str(exc)})
        if method == "POST" and path == "/api/auth":
            return self._auth(body)
        token = self.headers.get("Authorization", "")
        if not token.startswith("Bearer ") or token[len("Bearer "):] not in self.standin.tokens:
            return self._send(401, {"message": "Unauthorized", "details": "A valid authorisation token is missing"})
        if method == "GET" and path == "/api/endpoints":
            return self._send(200, [self.standin.endpoint])
        match = DOCKER_PATH.match(path)
        if match is None:
            return self._send(404, {"message": "Not found (the stand-in serves only what Janus calls)"})
        if int(match.group(1)) != self.standin.endpoint["Id"]:
            return self._send(404, {"message": "Unable to find an environment with the specified identifier"})
        docker_path = match.group(2)
        if method == "POST" and docker_path.rstrip("/").endswith("/images/create"):
            return self._send(403, {"message": "image pulls are refused by the test stand-in: build images locally"})
        status, content_type, data = self.standin.forward(method, docker_path, _query(query), body,
                                                          self.headers.get("Content-Type"))
        return self._send(status, data, content_type)

    def _auth(self, body):
        try:
            creds = json.loads(body or b"{}")
        except ValueError:
            return self._send(400, {"message": "Invalid request payload"})
        if not isinstance(creds, dict) or creds.get("Username") != self.standin.user \
                or creds.get("Password") != self.standin.password:
            return self._send(422, {"message": "Invalid credentials", "details": "Unauthorized"})
        token = secrets.token_urlsafe(24)
        self.standin.tokens.add(token)
        return self._send(200, {"jwt": token})

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._route("GET")

    def do_POST(self):  # noqa: N802
        self._route("POST")

    def do_PUT(self):  # noqa: N802
        self._route("PUT")

    def do_DELETE(self):  # noqa: N802
        self._route("DELETE")


def _query(text):
    """The query string as a list of pairs, repeated keys kept."""
    from urllib.parse import parse_qsl  # pylint: disable=import-outside-toplevel
    return parse_qsl(text, keep_blank_values=True)
