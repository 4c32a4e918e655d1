# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The S2CS control server, started for real (its own process, TLS, --daemon with a pid file).

Two servers on this host play two gateways (separate state dirs and port
ranges); the client is the collection's own (what S2UC does on the wire).
Bytes go through for real and are checked by SHA-256 at the far end.
Ports: 31000-31999 only.
"""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from conftest import ROOT, run_playbook, streamcheck
from s2cs_real import LOOPBACK_ANSWERS, client_request, sessions

grpc = pytest.importorskip("grpc")

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import (  # noqa: E402
    ControlCallError, close_stream, open_stream)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import (  # noqa: E402
    listening_ports, wait_until)

PAYLOAD = 200 * 1024 * 1024


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
    server = servers("gw", 31014, "31600-31699",
                     extra=["--max_workers", "8", "--max_pending_per_peer", "64", "--max_pending_per_identity", "64"])
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
