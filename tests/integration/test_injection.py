# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Regression tests for issue 14's injections, on every path a value can come by, with the real proxies.

The payloads are the ones that once wrote a HAProxy ``program`` section (a
root shell command) and an extra frontend, an NGINX ``server`` forwarding
elsewhere, a stunnel ``accept``/``connect`` pair (all through an IPv6 zone
id ``[fe80::1%...]``), and a host name followed by a newline. Each path must
refuse with a message naming the field and quoting the value escaped, and
leave nothing: no record, no run dir, no proxy process, no port, no file on
disk holding the payload. Paths: the s2ds module (process and docker
runtimes), s2ds_sessions, the S2CS (update.remote_listeners,
hello.prod_listeners) and stream_request against a hostile PROD server.
Non-UUID uids (as upstream's clients send) are also carried for real.
Port block 40000-40999.
"""

from __future__ import annotations

import os
import threading
import uuid
from concurrent import futures

import grpc
import pytest

from conftest import ROOT, files_under, run_playbook, streamcheck
from s2cs_real import sessions

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs import protocol
from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.text import untrusted_text
from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import ControlCallError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import quoted
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import listening_ports
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import session_key

CASES = os.path.join(ROOT, "tests", "integration", "playbooks", "cases.yml")
SESSIONS = os.path.join(ROOT, "tests", "integration", "playbooks", "sessions.yml")
STREAM = os.path.join(ROOT, "tests", "integration", "playbooks", "stream_request.yml")
MARK = "scistreaminjected"
# Ports the payloads try to open; none may ever listen.
EVIL_PORTS = range(40050, 40060)

PAYLOADS = {
    "haproxy program": "[fe80::1%%x\nprogram %s\n    command touch %s\nfrontend extra\n    bind 127.0.0.1:40050]:80"
                       % (MARK, MARK),
    "nginx server": "[fe80::1%%x;\n    }\n    server {\n        listen 127.0.0.1:40051;\n        proxy_pass "
                    "127.0.0.1:40052; # %s\n    }\n    server {\n        listen 127.0.0.1:40053]:80" % MARK,
    "stunnel accept": "[fe80::1%%x\n[%s]\naccept = 127.0.0.1:40054\nconnect = 127.0.0.1:40055]:80" % MARK,
    "name newline": "%s\n:80" % MARK,
    "port newline": "%s.example.org:80\n" % MARK,
}


def _refused(message, field, payload):
    # Through the client, a server's text is escaped to printable ASCII (s2cs/text.py): the quote is too.
    assert field in message and (quoted(payload) in message or untrusted_text(quoted(payload), 10 ** 6) in message), \
        message
    assert "\n" not in message, message


def _nothing_left(*state_dirs):
    """No record or run file, no proxy of these dirs, no evil port, no file holding the payload."""
    for state_dir in state_dirs:
        # The gateway's lock and a control server's state-dir lock stay (empty files); nothing else may.
        left = files_under(state_dir, ignore=("lock", "server.lock")) if os.path.isdir(state_dir) else []
        assert left == [], left
        for top, dummy, names in os.walk(state_dir):
            for name in names:
                with open(os.path.join(top, name), "rb") as handle:
                    assert MARK.encode() not in handle.read(), os.path.join(top, name)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            assert state_dir.encode() + b"/run" not in cmdline, (pid, cmdline)
    assert not set(EVIL_PORTS) & listening_ports("tcp")
    assert not os.path.exists(MARK) and not os.path.exists(os.path.join("/", MARK))


def _cases(runtimes):
    cases = []
    for runtime in runtimes:
        for backend in ("haproxy", "nginx", "stunnel"):
            for label, payload in PAYLOADS.items():
                cases.append(dict(label="%s %s %s" % (runtime, backend, label), uid=str(uuid.uuid4()), role="CONS",
                                  backend=backend, runtime=runtime, port_range="40300-40309", num_conn=1,
                                  targets=["127.0.0.1:40310", payload]))
        cases.append(dict(label="%s zone listener" % runtime, uid=str(uuid.uuid4()), role="PROD", runtime=runtime,
                          listener_ip="fe80::1%%lo\nprogram %s" % MARK, port_range="40300-40309", num_conn=1,
                          targets=["127.0.0.1:40310"]))
    return cases


def _check_module_run(run, cases):
    out = run.result("Each case")["results"]
    assert len(out) == len(cases)
    for case, result in zip(cases, out):
        assert result["failed"], case["label"]
        if "listener_ip" in case:
            _refused(result["msg"], "listener_ip", case["listener_ip"])
            assert result["field"] == "listener_ip"
        else:
            _refused(result["msg"], "targets", case["targets"][1])
            assert result["field"] == "targets"


def test_module_refuses_every_payload_on_the_process_runtime(tmp_path):
    state_dir = str(tmp_path / "gw")
    cases = _cases(["process"])
    rc, run = run_playbook(CASES, {"cases": cases, "state_dir": state_dir})
    assert rc == 0
    _check_module_run(run, cases)
    _nothing_left(state_dir)


@pytest.mark.docker
def test_module_refuses_every_payload_on_the_docker_runtime(tmp_path):
    from conftest import docker_client  # pylint: disable=import-outside-toplevel
    state_dir = str(tmp_path / "gw")
    cases = _cases(["docker"])
    rc, run = run_playbook(CASES, {"cases": cases, "state_dir": state_dir})
    assert rc == 0
    _check_module_run(run, cases)
    _nothing_left(state_dir)
    uids = {case["uid"] for case in cases}
    labelled = docker_client().containers.list(all=True, filters={"label": "org.scistream.uid"})
    assert not [c.name for c in labelled if c.labels.get("org.scistream.uid") in uids]


def test_batch_refuses_the_payloads_and_applies_the_rest(tmp_path, sink):
    """s2ds_sessions: each bad item fails naming its field; the good one in the same batch is applied."""
    state_dir = str(tmp_path / "gw")
    target = sink()
    good = {"uid": "upstream.Go-uid_1", "role": "PROD", "port_range": "40320-40329", "num_conn": 1,
            "listener_ip": "127.0.0.1", "targets": ["127.0.0.1:%d" % target.port]}
    bad = [dict(good, uid=str(uuid.uuid4()), backend=backend, targets=[payload])
           for backend in ("haproxy", "nginx", "stunnel") for payload in PAYLOADS.values()]
    bad.append(dict(good, uid="bad\nuid %s" % MARK))
    rc, run = run_playbook(SESSIONS, {"sessions": [good] + bad, "state_dir": state_dir})
    assert rc != 0
    result = run.result("Sessions")
    entries = result["sessions"]
    assert not entries[0]["failed"] and entries[0]["ports"] == [40320]
    for item, entry in zip(bad, entries[1:]):
        assert entry["failed"], item
        field = "uid" if "\n" in item["uid"] else "targets"
        _refused(entry["msg"], field, item["uid"] if field == "uid" else item["targets"][0])
    assert "\n" not in result["msg"]
    # The good one carries bytes, under its hashed name.
    key = session_key("upstream.Go-uid_1")
    assert os.path.isdir(os.path.join(state_dir, "run", key)) and key.startswith("s-")
    sent = streamcheck.send("127.0.0.1", 40320, 1024 * 1024, timeout=30)
    assert target.wait()["sha256"] == sent["sha256"]
    rc, run = run_playbook(SESSIONS, {"sessions": [{"uid": good["uid"], "state": "absent"}], "state_dir": state_dir})
    assert rc == 0
    _nothing_left(state_dir)


@pytest.mark.parametrize("uid", ["..", "-rf", "4F6C1B7E2A3D4C5E9F001234567890AB", "a" * 64])
def test_upstream_uids_carry_bytes_and_leave_nothing(tmp_path, sink, uid):
    """Any uid an upstream client may send works for real, and the same uid is the same session."""
    state_dir = str(tmp_path / "gw")
    target = sink()
    case = dict(uid=uid, role="PROD", port_range="40330-40339", num_conn=1, targets=["127.0.0.1:%d" % target.port])
    for changed in (True, False):
        rc, run = run_playbook(CASES, {"cases": [case], "state_dir": state_dir})
        [out] = run.result("Each case")["results"]
        assert not out["failed"] and out["changed"] is changed and out["uid"] == uid, out
    assert os.listdir(os.path.join(state_dir, "run")) == [session_key(uid)]
    sent = streamcheck.send("127.0.0.1", 40330, 1024 * 1024, timeout=30)
    assert target.wait()["sha256"] == sent["sha256"]
    rc, run = run_playbook(CASES, {"cases": [dict(case, state="absent")], "state_dir": state_dir})
    assert run.result("Each case")["results"][0]["changed"]
    _nothing_left(state_dir)


def test_stream_playbook_refuses_a_bad_inventory_value(tmp_path):
    """playbooks/stream.yml: the stream_sessions filter fails naming the stream and field; nothing is set up."""
    import yaml  # pylint: disable=import-outside-toplevel
    common = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
              "ansible_become": False, "scistream_listener_ip": "127.0.0.1", "scistream_gateway_runtime": "process"}
    streams = [{"name": "good", "uid": str(uuid.uuid4()), "producer_gateway": "gw-a", "consumer_gateway": "gw-b",
                "producer_targets": ["127.0.0.1:40340"]},
               {"name": "evil", "uid": str(uuid.uuid4()), "producer_gateway": "gw-a", "consumer_gateway": "gw-b",
                "producer_targets": [PAYLOADS["haproxy program"]]}]
    inventory = {"all": {"children": {"scistream_gateways": {
        "hosts": {"gw-a": dict(common, scistream_gateway_state_dir=str(tmp_path / "gw-a"),
                               scistream_gateway_port_range="40341-40349", scistream_wan_address="127.0.0.1"),
                  "gw-b": dict(common, scistream_gateway_state_dir=str(tmp_path / "gw-b"),
                               scistream_gateway_port_range="40350-40359")},
        "vars": {"scistream_streams": streams}}}}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    rc, run = run_playbook(os.path.join(ROOT, "playbooks", "stream.yml"), inventory=str(path))
    assert rc != 0
    messages = [message for dummy, dummy2, message in run.failures()]
    assert messages and all("stream 'evil' (scistream_streams[1])" in m and "producer_targets" in m for m in messages)
    assert all(quoted(PAYLOADS["haproxy program"]) in m and "\n" not in m for m in messages)
    _nothing_left(str(tmp_path / "gw-a"), str(tmp_path / "gw-b"))


@pytest.mark.docker
def test_upstream_uid_on_the_docker_runtime(tmp_path, sink):
    """A container named by the uid's key (a uid such as '..' is no container name) carries bytes."""
    from conftest import docker_client  # pylint: disable=import-outside-toplevel
    state_dir = str(tmp_path / "gw")
    target = sink()
    case = dict(uid="..", role="PROD", runtime="docker", image="scistream/haproxy:local", port_range="40360-40369",
                num_conn=1, targets=["127.0.0.1:%d" % target.port])
    rc, run = run_playbook(CASES, {"cases": [case], "state_dir": state_dir})
    [out] = run.result("Each case")["results"]
    assert not out["failed"], out.get("msg")
    name = "scistream-haproxy-prod-%s" % session_key("..")
    assert docker_client().containers.get(name).labels["org.scistream.uid"] == ".."
    sent = streamcheck.send("127.0.0.1", 40360, 1024 * 1024, timeout=30)
    assert target.wait()["sha256"] == sent["sha256"]
    rc, run = run_playbook(CASES, {"cases": [dict(case, state="absent")], "state_dir": state_dir})
    assert run.result("Each case")["results"][0]["changed"]
    assert not docker_client().containers.list(all=True, filters={"name": name})
    _nothing_left(state_dir)


# -- the control server ------------------------------------------------------------------------------------

# The S2CS strips whitespace around each listener before it parses it (control.py), so a trailing newline
# is no injection there; the other payloads must be refused.
S2CS_PAYLOADS = [payload for label, payload in PAYLOADS.items() if label != "port newline"]


def _hello_refusals(server, payloads):
    """req + hello(prod_listeners=payload) for each payload, all at once, as S2UC sends them: the hello errors."""
    channel = grpc.secure_channel(server.address, grpc.ssl_channel_credentials(
        root_certificates=open(server.pki["ca.crt"], "rb").read()))
    stub = protocol.ControlStub(channel)
    calls = []
    for payload in payloads:
        uid = str(uuid.uuid4())
        req = stub.req.future(protocol.Request(uid=uid, role="PROD", num_conn=1), timeout=20)
        hello = stub.hello.future(protocol.Hello(uid=uid, role="PROD", prod_listeners=[payload]), timeout=20)
        calls.append((payload, req, hello))
    errors = []
    for payload, req, hello in calls:
        with pytest.raises(grpc.RpcError) as err:
            hello.result()
        errors.append((payload, err.value.code().name, err.value.details()))
        with pytest.raises(grpc.RpcError):  # the req ends too: with the hello's error or when its wait times out
            req.result()
    channel.close()
    return errors


@pytest.mark.parametrize("backend", ["haproxy", "nginx", "stunnel"])
def test_s2cs_refuses_payloads_in_hello_and_update(servers, sink, backend):
    """hello.prod_listeners and update.remote_listeners: INVALID_ARGUMENT naming the field; nothing of it stays."""
    server = servers("gw-%s" % backend, 40100, "40200-40209", backend=backend, extra=["--hello_timeout", "2"])
    target = sink()
    for payload, code, details in _hello_refusals(server, S2CS_PAYLOADS):
        assert code == "INVALID_ARGUMENT", (code, details)
        _refused(details, "prod_listeners", payload)
    assert sessions(server.state_dir) == []
    with server.client(timeout=20) as client:
        uid = "dashless%s" % uuid.uuid4().hex
        client.request(uid, "PROD", 1, prod_listeners=["127.0.0.1:%d" % target.port])
        client.update(uid, ["127.0.0.1:%d" % target.port], "PROD")

        def snapshot():
            return {name: open(os.path.join(server.state_dir, name), "rb").read()
                    for name in files_under(server.state_dir)}

        before = snapshot()
        for payload in S2CS_PAYLOADS:
            with pytest.raises(ControlCallError) as err:
                client.update(uid, ["127.0.0.1:%d" % target.port, payload], "PROD")
            assert err.value.code == "INVALID_ARGUMENT"
            _refused(err.value.details, "remote_listeners", payload)
        assert snapshot() == before  # the session as it was: same config, same record
        if backend != "stunnel":  # a PROD stunnel takes TLS-PSK from the CONS gateway, not plain bytes
            sent = streamcheck.send("127.0.0.1", 40200, 1024 * 1024, timeout=30)
            assert target.wait()["sha256"] == sent["sha256"]
        client.release(uid)
    _nothing_left(server.state_dir)
    log = server.log()
    assert not [payload for payload in S2CS_PAYLOADS if payload in log]  # quoted, never raw


class HostileProd(protocol.ControlServicer):
    """A compromised PROD control server: it answers ``answer`` as its listeners to every call."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []
        self.lock = threading.Lock()

    def _note(self, method, request):
        with self.lock:
            self.calls.append((method, request.uid))

    def req(self, request, context):
        self._note("req", request)
        context.set_trailing_metadata((("scistream-session", "new"),))
        return protocol.Response(listeners=self.answer["req"], prod_listeners=[])

    def hello(self, request, context):
        self._note("hello", request)
        return protocol.AppResponse(message="ok", listeners=[])

    def update(self, request, context):
        self._note("update", request)
        return protocol.Response(listeners=self.answer["update"])

    def release(self, request, context):
        self._note("release", request)
        return protocol.Response(listeners=[])


@pytest.fixture
def hostile_prod(pki):
    started = []

    def start(answer, port=40103):
        servicer = HostileProd(answer)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        protocol.add_control_servicer(servicer, server)
        with open(pki["server.key"], "rb") as key, open(pki["server.crt"], "rb") as cert:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        server.add_secure_port("127.0.0.1:%d" % port, credentials)
        server.start()
        started.append(server)
        return servicer, "127.0.0.1:%d" % port

    yield start
    for server in started:
        server.stop(0)


def test_stream_request_refuses_a_hostile_prod_server(servers, hostile_prod, pki, sink):
    """What PROD answers is untrusted on the CONS side: refused before the CONS server is asked anything."""
    cons = servers("gw-cons", 40101, "40210-40219")
    target = sink()
    answers = [{"req": [payload], "update": ["127.0.0.1:40220"]} for payload in PAYLOADS.values()]
    answers += [{"req": ["127.0.0.1:40220"], "update": [payload]} for payload in PAYLOADS.values()]
    answers.append({"req": ["127.0.0.1:40220"], "update": ["127.0.0.1:%d" % p for p in range(40221, 40230)]})
    for index, answer in enumerate(answers):
        servicer, address = hostile_prod(answer, port=40103 + index)
        uid = str(uuid.uuid4())
        variables = {"prod_server": address, "cons_server": cons.address, "ca_path": pki["ca.crt"], "uid": uid,
                     "producer_targets": ["127.0.0.1:%d" % target.port]}
        rc, run = run_playbook(STREAM, variables)
        assert rc != 0
        [(dummy, dummy2, message)] = [f for f in run.failures() if f[0] == "Stream from PROD to CONS"]
        field = "listeners" if answer["req"] != ["127.0.0.1:40220"] else "prod_listeners"
        bad = answer["req"][0] if field == "listeners" else answer["update"][-1]
        assert "INVALID_ANSWER" in message and field in message and "\n" not in message, message
        if len(answer["update"]) == 1:
            assert quoted(bad) in message or untrusted_text(quoted(bad), 10 ** 6) in message, message
        # PROD's session (it said "new") is released again; the CONS server never heard of the uid.
        methods = sorted(method for method, dummy in servicer.calls)
        assert methods == (["hello", "release", "req"] if field == "listeners" else ["hello", "release", "req", "update"])
        assert servicer.calls[-1][0] == "release" and uid not in cons.log()
    assert sessions(cons.state_dir) == []
    _nothing_left(cons.state_dir)
