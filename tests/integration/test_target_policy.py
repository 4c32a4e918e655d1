# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway is no open proxy: the target policy, with real proxies and real control servers.

Under the strict default, a session toward loopback (127.0.0.1, localhost, [::ffff:127.0.0.1], 127.0.0.1:22),
0.0.0.0 or the control server's own port is refused through the s2ds module, the S2CS (PERMISSION_DENIED,
hello and update) and stream_request, and nothing is left behind (no record, no port, no process). With
loopback allowed (as the demo does), the control server's own port and its metrics port stay refused, so a
gRPC req cannot be smuggled through a data listener to the control server. A hostile PROD server's answer of
a loopback listener is refused by stream_request before the CONS server hears of the stream. A host name is
resolved once by the gateway: the record and the proxy config hold its address. Ports 46300-46399.
"""

from __future__ import annotations

import os
import uuid

import pytest

from conftest import ROOT, files_under, run_playbook, streamcheck
from test_injection import hostile_prod  # noqa: F401  # pylint: disable=unused-import
from s2cs_real import sessions

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import ControlCallError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import listening_ports

CASES = os.path.join(ROOT, "tests", "integration", "playbooks", "cases.yml")
STREAM = os.path.join(ROOT, "tests", "integration", "playbooks", "stream_request.yml")
# The sessions' listener ranges of this file (the control servers' own ports are outside them).
LISTENER_PORTS = set(range(46300, 46310)) | set(range(46311, 46321)) | set(range(46332, 46350)) | \
    set(range(46351, 46360)) | set(range(46371, 46380))


def bad_targets(port, control_port):
    """One target of each refused kind (``port``: a real loopback service)."""
    return ["127.0.0.1:%d" % port, "localhost:%d" % port, "0.0.0.0:%d" % port, "[::ffff:127.0.0.1]:%d" % port,
            "127.0.0.1:22", "127.0.0.1:%d" % control_port]


def _nothing_left(*state_dirs):
    """No record or run file, no proxy of these dirs, no listener in this file's port block."""
    for state_dir in state_dirs:
        left = files_under(state_dir, ignore=("lock", "server.lock")) if os.path.isdir(state_dir) else []
        assert left == [], left
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            assert state_dir.encode() + b"/run" not in cmdline, (pid, cmdline)
    assert not listening_ports("tcp") & LISTENER_PORTS


def test_module_refuses_each_bad_target_and_leaves_nothing(tmp_path, sink):
    service = sink()
    state_dir = str(tmp_path / "gw")
    targets = bad_targets(service.port, 5000)
    cases = [{"uid": str(uuid.uuid4()), "role": "PROD", "num_conn": 1, "port_range": "46300-46309", "targets": [t],
              "label": t} for t in targets]
    rc, run = run_playbook(CASES, {"cases": cases, "state_dir": state_dir, "allowed_targets": []})  # errors ignored
    results = run.output["plays"][0]["tasks"][0]["hosts"]["localhost"]["results"]
    assert len(results) == len(targets)
    for target, result in zip(targets, results):
        assert result.get("failed") and result.get("field") == "targets", result
        assert "refused by the target policy" in result["msg"], result["msg"]
        assert target in result["msg"] or "::ffff:7f00:1" in result["msg"], result["msg"]
    _nothing_left(state_dir)

    # Loopback allowed, as an operator may: the protected port (5000, the control server's default) stays refused.
    protected = [dict(cases[-1], uid=str(uuid.uuid4()))]
    rc, run = run_playbook(CASES, {"cases": protected, "state_dir": state_dir, "allowed_targets": list(WITH_LOOPBACK)})
    [result] = run.output["plays"][0]["tasks"][0]["hosts"]["localhost"]["results"]
    assert result.get("failed") and "protected port" in result["msg"], result
    _nothing_left(state_dir)


def test_module_resolves_a_name_once_and_the_proxy_gets_the_address(tmp_path, sink):
    target = sink()
    state_dir = str(tmp_path / "gw")
    uid = str(uuid.uuid4())
    case = {"uid": uid, "role": "PROD", "num_conn": 1, "port_range": "46300-46309",
            "targets": ["localhost:%d" % target.port]}
    rc, run = run_playbook(CASES, {"cases": [case], "state_dir": state_dir, "allowed_targets": ["127.0.0.0/8"]})
    [result] = run.output["plays"][0]["tasks"][0]["hosts"]["localhost"]["results"]
    assert rc == 0 and result["targets"] == ["127.0.0.1:%d" % target.port], result
    with open(result["config_path"], encoding="utf-8") as handle:
        config = handle.read()
    assert "127.0.0.1:%d" % target.port in config and "localhost" not in config
    host, dummy, port = result["listeners"][0].rpartition(":")
    sent = streamcheck.send(host, int(port), 1024 * 1024)
    assert target.wait()["sha256"] == sent["sha256"]
    rc, run = run_playbook(CASES, {"cases": [case], "state_dir": state_dir, "allowed_targets": ["127.0.0.0/8"]})
    assert rc == 0 and not run.output["plays"][0]["tasks"][0]["hosts"]["localhost"]["results"][0]["changed"]
    rc, run = run_playbook(CASES, {"cases": [{"uid": uid, "state": "absent"}], "state_dir": state_dir})
    assert rc == 0
    _nothing_left(state_dir)


