# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""stunnel sessions that interoperate with upstream SciStream 1.2 (``psk_compat: scistream-1.2``).

The partner is a real stunnel configured the way upstream's template
(scistream-proto src/s2ds/stunnel.conf.j2, key file written by
src/s2ds/subproc.py) configures it: global ``fips = no``, ``PSKsecrets``,
``securityLevel = 0``, ``foreground = yes``, ``sslVersionMax = TLSv1.2``, one
service per port with ``ciphers = eNULL`` and no ``PSKidentity``; the key file
holds ``client1:<uid without dashes>``. One deviation: the test binds
127.0.0.1:<port> where upstream writes ``accept = <port>`` (all interfaces),
so nothing listens beyond loopback. Slow (200 MB each way; heavy lock).

Ports 42300-42399 (this file's block).
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from conftest import Sink, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import listening_ports, wait_until
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

SIZE = 200 * 1024 * 1024


class UpstreamStunnel:
    """A stunnel as upstream SciStream 1.2's StunnelSubprocess runs it (foreground, a child process)."""

    def __init__(self, directory, uid, client, accept_port, connect):
        os.makedirs(directory, exist_ok=True)
        key = os.path.join(directory, uid + ".key")
        with open(key, "w", encoding="ascii") as handle:
            handle.write("client1:" + uid.replace("-", ""))
        os.chmod(key, 0o600)
        self.log = os.path.join(directory, uid + ".log")
        config = os.path.join(directory, uid + ".conf")
        with open(config, "w", encoding="ascii") as handle:
            handle.write("fips = no\nPSKsecrets = %s\nsecurityLevel = 0\ndebug = 7\nforeground = yes\n"
                         "sslVersionMax = TLSv1.2\npid = %s\noutput = %s\n\n[%d]\nclient = %s\naccept = 127.0.0.1:%d\n"
                         "connect = %s\nciphers = eNULL\n" % (
                             key, os.path.join(directory, uid + ".pid"), self.log, accept_port,
                             "yes" if client else "no", accept_port, connect))
        self.process = subprocess.Popen(["stunnel", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: accept_port in listening_ports("tcp"), 10), self.log_text()

    def log_text(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def gateway(tmp_path):
    return Gateway(str(tmp_path / "gw"), {"process": lambda session: ProcessRuntime("daemon")}, policy=LOOPBACK_POLICY)


def compat_spec(uid, role, port_range, target, **extra):
    options = dict(uid=uid, role=role, num_conn=1, listener_ip="127.0.0.1", port_range=port_range,
                   targets=[target], backend="stunnel", psk_compat="scistream-1.2")
    options.update(extra)
    return SessionSpec.build(**options)


def push(port, sink_port, size=SIZE, timeout=60):
    target = Sink(port=sink_port, timeout=timeout)
    try:
        sent = streamcheck.send("127.0.0.1", port, size, timeout=timeout)
    except OSError:
        target.sock.close()
        raise
    return sent, target.wait()


def test_our_cons_to_an_upstream_prod(tmp_path, gateway):
    uid = str(uuid.uuid4())
    upstream = UpstreamStunnel(str(tmp_path / "upstream"), uid, client=False, accept_port=42380, connect="127.0.0.1:42390")
    try:
        outcome = gateway.present(compat_spec(uid, "CONS", "42300-42309", "127.0.0.1:42380"))
        assert any("NOT encrypted" in warning for warning in outcome.warnings), outcome.warnings
        with open(os.path.join(gateway.store.run_dir(uid), "psk.txt"), encoding="ascii") as handle:
            assert handle.read() == "client1:%s\n" % uid.replace("-", "")
        sent, got = push(outcome.session["ports"][0], 42390)
        assert got["bytes"] == sent["bytes"] == SIZE and got["sha256"] == sent["sha256"]
        log = upstream.log_text()
        assert "TLSv1.2" in log and "NULL" in log, log[-2000:]
        assert gateway.present(compat_spec(uid, "CONS", "42300-42309", "127.0.0.1:42380")).changed is False
    finally:
        gateway.absent(uid)
        upstream.stop()


def test_an_upstream_cons_to_our_prod(tmp_path, gateway):
    uid = str(uuid.uuid4())
    outcome = gateway.present(compat_spec(uid, "PROD", "42310-42319", "127.0.0.1:42391"))
    listener = outcome.session["listeners"][0]
    upstream = UpstreamStunnel(str(tmp_path / "upstream"), uid, client=True, accept_port=42381, connect=listener)
    try:
        sent, got = push(42381, 42391)
        assert got["bytes"] == sent["bytes"] == SIZE and got["sha256"] == sent["sha256"]
        assert "NULL" in upstream.log_text()
    finally:
        upstream.stop()
        gateway.absent(uid)


def test_without_psk_compat_upstream_gets_no_shared_cipher(tmp_path, gateway):
    """The fault issue 16 reports, reproduced: the native cipher and identity do not meet upstream's."""
    uid = str(uuid.uuid4())
    upstream = UpstreamStunnel(str(tmp_path / "upstream"), uid, client=False, accept_port=42382, connect="127.0.0.1:42392")
    try:
        session = gateway.present(SessionSpec.build(uid=uid, role="CONS", num_conn=1, listener_ip="127.0.0.1",
                                                    port_range="42320-42329", targets=["127.0.0.1:42382"],
                                                    backend="stunnel")).session
        with pytest.raises(OSError):
            push(session["ports"][0], 42392, size=1024 * 1024, timeout=5)
        assert wait_until(lambda: "no shared cipher" in upstream.log_text() or "SSL_accept" in upstream.log_text(), 5)
    finally:
        gateway.absent(uid)
        upstream.stop()


@pytest.mark.parametrize("options,field", [
    ({"backend": "haproxy"}, "psk_compat"),
    ({"psk_compat": "scistream-9"}, "psk_compat"),
    ({"psk": "s" * 32}, "psk"),
])
def test_psk_compat_refusals_name_the_field(options, field):
    base = dict(uid=str(uuid.uuid4()), role="CONS", targets=["127.0.0.1:42399"], backend="stunnel",
                psk_compat="scistream-1.2")
    base.update(options)
    with pytest.raises(S2DSError) as caught:
        SessionSpec.build(**base)
    assert caught.value.field == field


def test_control_server_with_psk_compat_pairs_with_an_upstream_cons(tmp_path):
    """The server option: a StunnelSubprocess server with --psk_compat makes PROD sessions upstream's CONS reaches.

    Ports 45000-45019 (the lead's block); 64 MB (the module tests above carry 200 MB).
    """
    from s2cs_real import Server, make_pki  # pylint: disable=import-outside-toplevel
    from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import (  # pylint: disable=import-outside-toplevel
        ControlClient)
    uid = str(uuid.uuid4())
    server = Server(make_pki(tmp_path), tmp_path / "s2cs", 45000, "45001-45009", backend="StunnelSubprocess",
                    extra=["--psk_compat", "scistream-1.2"])
    upstream = None
    try:
        with ControlClient(server.address, ca_path=server.pki["ca.crt"], timeout=20) as client:
            listeners, dummy, created = client.request(uid, "PROD", 1, prod_listeners=["127.0.0.1:45019"])
            assert created and len(listeners) == 1
            client.update(uid, ["127.0.0.1:45019"], "PROD")
            run_dir = Gateway(str(tmp_path / "s2cs"), {}, policy=LOOPBACK_POLICY).store.run_dir(uid)
            with open(os.path.join(run_dir, "psk.txt"), encoding="ascii") as handle:
                assert handle.read() == "client1:%s\n" % uid.replace("-", "")
            upstream = UpstreamStunnel(str(tmp_path / "upstream"), uid, client=True, accept_port=45018,
                                       connect=listeners[0])
            sent, got = push(45018, 45019, size=64 * 1024 * 1024)
            assert got["bytes"] == sent["bytes"] and got["sha256"] == sent["sha256"]
            assert "NULL" in upstream.log_text()
            client.release(uid)
    finally:
        if upstream is not None:
            upstream.stop()
        server.stop()
