# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The s2ds module's contract: clear failures that leave nothing behind, check mode, diff, secrets."""

from __future__ import annotations

import os

from conftest import ROOT, files_under, run_playbook
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import listening_ports

CASES = os.path.join(ROOT, "tests", "integration", "playbooks", "cases.yml")
UID_A = "11111111-2222-4333-8444-555555555555"
SECRET = "do-not-show-this-key-anywhere-0123"


def results(run):
    return run.result("Each case")["results"]


def test_bad_input_fails_clearly_and_leaves_nothing(tmp_path):
    state_dir = str(tmp_path / "gw")
    cases = [
        dict(label="not a uid", uid="not a uid", role="PROD"),
        dict(label="path", uid="../x", role="PROD"),
        dict(label="reversed", uid=UID_A, role="PROD", port_range="5200-5100"),
        dict(label="too high", uid=UID_A, role="PROD", port_range="65000-70000"),
        dict(label="exhausted", uid=UID_A, role="PROD", port_range="46900-46902", num_conn=4),
        dict(label="bad target", uid=UID_A, role="PROD", targets=["10.0.0.1"], port_range="46900-46910"),
        dict(label="bad backend", uid=UID_A, role="PROD", backend="envoy"),
        dict(label="no role", uid=UID_A),
    ]
    rc, run = run_playbook(CASES, {"cases": cases, "state_dir": state_dir})
    assert rc == 0
    out = results(run)
    assert all(r["failed"] for r in out), [r.get("msg") for r in out]
    messages = [r["msg"] for r in out]
    expected = [("uid", "not a uid"), ("uid", "../x"), ("port_range", "5200-5100"), ("port_range", "65000-70000"),
                ("num_conn", "46900-46902"), ("targets", "10.0.0.1"), ("backend", "envoy"), ("role", "")]
    for message, (field, value) in zip(messages, expected):
        assert field in message and value in message, message
    assert files_under(state_dir) == []
    assert not set(range(46900, 46911)) & listening_ports("tcp")


def test_same_uid_with_other_role_or_backend_is_refused(tmp_path, sink):
    state_dir = str(tmp_path / "gw")
    target = sink()
    first = dict(uid=UID_A, role="PROD", port_range="46920-46929", num_conn=1,
                 targets=["127.0.0.1:%d" % target.port])
    cases = [first, dict(first, role="CONS"), dict(first, backend="nginx"), dict(first, state="absent")]
    rc, run = run_playbook(CASES, {"cases": cases, "state_dir": state_dir})
    out = results(run)
    assert not out[0]["failed"] and out[1]["failed"] and out[2]["failed"] and not out[3]["failed"]
    assert "role 'CONS'" in out[1]["msg"] and "role PROD" in out[1]["msg"]
    assert "backend 'nginx'" in out[2]["msg"]
    assert files_under(state_dir) == []


def test_check_mode_and_diff(tmp_path, sink):
    state_dir = str(tmp_path / "gw")
    target = sink()
    case = dict(uid=UID_A, role="PROD", port_range="46930-46939", num_conn=2, targets=["127.0.0.1:%d" % target.port])
    rc, checked = run_playbook(CASES, {"cases": [case], "state_dir": state_dir}, check=True, diff=True)
    [out] = results(checked)
    # "count": the module counts its listeners whatever Python runs it (issue 22).
    assert out["changed"] and out["actions"] in (["reserve", "write_config", "start"], ["reserve", "write_config", "start", "count"])
    assert "server target_0 127.0.0.1:%d" % target.port in out["diff"]["after"]
    assert files_under(state_dir) == [] and not {46930, 46931} & listening_ports("tcp")

    rc, real = run_playbook(CASES, {"cases": [case], "state_dir": state_dir}, diff=True)
    assert results(real)[0]["ports"] == out["ports"] == [46930, 46931]
    rc, checked_again = run_playbook(CASES, {"cases": [case], "state_dir": state_dir}, check=True)
    assert checked_again.changed == 0
    run_playbook(CASES, {"cases": [dict(case, state="absent")], "state_dir": state_dir})
    assert files_under(state_dir) == []


def test_psk_never_appears_in_output_or_config(tmp_path, sink):
    state_dir = str(tmp_path / "gw")
    target = sink()
    case = dict(uid=UID_A, role="PROD", backend="stunnel", psk=SECRET, port_range="46940-46949", num_conn=1,
                targets=["127.0.0.1:%d" % target.port])
    rc, run = run_playbook(CASES, {"cases": [case], "state_dir": state_dir}, diff=True)
    assert rc == 0 and not results(run)[0]["failed"]
    # The loop item is the test's own variable; everything the module returned must hide the key.
    module_output = [{k: v for k, v in r.items() if k != "item"} for r in results(run)]
    assert SECRET not in str(module_output) and SECRET not in run.stderr
    assert results(run)[0]["invocation"]["module_args"]["psk"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    run_dir = os.path.join(state_dir, "run", UID_A)
    assert SECRET not in open(os.path.join(run_dir, "stunnel.conf")).read()
    assert oct(os.stat(os.path.join(run_dir, "psk.txt")).st_mode & 0o777) == "0o600"
    assert oct(os.stat(state_dir).st_mode & 0o777) == "0o700"
    run_playbook(CASES, {"cases": [dict(case, state="absent")], "state_dir": state_dir})
    assert files_under(state_dir) == []
