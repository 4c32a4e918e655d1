# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The S2CS control server, started for real (its own process, TLS, --daemon with a pid file).

Two servers on this host play two gateways (separate state dirs and port
ranges); the client is the collection's own (what S2UC does on the wire).
Bytes go through for real and are checked by SHA-256 at the far end.
Ports: 31000-31999 only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import uuid

import pytest

from conftest import BUILD, ROOT, run_playbook, streamcheck

grpc = pytest.importorskip("grpc")
x509 = pytest.importorskip("cryptography.x509")

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import (  # noqa: E402
    ControlCallError, ControlClient, close_stream, consumer_policy, open_stream)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import (  # noqa: E402
    listening_ports, process_alive, wait_until)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime  # noqa: E402

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)
LOOPBACK_ANSWERS = consumer_policy(WITH_LOOPBACK)  # what open_stream lets PROD answer

PAYLOAD = 200 * 1024 * 1024
SERVER_MODULE = "ansible_collections.scistream.gateway.plugins.module_utils.s2cs.server"


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
        assert wait_until(lambda: not process_alive(pid), 10), "S2CS %d did not stop" % pid

    def client(self, token=None, timeout=30.0):
        return ControlClient(self.address, ca_path=self.pki["ca.crt"], token=token, timeout=timeout)


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path)


