# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""encryption: tls - mutual TLS between the gateways, with real proxies and real bytes.

Certificates are made here with the `cryptography` library. A relay that the
test puts between CONS and PROD records the bytes on the wire: a TLS
handshake, and none of the payload in clear. Refusals: a CONS certificate
from another CA, a PROD certificate that does not name the dialled address
(IP and DNS), an expired certificate, a client with no certificate.
Ports: 30000-30999 only.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import socket
import ssl
import stat
import threading
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import ROOT, Sink, files_under, run_playbook, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import listening_ports, wait_until
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "tls_chain.yml")
PAYLOAD = 200 * 1024 * 1024
# 64 bytes that every 1 MiB chunk of streamcheck's payload carries (seed 0).
SAMPLE = next(streamcheck.payload(streamcheck.CHUNK, 0))[4096:4160]
NOW = datetime.datetime.now(datetime.timezone.utc)


# -- certificates ---------------------------------------------------------------
class Authority:
    """A CA that issues EC P-256 certificates into a directory."""

    def __init__(self, directory, name):
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - datetime.timedelta(days=1))
                     .not_valid_after(NOW + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_path = self._write(name + "-ca.crt", self.cert.public_bytes(serialization.Encoding.PEM))

    def _write(self, name, data, mode=0o644, directory=None):
        path = os.path.join(directory or self.directory, name)
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, mode)
        return path

    def issue(self, name, dns=(), ips=(), days=(-1, 30), file_name=None, directory=None):
        """A certificate for ``name`` with the given SANs; returns (cert path, key path, key PEM text)."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(NOW + datetime.timedelta(days=days[0]))
                .not_valid_after(NOW + datetime.timedelta(days=days[1]))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        file_name = file_name or name
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return (self._write(file_name + ".crt", cert.public_bytes(serialization.Encoding.PEM), directory=directory),
                self._write(file_name + ".key", key_pem, 0o600, directory), key_pem.decode("ascii"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("sstls-pki"))
    ca, other = Authority(directory, "scistream"), Authority(directory, "elsewhere")
    return {"dir": directory, "ca": ca, "other": other}


def chain_pki(pki, directory):
    """ca.crt, prod.crt/key (naming 127.0.0.1 as IP and as DNS name), cons.crt/key in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    ca = pki["ca"]
    with open(os.path.join(directory, "ca.crt"), "wb") as handle:
        handle.write(ca.cert.public_bytes(serialization.Encoding.PEM))
    return {name: ca.issue("gw-" + name, dns=["127.0.0.1", "gw-" + name], ips=["127.0.0.1"], file_name=name,
                           directory=directory)[2]
            for name in ("prod", "cons")}


# -- the relay between the gateways ------------------------------------------------
class Relay:
    """TCP relay on 127.0.0.1:``port`` to ``target`` (set later) that inspects what passes.

    It keeps the first bytes of each direction of each connection, counts
    bytes, and looks for SAMPLE (a piece of the payload) in the CONS -> PROD
    direction, across read boundaries.
    """

    def __init__(self, port, timeout=120.0):
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.5)
        self.target = None
        self.deadline = time.monotonic() + timeout
        self.connections = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                client, dummy = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            record = {"up": b"", "down": b"", "up_bytes": 0, "down_bytes": 0, "sample_seen": False}
            self.connections.append(record)
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for src, dst, way in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pump, args=(src, dst, way, record), daemon=True).start()

    def _pump(self, src, dst, way, record):
        tail = b""
        src.settimeout(max(1.0, self.deadline - time.monotonic()))
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                if len(record[way]) < 64:
                    record[way] += data[:64 - len(record[way])]
                record[way + "_bytes"] += len(data)
                if way == "up":
                    window = tail + data
                    if SAMPLE in window:
                        record["sample_seen"] = True
                    tail = window[-len(SAMPLE):]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    sock.shutdown(how)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.listener.close()


def is_tls_hello(first, message_type):
    """A TLS handshake record (0x16, version 3.x) whose first message is ``message_type``."""
    return len(first) > 5 and first[0] == 0x16 and first[1] == 3 and first[5] == message_type