def test_s2cs_refuses_each_bad_target_with_permission_denied(servers, tmp_path, sink):
    service = sink()
    server = servers("gw-strict", 46310, "46311-46320", allowed_targets=None)  # the strict default
    targets = bad_targets(service.port, 46310)
    with server.client() as client:
        for target in targets:
            uid = str(uuid.uuid4())
            with pytest.raises(ControlCallError) as caught:
                client.request(uid, "PROD", 1, prod_listeners=[target])
            assert caught.value.code == "PERMISSION_DENIED", caught.value
            assert "refused by the target policy" in caught.value.details
        for target in targets:
            uid = str(uuid.uuid4())
            client.request(uid, "CONS", 1)
            with pytest.raises(ControlCallError) as caught:
                client.update(uid, [target])
            assert caught.value.code == "PERMISSION_DENIED" and "refused by the target policy" in caught.value.details
            client.release(uid)
    assert sessions(server.state_dir) == []
    assert "refused by the target policy" in server.log()
    _nothing_left(server.state_dir)


def test_stream_request_refuses_bad_producer_targets(servers, pki, tmp_path, sink):
    service = sink()
    prod = servers("gw-prod", 46370, "46371-46379", allowed_targets=None)
    cons = servers("gw-cons", 46350, "46351-46359", allowed_targets=None)
    for target in bad_targets(service.port, 46370):
        uid = str(uuid.uuid4())
        variables = {"prod_server": prod.address, "cons_server": cons.address, "ca_path": pki["ca.crt"], "uid": uid,
                     "producer_targets": [target], "cons_allowed_targets": []}
        rc, run = run_playbook(STREAM, variables)
        [(dummy, dummy2, message)] = run.failures()
        assert rc != 0 and "PERMISSION_DENIED" in message and "\n" not in message, message
        assert uid not in cons.log()
    assert sessions(prod.state_dir) == [] and sessions(cons.state_dir) == []
    _nothing_left(prod.state_dir, cons.state_dir)


def test_no_smuggling_to_the_control_server_with_loopback_allowed(servers):
    """The demo's setting: loopback allowed. The control server's own port and its metrics port stay refused,
    so no data listener can carry a gRPC req to the management address."""
    server = servers("gw-open", 46330, "46340-46349", extra=["--metrics_port", "46331"])
    with server.client() as client:
        for target in ("127.0.0.1:46330", "[::ffff:127.0.0.1]:46330", "0.0.0.0:46330", "127.0.0.1:46331",
                       "localhost:46330"):
            uid = str(uuid.uuid4())
            with pytest.raises(ControlCallError) as caught:
                client.request(uid, "PROD", 1, prod_listeners=[target])
            assert caught.value.code == "PERMISSION_DENIED" and "protected port" in caught.value.details
            uid = str(uuid.uuid4())
            client.request(uid, "CONS", 1)
            with pytest.raises(ControlCallError) as caught:
                client.update(uid, [target])
            assert caught.value.code == "PERMISSION_DENIED" and "protected port" in caught.value.details
            client.release(uid)
    assert sessions(server.state_dir) == []
    _nothing_left(server.state_dir)


def test_stream_request_refuses_a_hostile_prod_answer_before_cons_is_asked(servers, hostile_prod, pki, sink):
    """A compromised PROD server answers loopback listeners: the CONS side's policy refuses them in
    stream_request; the CONS server never hears of the stream, PROD's session is released."""
    cons = servers("gw-cons", 46350, "46351-46359", allowed_targets=None)
    target = sink()
    answers = ["127.0.0.1:%d" % target.port, "[::ffff:127.0.0.1]:%d" % target.port, "0.0.0.0:%d" % target.port,
               "127.0.0.1:22", "169.254.169.254:80", "127.0.0.1:46350"]
    for index, answer in enumerate(answers):
        servicer, address = hostile_prod({"req": [answer], "update": [answer]}, port=46360 + index)
        uid = str(uuid.uuid4())
        variables = {"prod_server": address, "cons_server": cons.address, "ca_path": pki["ca.crt"], "uid": uid,
                     "producer_targets": ["10.0.3.10:5074"], "cons_allowed_targets": []}
        rc, run = run_playbook(STREAM, variables)
        [(dummy, dummy2, message)] = run.failures()
        assert rc != 0 and "PERMISSION_DENIED" in message and "prod_listeners" in message, message
        assert "refused by the target policy" in message and "\n" not in message
        assert sorted(m for m, dummy in servicer.calls) == ["hello", "release", "req", "update"]
        assert uid not in cons.log()
    assert sessions(cons.state_dir) == []
    _nothing_left(cons.state_dir)
