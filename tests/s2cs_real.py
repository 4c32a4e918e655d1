# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real S2CS control server for the tests: its PKI, the server process and the helpers its tests share.

The ``pki`` and ``servers`` fixtures (tests/conftest.py) are made from these; tests/integration/test_s2cs*.py,
test_injection.py and test_psk_compat.py use them (each with its own ports).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import sys

import pytest

from conftest import BUILD

x509 = pytest.importorskip("cryptography.x509")
pytest.importorskip("grpc")

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import ControlClient, consumer_policy  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import process_alive, wait_until  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime  # noqa: E402

SERVER_MODULE = "ansible_collections.scistream.gateway.plugins.module_utils.s2cs.server"


#: What open_stream lets PROD answer in these tests: loopback allowed explicitly, as an operator would.
LOOPBACK_ANSWERS = consumer_policy(WITH_LOOPBACK)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory):
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it (PEM files)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("s2cs")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {name: str(directory / name) for name in ("ca.crt", "server.crt", "server.key")}
    with open(paths["ca.crt"], "wb") as handle:
        handle.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.crt"], "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.open(paths["server.key"], os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return paths


class Server:
    """One S2CS process (started with --daemon: it returns once it listens)."""

    def __init__(self, pki, state_dir, port, port_range, backend="haproxy", extra=(), env=None, start=True,
                 allowed_targets=WITH_LOOPBACK):
        self.pki = pki
        self.env = dict(env or {})
        self.state_dir = str(state_dir)
        self.port = port
        self.address = "127.0.0.1:%d" % port
        self.pid_file = self.state_dir + ".s2cs.pid"
        self.log_file = self.state_dir + ".s2cs.log"
        self.argv = [sys.executable, "-m", SERVER_MODULE, "--listener_ip", "127.0.0.1", "--port", str(port),
                     "--type", backend, "--port_range", port_range, "--state_dir", self.state_dir,
                     "--process_supervisor", "daemon", "--server_cert", pki["server.crt"],
                     "--server_key", pki["server.key"], "--daemon", "--pid_file", self.pid_file,
                     "--log_file", self.log_file, "--verbose"] + list(extra)
        if allowed_targets is not None:
            # Its sessions forward to services on loopback: allowed explicitly, as an operator would.
            self.argv += ["--allowed_targets", ",".join(allowed_targets)]
        if start:
            self.start()

    def launch(self):
        """Start it (--daemon returns once it listens); the finished command, whatever it said."""
        env = dict(os.environ, PYTHONPATH=BUILD, **self.env)
        return subprocess.run(self.argv, env=env, capture_output=True, text=True, timeout=30, check=False)

    def start(self):
        proc = self.launch()
        assert proc.returncode == 0, proc.stderr + self.log()

    def log(self):
        try:
            with open(self.log_file, encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            return ""

    @property
    def pid(self):
        with open(self.pid_file, encoding="ascii") as handle:
            return int(handle.read())

    def stop(self):
        if not os.path.exists(self.pid_file):
            return
        pid = self.pid
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not process_alive(pid), 15):
            os.kill(pid, signal.SIGKILL)  # leave nothing running for the next test
            raise AssertionError("S2CS %d did not stop in 15 s after SIGTERM; its log ends:\n%s"
                                 % (pid, self.log()[-3000:]))

    def client(self, token=None, timeout=30.0):
        return ControlClient(self.address, ca_path=self.pki["ca.crt"], token=token, timeout=timeout)


def sessions(state_dir):
    return Gateway(state_dir, {"process": lambda s: ProcessRuntime("daemon")}).sessions()


def client_request(uid, role, num_conn):
    from ansible_collections.scistream.gateway.plugins.module_utils.s2cs import protocol  # pylint: disable=import-outside-toplevel
    return protocol.Request(uid=uid, role=role, num_conn=num_conn)