class PacedSender:
    """Sends payload through ``port`` slowly, in a thread, until told to finish: an established stream."""

    def __init__(self, port, timeout=60.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.digest, self.sent, self.error = hashlib.sha256(), 0, None
        self.finish = threading.Event()
        self.deadline = time.monotonic() + timeout
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            chunks = streamcheck.payload(1 << 30, 1)
            while not self.finish.is_set() and time.monotonic() < self.deadline:
                chunk = next(chunks)[:65536]
                self.sock.sendall(chunk)
                self.digest.update(chunk)
                self.sent += len(chunk)
                time.sleep(0.02)
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(10)
            while self.sock.recv(65536):
                pass
        except OSError as exc:
            self.error = exc
        finally:
            self.sock.close()

    def done(self):
        self.finish.set()
        self.thread.join(30)
        return {"bytes": self.sent, "sha256": self.digest.hexdigest(), "error": self.error}


# -- through the module: data, wire, idempotence, renewal ------------------------------
@pytest.mark.parametrize("runtime,backend", [
    ("process", "haproxy"), ("process", "nginx"),
    pytest.param("docker", "haproxy", marks=pytest.mark.docker),
    pytest.param("docker", "nginx", marks=pytest.mark.docker),
])
def test_encrypted_chain_carries_data_unseen_and_renews_without_dropping(tmp_path, uid, pki, runtime, backend):
    slot = ["process-haproxy", "process-nginx", "docker-haproxy", "docker-nginx"].index(runtime + "-" + backend)
    base = 30000 + 100 * slot
    pki_dir = str(tmp_path / "pki")
    keys = chain_pki(pki, pki_dir)
    data_sink = Sink(port=base + 1)
    relay = Relay(base + 2)
    cvars = {"uid": uid, "backend": backend, "runtime": runtime, "image": "scistream/%s:local" % backend,
             "producer_targets": ["127.0.0.1:%d" % (base + 1)], "pki_dir": pki_dir,
             "prod_port_range": "%d-%d" % (base + 10, base + 49), "cons_port_range": "%d-%d" % (base + 50, base + 89),
             "prod_state_dir": str(tmp_path / "gateway-a"), "cons_state_dir": str(tmp_path / "gateway-b"),
             "cons_targets": ["127.0.0.1:%d" % (base + 2)]}
    try:
        rc, run = run_playbook(PLAYBOOK, cvars, diff=True)
        assert rc == 0, run.failures()
        prod, cons = run.result("Producer-side gateway"), run.result("Consumer-side gateway")
        assert prod["changed"] and cons["changed"] and prod["encryption"] == cons["encryption"] == "tls"
        # The key is in the run dir, 0600, and nowhere in what the module returned (diff included).
        for name, key in keys.items():
            assert key.strip().splitlines()[1] not in json.dumps(run.output)
        run_dir = os.path.join(cvars["prod_state_dir"], "run", uid)
        key_file = "tls.pem" if backend == "haproxy" else "tls.key"
        assert stat.S_IMODE(os.stat(os.path.join(run_dir, key_file)).st_mode) == 0o600
        relay.target = ("127.0.0.1", prod["ports"][0])

        sent = streamcheck.send("127.0.0.1", cons["ports"][0], PAYLOAD, timeout=60)
        got = data_sink.wait()
        assert got["bytes"] == sent["bytes"] == PAYLOAD and got["sha256"] == sent["sha256"]
        wire = relay.connections[0]
        assert is_tls_hello(wire["up"], 1) and is_tls_hello(wire["down"], 2), (wire["up"][:8], wire["down"][:8])
        assert wire["up_bytes"] > PAYLOAD and not wire["sample_seen"]

        rc, again = run_playbook(PLAYBOOK, cvars)
        assert rc == 0 and again.changed == 0, again.failures()

        # Renewal: new certificates at the same paths while a stream is established.
        slow_sink = Sink(port=base + 1)
        stream = PacedSender(cons["ports"][0])
        assert wait_until(lambda: stream.sent > 256 * 1024, 10)
        chain_pki(pki, pki_dir)
        rc, renewed = run_playbook(PLAYBOOK, cvars)
        assert rc == 0, renewed.failures()
        for task in ("Producer-side gateway", "Consumer-side gateway"):
            actions = renewed.result(task)["actions"]
            assert renewed.result(task)["changed"] and actions[-2:] == ["write_config", "reload"], actions
        time.sleep(0.5)
        streamed = stream.done()
        got = slow_sink.wait()
        assert streamed["error"] is None and got["sha256"] == streamed["sha256"] and got["bytes"] > 256 * 1024
        with open(os.path.join(pki_dir, "prod.crt"), encoding="ascii") as handle:
            assert handle.read() in open(os.path.join(run_dir, "tls.pem" if backend == "haproxy" else "tls.crt"),
                                         encoding="ascii").read()
        # A reload is asynchronous (old workers finish in the background): let it settle.
        time.sleep(1.0)
        after_sink = Sink(port=base + 1)
        sent = streamcheck.send("127.0.0.1", cons["ports"][0], 4 * 1024 * 1024, timeout=30)
        after = after_sink.wait()
        assert after["sha256"] == sent["sha256"], (after["bytes"], sent["bytes"])

        rc, released = run_playbook(PLAYBOOK, dict(cvars, session_state="absent"))
        assert rc == 0 and released.changed == 2, released.failures()
        ports = set(prod["ports"] + cons["ports"])
        assert wait_until(lambda: not ports & listening_ports("tcp"), 5)
        assert files_under(str(tmp_path / "gateway-a")) == files_under(str(tmp_path / "gateway-b")) == []
    finally:
        relay.close()


# -- refusals, through the core on the process runtime ---------------------------------
class Pair:
    """A PROD and a CONS gateway (process runtime) with the certificates a case gives."""

    def __init__(self, tmp_path, backend, base):
        self.tmp_path, self.backend, self.base = tmp_path, backend, base
        runtimes = {"process": lambda spec: ProcessRuntime("daemon")}
        self.prod = Gateway(str(tmp_path / "a"), runtimes, policy=LOOPBACK_POLICY)
        self.cons = Gateway(str(tmp_path / "b"), runtimes, policy=LOOPBACK_POLICY)
        self.uids = []

    def connect(self, prod_cert, cons_cert, ca_path, dial="127.0.0.1", prod_ca=None):
        """Set up a chain; return the CONS port and the PROD port."""
        uid = str(uuid.uuid4())
        self.uids.append(uid)
        common = dict(uid=uid, num_conn=1, listener_ip="127.0.0.1", backend=self.backend, encryption="tls")
        prod = self.prod.present(SessionSpec.build(
            role="PROD", port_range="%d-%d" % (self.base + 10, self.base + 39), tls_ca=prod_ca or ca_path,
            targets=["127.0.0.1:%d" % (self.base + 1)], tls_cert=prod_cert[0], tls_key=prod_cert[1], **common))
        cons = self.cons.present(SessionSpec.build(
            role="CONS", port_range="%d-%d" % (self.base + 40, self.base + 69), tls_ca=ca_path,
            targets=["%s:%d" % (dial, prod.session["ports"][0])], tls_cert=cons_cert[0], tls_key=cons_cert[1],
            **common))
        return cons.session["ports"][0], prod.session["ports"][0]

    def delivers(self, cons_port, size=65536):
        """True when bytes sent to CONS reach the producer (whose sink waits 1.5 s at most)."""
        producer = Sink(port=self.base + 1, timeout=1.5)
        try:
            sent = streamcheck.send("127.0.0.1", cons_port, size, timeout=2)
        except OSError:
            sent = None
        try:
            got = producer.wait()
        except OSError:  # nothing came: the sink's accept timed out
            return False
        return sent is not None and got["sha256"] == sent["sha256"]

    def release(self):
        for uid in self.uids:
            self.prod.absent(uid)
            self.cons.absent(uid)


@pytest.mark.parametrize("backend", ["haproxy", "nginx"])
def test_gateways_refuse_what_they_cannot_verify(tmp_path, pki, backend):
    base = 30400 + 100 * ["haproxy", "nginx"].index(backend)
    ca, other = pki["ca"], pki["other"]

    def cert(name, **kwargs):
        return ca.issue(name, file_name="%s-%s" % (backend, name), **kwargs)[:2]

    good_prod = cert("prod", dns=["127.0.0.1", "localhost"], ips=["127.0.0.1"])
    good_cons = cert("cons", dns=["gw-b.example"])
    pair = Pair(tmp_path, backend, base)
    try:
        # Controls: the right certificates deliver, dialled by IP and by name.
        assert pair.delivers(pair.connect(good_prod, good_cons, ca.ca_path)[0])
        cons_port, prod_port = pair.connect(good_prod, good_cons, ca.ca_path, dial="localhost")
        assert pair.delivers(cons_port)
        # PROD demands a client certificate: a TLS client without one, or plain TCP, gets nothing through.
        context = ssl.create_default_context(cafile=ca.ca_path)
        context.check_hostname = False
        with pytest.raises((ssl.SSLError, OSError)):
            with socket.create_connection(("127.0.0.1", prod_port), timeout=5) as raw:
                with context.wrap_socket(raw) as tls:
                    tls.sendall(b"x" * 1024)
                    if not tls.recv(1):
                        raise OSError("closed by PROD")
        # A CONS certificate from another CA: PROD refuses it.
        stranger = other.issue("cons", dns=["gw-b.example"], file_name="%s-stranger" % backend)[:2]
        assert not pair.delivers(pair.connect(good_prod, stranger, ca.ca_path, prod_ca=ca.ca_path)[0])
        # PROD certificates that do not name what CONS dials: CONS refuses them.
        elsewhere = cert("elsewhere", dns=["127.0.0.2", "gw-a.example"], ips=["127.0.0.2"])
        assert not pair.delivers(pair.connect(elsewhere, good_cons, ca.ca_path)[0])
        assert not pair.delivers(pair.connect(elsewhere, good_cons, ca.ca_path, dial="localhost")[0])
        # An IP address only as an IP entry is not enough for HAProxy 2.6 / NGINX 1.22 (see the docs).
        ip_only = cert("ip-only", ips=["127.0.0.1"])
        assert not pair.delivers(pair.connect(ip_only, good_cons, ca.ca_path)[0])
        # Expired certificates: PROD's refused by CONS, CONS's refused by PROD.
        expired_prod = cert("expired-prod", dns=["127.0.0.1"], ips=["127.0.0.1"], days=(-30, -1))
        assert not pair.delivers(pair.connect(expired_prod, good_cons, ca.ca_path)[0])
        expired_cons = cert("expired-cons", dns=["gw-b.example"], days=(-30, -1))
        assert not pair.delivers(pair.connect(good_prod, expired_cons, ca.ca_path)[0])
    finally:
        pair.release()


# -- bad input: a clear error, nothing left behind --------------------------------------
def test_bad_encryption_input_names_field_and_value_and_leaves_nothing(tmp_path, uid, pki):
    ca = pki["ca"]
    cert_path, key_path, key_text = ca.issue("bad-input", dns=["x"])
    runtimes = {"process": lambda spec: ProcessRuntime("daemon")}
    tls = dict(tls_cert=cert_path, tls_key=key_path, tls_ca=ca.ca_path)
    cases = [
        (dict(backend="stunnel", encryption="tls", **tls), "encryption", "pre-shared key"),
        (dict(encryption="tls", tls_cert=cert_path, tls_ca=ca.ca_path), "tls_key", "required"),
        (dict(encryption="tls", tls_cert=key_path, tls_key=key_path, tls_ca=ca.ca_path), "tls_cert", "certificate"),
        (dict(encryption="tls", tls_cert=cert_path, tls_key=cert_path, tls_ca=ca.ca_path), "tls_key", "private key"),
        (dict(encryption="tls", tls_cert=cert_path, tls_key=str(tmp_path / "missing.key"), tls_ca=ca.ca_path),
         "tls_key", "cannot be read"),
        (dict(encryption="none", **tls), "tls_cert", "only used with encryption tls"),
        (dict(encryption="tls", tls_version="1.1", **tls), "tls_version", "must be one of"),
    ]
    for kwargs, field, why in cases:
        with pytest.raises(S2DSError) as error:
            spec = SessionSpec.build(uid=uid, role="PROD", targets=["127.0.0.1:9"], port_range="30900-30909",
                                     **kwargs)
            Gateway(str(tmp_path / "gw"), runtimes, policy=LOOPBACK_POLICY).present(spec)
        assert error.value.field == field and why in str(error.value), str(error.value)
        assert key_text.splitlines()[1] not in str(error.value)
    assert not os.path.exists(str(tmp_path / "gw")) or files_under(str(tmp_path / "gw")) == []


def test_module_refuses_tls_for_stunnel_with_a_message(tmp_path, uid, pki):
    ca = pki["ca"]
    cert_path, key_path, dummy = ca.issue("stunnel-refused", dns=["x"])
    state_dir = str(tmp_path / "gw")
    cvars = {"uid": uid, "backend": "stunnel", "producer_targets": ["127.0.0.1:9"], "pki_dir": pki["dir"],
             "prod_port_range": "30910-30919", "cons_port_range": "30920-30929",
             "prod_state_dir": state_dir, "cons_state_dir": state_dir}
    # The playbook reads prod.crt/key from pki_dir: give it these.
    for suffix, path in (("crt", cert_path), ("key", key_path)):
        link = os.path.join(pki["dir"], "prod." + suffix)
        if not os.path.exists(link):
            os.symlink(path, link)
    if not os.path.exists(os.path.join(pki["dir"], "ca.crt")):
        os.symlink(ca.ca_path, os.path.join(pki["dir"], "ca.crt"))
    rc, run = run_playbook(PLAYBOOK, cvars)
    assert rc != 0
    failure = run.result("Producer-side gateway")
    assert failure["failed"] and failure["field"] == "encryption" and "stunnel" in failure["msg"]
    assert "pre-shared key" in failure["msg"] and "haproxy or nginx" in failure["msg"]
    assert not os.path.exists(state_dir) or files_under(state_dir) == []


def test_check_mode_predicts_an_encrypted_session_and_writes_nothing(tmp_path, uid, pki):
    pki_dir = str(tmp_path / "pki")
    keys = chain_pki(pki, pki_dir)
    cvars = {"uid": uid, "backend": "nginx", "producer_targets": ["127.0.0.1:30931"], "pki_dir": pki_dir,
             "prod_port_range": "30932-30935", "cons_port_range": "30936-30939",
             "prod_state_dir": str(tmp_path / "gateway-a"), "cons_state_dir": str(tmp_path / "gateway-b")}
    rc, run = run_playbook(PLAYBOOK, cvars, check=True, diff=True)
    assert rc == 0, run.failures()
    prod = run.result("Producer-side gateway")
    # "count" follows where the host can count bytes (nftables), as in test_module_behaviour.
    assert prod["changed"] and prod["encryption"] == "tls"
    assert prod["actions"] in (["reserve", "write_config", "start"], ["reserve", "write_config", "start", "count"])
    assert keys["prod"].splitlines()[1] not in json.dumps(run.output)
    assert not os.path.exists(cvars["prod_state_dir"]) and not os.path.exists(cvars["cons_state_dir"])


def test_batch_module_takes_the_same_encryption_options(tmp_path, uid, pki):
    pki_dir = str(tmp_path / "pki")
    keys = chain_pki(pki, pki_dir)
    data_sink = Sink(port=30945)
    cvars = {"uid": uid, "pki_dir": pki_dir, "prod_state_dir": str(tmp_path / "gateway-a"),
             "cons_state_dir": str(tmp_path / "gateway-b")}
    playbook = os.path.join(ROOT, "tests", "integration", "playbooks", "tls_sessions.yml")
    rc, run = run_playbook(playbook, cvars, diff=True)
    assert rc == 0, run.failures()
    cons = run.result("CONS sessions")["sessions"][0]
    assert cons["encryption"] == "tls" and keys["cons"].splitlines()[1] not in json.dumps(run.output)
    sent = streamcheck.send("127.0.0.1", cons["ports"][0], 1024 * 1024, timeout=30)
    assert data_sink.wait()["sha256"] == sent["sha256"]
