# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The real ESnet Janus controller (janus-dtnaas 1.1 from PyPI) for the tests, on loopback.

It lives in its own venv (``.venv-janus``, made by .ci/setup: its pinned Flask
and pydantic must not meet the test venv's). :class:`RealJanus` starts
``janus-ctrl -C`` with a janus.conf that points at a :class:`PortainerStandIn`,
a TinyDB file and a profile directory, and can restart it as another user on
the same database: ``JANUS_USER``/``JANUS_PASSWORD`` define the one basic-auth
user a controller process has, and a JWT that admin got from ``POST /token``
stays valid across the restart because ``JWT_SECRET_KEY`` is kept.

One controller serves a whole run: the session fixture ``janus_controller`` (tests/conftest.py) on
ports 44000-44099, with the doc's profile for two gateways (``scistream`` on ``state_dir``,
``scistream-b`` on ``cons_state_dir``); a test that needs a new database calls :meth:`RealJanus.renew`.
The helpers below (the playbook, the profile, a session's record, a push) serve both Janus test modules.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import time

import requests
import yaml

from conftest import ROOT, streamcheck
from portainer_standin import PortainerStandIn

JANUS_VENV = os.path.join(ROOT, ".venv-janus")
JANUS_CTRL = os.path.join(JANUS_VENV, "bin", "janus-ctrl")
API = "/api/janus/controller"
PROFILE_DIR = os.path.join(ROOT, "docs", "janus", "profiles")
DOC_PROFILE = os.path.join(PROFILE_DIR, "scistream.yml")
PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "janus.yml")
# The run's one controller, its Portainer stand-in and the TLS front: 44000-44099.
SERVICE_PORTS = (44000, 44099)


def janus_installed():
    return os.access(JANUS_CTRL, os.X_OK)


