# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""runtime: janus against a local controller that keeps to the documented Janus API."""

from __future__ import annotations

import json
import os

import pytest

from conftest import ROOT, files_under, run_playbook
from janus_controller import JanusController, JanusState, make_tls_files

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "janus.yml")
UID = "bbbbbbbb-0000-4000-8000-00000000000a"
PASSWORD = "s3cret-janus-pass"


@pytest.fixture
def controller():
    ctl = JanusController(JanusState(password=PASSWORD)).start()
    yield ctl
    ctl.stop()


def play(controller, tmp_path, **extra):
    variables = {"uid": UID, "targets": ["127.0.0.1:9000"], "state_dir": str(tmp_path / "node"),
                 "janus_url": controller.url, "janus_password": PASSWORD}
    variables.update(extra)
    rc, run = run_playbook(PLAYBOOK, variables)
    return rc, run, run.result("Session")


def record(tmp_path):
    with open(os.path.join(str(tmp_path / "node"), "sessions", UID + ".json")) as handle:
        return json.load(handle)


def test_lifecycle_idempotence_and_config_change(controller, tmp_path):
    rc, run, result = play(controller, tmp_path)
    assert rc == 0 and result["actions"] == ["reserve", "write_config", "start"], run.failures()
    [session] = controller.state.sessions.values()
    janus_id = record(tmp_path)["runtime_state"]["janus_id"]
    assert session["id"] == janus_id and session["state"] == "started"
    assert session["instances"] == ["dtn-a"] and session["profile"] == "scistream"
    assert session["image"] == "scistream/haproxy:local"
    assert session["arguments"] == "haproxy -W -db -f /etc/scistream/sessions/%s/haproxy.cfg" % UID
    config = (tmp_path / "node" / "run" / UID / "haproxy.cfg").read_text()
    assert "server target_0 127.0.0.1:9000" in config

    rc, run, again = play(controller, tmp_path)
    assert rc == 0 and not again["changed"]

    controller.state.calls.clear()
    rc, run, changed = play(controller, tmp_path, targets=["127.0.0.1:9001"])
    assert changed["actions"] == ["update", "write_config", "reload"]
    assert ("PUT", "/stop/%d" % janus_id) in controller.state.calls
    assert controller.state.calls[-1] == ("PUT", "/start/%d" % janus_id)
    assert len(controller.state.sessions) == 1

    rc, run, released = play(controller, tmp_path, session_state="absent")
    assert rc == 0 and released["changed"]
    assert controller.state.sessions == {} and files_under(str(tmp_path / "node")) == []


def test_controller_restart_keeps_finding_the_session(controller, tmp_path):
    play(controller, tmp_path)
    controller.stop()
    controller.start()  # same port, same sessions
    rc, run, again = play(controller, tmp_path)
    assert rc == 0 and not again["changed"] and len(controller.state.sessions) == 1
    # A session the controller lost is created again, and the new id remembered.
    controller.state.sessions.clear()
    rc, run, healed = play(controller, tmp_path)
    assert healed["actions"] == ["start"] and len(controller.state.sessions) == 1
    assert record(tmp_path)["runtime_state"]["janus_id"] == list(controller.state.sessions)[0]
    play(controller, tmp_path, session_state="absent")
    assert controller.state.sessions == {}


def test_wrong_password_and_unknown_profile_fail_clearly(controller, tmp_path):
    wrong = "not-the-password-xyz"
    rc, run, result = play(controller, tmp_path, janus_password=wrong)
    assert rc != 0 and "401" in result["msg"] and "admin" in result["msg"]
    assert wrong not in json.dumps(run.output) and PASSWORD not in json.dumps(run.output)
    assert files_under(str(tmp_path / "node")) == []

    rc, run, result = play(controller, tmp_path, janus_profile="no-such-profile")
    assert rc != 0 and "no-such-profile" in result["msg"] and "404" in result["msg"]
    assert PASSWORD not in json.dumps(run.output)
    assert files_under(str(tmp_path / "node")) == [] and controller.state.sessions == {}


def test_unreachable_controller(tmp_path):
    ctl = JanusController(JanusState(password=PASSWORD)).start()
    url = ctl.url
    ctl.stop()
    rc, run, result = play(ctl, tmp_path, janus_url=url)
    assert rc != 0 and "not reachable" in result["msg"] and url in result["msg"]
    assert files_under(str(tmp_path / "node")) == []


def test_tls_with_a_ca_file(tmp_path):
    ca, cert, key = make_tls_files(tmp_path)
    ctl = JanusController(JanusState(password=PASSWORD), certfile=cert, keyfile=key).start()
    try:
        rc, run, result = play(ctl, tmp_path)
        assert rc != 0 and "TLS verification failed" in result["msg"]
        rc, run, result = play(ctl, tmp_path, janus_ca_path=ca)
        assert rc == 0 and result["changed"], run.failures()
        play(ctl, tmp_path, session_state="absent", janus_ca_path=ca)
        assert ctl.state.sessions == {}
    finally:
        ctl.stop()