@pytest.fixture
def servers(pki, tmp_path):
    started = []

    def start(name, port, port_range, **kwargs):
        server = Server(pki, tmp_path / name, port, port_range, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def sessions(state_dir):
    return Gateway(state_dir, {"process": lambda s: ProcessRuntime("daemon")}, policy=LOOPBACK_POLICY).sessions()


def status(exc_info):
    return exc_info.value.code


@pytest.mark.parametrize("backend,slot", [("haproxy", 0), ("stunnel", 1)])
def test_stream_across_two_servers(servers, sink, backend, slot):
    """PROD and CONS servers (two gateways): 200 MB arrive intact; both sides released after."""
    base = 31100 + 200 * slot
    prod_server = servers("gateway-a", 31000 + 2 * slot, "%d-%d" % (base, base + 49), backend=backend)
    cons_server = servers("gateway-b", 31001 + 2 * slot, "%d-%d" % (base + 100, base + 149), backend=backend)
    receiver = sink()
    uid = str(uuid.uuid4())
    with prod_server.client() as prod, cons_server.client() as cons:
        stream = open_stream(prod, cons, uid, 2, ["127.0.0.1:%d" % receiver.port], cons_policy=LOOPBACK_ANSWERS)
        assert stream["changed"]
        assert [int(l.rsplit(":", 1)[1]) for l in stream["prod_listeners"]] == [base, base + 1]
        assert [int(l.rsplit(":", 1)[1]) for l in stream["listeners"]] == [base + 100, base + 101]
        # The sessions are the core's: s2ds_info sees them, healthy.
        for server in (prod_server, cons_server):
            [info] = sessions(server.state_dir)
            assert info["uid"] == uid and info["healthy"] and info["backend"] == backend
        host, dummy, port = stream["listeners"][0].rpartition(":")
        sent = streamcheck.send(host, int(port), PAYLOAD, timeout=60)
        got = receiver.wait()
        assert got["bytes"] == sent["bytes"] == PAYLOAD
        assert got["sha256"] == sent["sha256"]
        # Asked again: same listeners, nothing changed.
        again = open_stream(prod, cons, uid, 2, ["127.0.0.1:%d" % receiver.port], cons_policy=LOOPBACK_ANSWERS)
        assert again == dict(stream, changed=False)
        assert close_stream(prod, cons, uid)
        assert not close_stream(prod, cons, uid)
    assert not sessions(prod_server.state_dir) and not sessions(cons_server.state_dir)
    assert not {base, base + 1, base + 100, base + 101} & listening_ports("tcp")


def test_hello_timeout_frees_the_ports(servers):
    server = servers("gw", 31010, "31500-31509", extra=["--hello_timeout", "1"])
    uid = str(uuid.uuid4())
    with server.client() as client:
        with pytest.raises(grpc.RpcError) as exc_info:
            client.stub.req(client_request(uid, "PROD", 3), timeout=10)
        assert exc_info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "released" in exc_info.value.details()
        assert sessions(server.state_dir) == []
        # The same ports are handed out again.
        listeners, dummy, created = client.request(str(uuid.uuid4()), "PROD", 3, ["127.0.0.1:9"])
        assert created and [int(l.rsplit(":", 1)[1]) for l in listeners] == [31500, 31501, 31502]


def client_request(uid, role, num_conn):
    from ansible_collections.scistream.gateway.plugins.module_utils.s2cs import scistream_pb2  # pylint: disable=import-outside-toplevel
    return scistream_pb2.Request(uid=uid, role=role, num_conn=num_conn)


def test_error_codes(servers, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# accepted tokens\nsecret-token-1\nsecret-token-2\n")
    os.chmod(tokens, 0o600)
    server = servers("gw", 31011, "31520-31523", extra=["--tokens_file", str(tokens)])
    uid = str(uuid.uuid4())
    with server.client(token="secret-token-2") as client:
        listeners, dummy, created = client.request(uid, "PROD", 2, ["127.0.0.1:9"])
        assert created
        # Same uid, same parameters: the session it has. Other parameters: ALREADY_EXISTS.
        assert client.request(uid, "PROD", 2, ["127.0.0.1:9"])[0] == listeners
        with pytest.raises(ControlCallError) as exc_info:
            client.request(uid, "PROD", 3)
        assert status(exc_info) == "ALREADY_EXISTS"
        with pytest.raises(ControlCallError) as exc_info:
            client.request(uid, "CONS", 2)
        assert status(exc_info) == "ALREADY_EXISTS"
        # Unknown uid.
        for call in (lambda u: client.update(u, ["127.0.0.1:9"]), client.release):
            with pytest.raises(ControlCallError) as exc_info:
                call(str(uuid.uuid4()))
            assert status(exc_info) == "NOT_FOUND"
        # Bad input names the field.
        with pytest.raises(ControlCallError) as exc_info:
            client.request(str(uuid.uuid4()), "PROD", 0)
        assert status(exc_info) == "INVALID_ARGUMENT" and "num_conn" in exc_info.value.details
        with pytest.raises(ControlCallError) as exc_info:
            client.request("not a uid/..", "PROD", 1)  # any [A-Za-z0-9._-]{1,64} is a uid now
        assert status(exc_info) == "INVALID_ARGUMENT" and "uid" in exc_info.value.details
        with pytest.raises(ControlCallError) as exc_info:
            client.update(uid, ["127.0.0.1:99999"])
        assert status(exc_info) == "INVALID_ARGUMENT" and "remote_listeners" in exc_info.value.details
        # The port range (4 ports) is full.
        with pytest.raises(ControlCallError) as exc_info:
            client.request(str(uuid.uuid4()), "PROD", 3)
        assert status(exc_info) == "RESOURCE_EXHAUSTED"
        assert client.release(uid) == listeners
    for token in (None, "wrong-token", "INVALID_TOKEN"):
        with server.client(token=token) as client:
            with pytest.raises(ControlCallError) as exc_info:
                client.request(str(uuid.uuid4()), "PROD", 1)
            assert status(exc_info) == "UNAUTHENTICATED"
    assert "secret-token" not in server.log()


def test_auth_off_is_said_and_tokens_ignored(servers):
    server = servers("gw", 31012, "31530-31531")
    assert "authentication is OFF" in server.log()
    with server.client(token="INVALID_TOKEN") as client:
        uid = str(uuid.uuid4())
        client.request(uid, "PROD", 1, ["127.0.0.1:9"])
        client.release(uid)


def test_restarted_server_still_releases(servers, sink):
    prod_server = servers("gateway-a", 31013, "31540-31544")
    receiver = sink()
    uid = str(uuid.uuid4())
    with prod_server.client() as prod:
        listeners, dummy, dummy = prod.request(uid, "PROD", 1, ["127.0.0.1:%d" % receiver.port])
        prod.update(uid, ["127.0.0.1:%d" % receiver.port], "PROD")
    assert 31540 in listening_ports("tcp")
    prod_server.stop()
    assert 31540 in listening_ports("tcp"), "the proxy outlives its control server"
    prod_server.start()
    with prod_server.client() as prod:
        # The restarted server knows the session: same listeners, nothing new.
        assert prod.request(uid, "PROD", 1, ["127.0.0.1:%d" % receiver.port])[::2] == (listeners, False)
        assert prod.release(uid) == listeners
    assert wait_until(lambda: 31540 not in listening_ports("tcp"), 5)
    assert sessions(prod_server.state_dir) == []


def test_concurrent_requests_get_disjoint_ports(servers):
    server = servers("gw", 31014, "31600-31699", extra=["--max_workers", "8", "--max_pending_per_peer", "64"])
    uids = [str(uuid.uuid4()) for dummy in range(20)]
    results, errors = {}, []

    def one(uid):
        try:
            with server.client() as client:
                results[uid] = client.request(uid, "PROD", 2, ["127.0.0.1:9"])[0]
        except Exception as exc:  # pylint: disable=broad-exception-caught
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(u,)) for u in uids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    ports = [l for listeners in results.values() for l in listeners]
    assert len(ports) == 40 and len(set(ports)) == 40
    assert len(sessions(server.state_dir)) == 20
    with server.client() as client:
        for uid in uids:
            client.release(uid)
    assert sessions(server.state_dir) == []


def test_stream_request_module(servers, sink):
    """The stream_request module: set up (changed), again (no change, same listeners), bytes through, release."""
    playbook = os.path.join(ROOT, "tests", "integration", "playbooks", "stream_request.yml")
    prod_server = servers("gateway-a", 31020, "31700-31709")
    cons_server = servers("gateway-b", 31021, "31710-31719")
    receiver = sink()
    variables = {"prod_server": prod_server.address, "cons_server": cons_server.address,
                 "ca_path": prod_server.pki["ca.crt"], "uid": str(uuid.uuid4()),
                 "producer_targets": ["127.0.0.1:%d" % receiver.port]}
    rc, run = run_playbook(playbook, variables)
    assert rc == 0, run.failures()
    first = run.result("Stream from PROD to CONS")
    assert first["changed"] and first["listeners"] == ["127.0.0.1:31710", "127.0.0.1:31711"]
    assert first["prod_listeners"] == ["127.0.0.1:31700", "127.0.0.1:31701"]
    rc, run = run_playbook(playbook, variables)
    assert rc == 0 and run.changed == 0
    assert run.result("Stream from PROD to CONS")["listeners"] == first["listeners"]
    sent = streamcheck.send("127.0.0.1", 31711, 8 * 1024 * 1024, timeout=30)
    assert receiver.wait()["sha256"] == sent["sha256"]
    for expected in (1, 0):
        rc, run = run_playbook(playbook, dict(variables, stream_state="absent"))
        assert rc == 0 and run.changed == expected
    assert not sessions(prod_server.state_dir) and not sessions(cons_server.state_dir)
    # Bad input names the field, before any call is made.
    rc, run = run_playbook(playbook, dict(variables, producer_targets=["nowhere"]))
    assert rc != 0 and "producer_targets" in run.failures()[0][2]