def pick_port(first, last):
    """The first port in ``first..last`` (the tests' own block) that nothing holds now.

    The block lies inside Linux's ephemeral range, so a fixed port can be taken
    for a moment by any outgoing connection; picking at start avoids that.
    """
    for port in range(first, last + 1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in %d-%d" % (first, last))


def wait_for_port(port, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def profile_for(state_dir, name="scistream"):
    """The doc's profile file as written, with only the bind's source set to this state_dir's door.

    ``name`` renames the profile and its volume, for a second gateway on the same node.
    """
    with open(DOC_PROFILE, encoding="utf-8") as handle:
        text = handle.read()
    door = os.path.join(state_dir, "janus", "session")
    changed = text.replace("source: /var/lib/scistream/janus/session", "source: " + door)
    assert changed != text, "the doc's profile no longer has the documented source line"
    doc, test = yaml.safe_load(text), yaml.safe_load(changed)
    doc["volumes"]["scistream_session"]["source"] = door
    assert doc == test  # nothing else differs
    if name != "scistream":
        changed = changed.replace("scistream_session", name + "_session").replace("  scistream:", "  %s:" % name)
    return changed


def record(controller, uid, state_dir=None):
    with open(os.path.join(state_dir or controller.state_dir, "sessions", uid + ".json"), encoding="utf-8") as handle:
        return json.load(handle)


def push(listener, size):
    host, dummy, port = listener.rpartition(":")
    return streamcheck.send(host, int(port), size, timeout=60)


class RealJanus:
    """janus-ctrl on 127.0.0.1:``port`` with its Portainer stand-in on ``portainer_port``."""

    def __init__(self, workdir, port, portainer_port, profile_dir=PROFILE_DIR, user="admin", password=None):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = port
        self.profile_dir = profile_dir
        self.user = user
        self.password = password or secrets.token_urlsafe(12)
        self.jwt_secret = secrets.token_hex(32)
        self.db_path = os.path.join(self.workdir, "janus-db.json")
        self.log_path = os.path.join(self.workdir, "janus.log")
        self.portainer = PortainerStandIn(port=portainer_port).start()
        self.config_path = os.path.join(self.workdir, "janus.conf")
        self._write_config()
        self.proc = None

    def _write_config(self):
        text = ("[JANUS]\nPORTAINER_URI: %s\nPORTAINER_WS: ws://127.0.0.1:%d/api/websocket\n"
                "PORTAINER_USER: %s\nPORTAINER_PASSWORD: %s\nPORTAINER_VERIFY_SSL: False\n"
                % (self.portainer.url, self.portainer.port, self.portainer.user, self.portainer.password))
        with open(os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(text)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, user=None, password=None):
        """Start the controller as the one user ``user`` (default: the one given before)."""
        self.user = user or self.user
        self.password = password or self.password
        env = dict(os.environ, JANUS_USER=self.user, JANUS_PASSWORD=self.password, JWT_SECRET_KEY=self.jwt_secret)
        env.pop("DEBUG", None)  # DEBUG turns on Flask's reloader, which forks a second controller
        log = open(self.log_path, "ab")  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [JANUS_CTRL, "-C", "-b", "127.0.0.1", "-p", str(self.port), "-f", self.config_path,
             "-P", self.profile_dir, "-db", self.db_path],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        log.close()
        if not wait_for_port(self.port, 60):
            self.stop()
            raise RuntimeError("janus-ctrl did not listen on %d: %s" % (self.port, self.log_tail()))
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def restart(self, user=None, password=None):
        self.stop()
        return self.start(user, password)

    def renew(self, user="admin", password=None):
        """Restart on a new, empty database (ids from 1 again) as ``user``; the old one is kept as ``.old``."""
        self.stop()
        if os.path.exists(self.db_path):
            os.replace(self.db_path, self.db_path + ".old")
        return self.start(user, password or secrets.token_urlsafe(12))

    def close(self):
        self.stop()
        self.portainer.stop()

    def log_tail(self, size=4000):
        try:
            with open(self.log_path, "rb") as handle:
                return handle.read()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    # -- calls a Janus admin makes (the module makes none of these) -----------------
    def call(self, method, path, auth=None, token=None, **kwargs):
        headers = {"Authorization": "Bearer " + token} if token else {}
        return requests.request(method, self.url + API + path, auth=None if token else (auth or (self.user, self.password)),
                                headers=headers, timeout=30, **kwargs)

    def admin_token(self):
        """A JWT for the current user (admin), valid across restarts of this controller."""
        response = self.call("POST", "/token")
        response.raise_for_status()
        return response.json()["access_token"]


def start_controller(workdir):
    """The run's controller: profiles ``scistream`` (gateway A) and ``scistream-b`` (gateway B) under ``workdir``."""
    profiles = os.path.join(str(workdir), "profiles")
    os.makedirs(profiles, exist_ok=True)
    state_dirs = {"scistream": os.path.join(str(workdir), "gateway-a"), "scistream-b": os.path.join(str(workdir), "gateway-b")}
    for name, state_dir in state_dirs.items():
        with open(os.path.join(profiles, name + ".yml"), "w", encoding="utf-8") as handle:
            handle.write(profile_for(state_dir, name))
    controller = RealJanus(workdir, pick_port(*SERVICE_PORTS), pick_port(SERVICE_PORTS[0] + 1, SERVICE_PORTS[1]),
                           profile_dir=profiles)
    controller.state_dir, controller.cons_state_dir = state_dirs["scistream"], state_dirs["scistream-b"]
    try:
        return controller.start()
    except Exception:
        controller.close()
        raise


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
    paths = [os.path.join(str(directory), name) for name in ("ca.pem", "server.pem", "server.key")]
    with open(paths[0], "wb") as handle:
        handle.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return paths


def haproxy_tls_front(directory, listen_port, backend_port, cert, key):
    """HAProxy terminating TLS on ``listen_port`` in front of the controller; returns the Popen."""
    pem = os.path.join(str(directory), "front.pem")
    with open(os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(open(cert).read() + open(key).read())  # pylint: disable=consider-using-with
    config = os.path.join(str(directory), "front.cfg")
    with open(config, "w") as handle:
        handle.write("global\n  log stderr format raw local0 err\ndefaults\n  mode tcp\n  timeout connect 5s\n"
                     "  timeout client 60s\n  timeout server 60s\nfrontend janus_tls\n"
                     "  bind 127.0.0.1:%d ssl crt %s\n  default_backend janus\nbackend janus\n"
                     "  server janus 127.0.0.1:%d\n" % (listen_port, pem, backend_port))
    log_path = os.path.join(str(directory), "front.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([shutil.which("haproxy"), "-db", "-f", config],  # pylint: disable=consider-using-with
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    if not wait_for_port(listen_port, 10):
        proc.kill()
        with open(log_path, encoding="utf-8", errors="replace") as log:
            raise RuntimeError("the HAProxy TLS front did not listen on %d: %s" % (listen_port, log.read()[-2000:]))
    return proc
