# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""runtime: janus with the real controller's users: a non-admin user, and ids that a new database hands out again.

A janus-ctrl process has one basic-auth user (JANUS_USER). The test renews
the run's controller (tests/janus_real.py) on an empty database as admin, then restarts it on the same database as the non-admin user
``scistream``; admin keeps working through the JWT it got from ``POST
/token`` before (the JWT secret is kept). Moves 1 MB only.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import Sink, docker_client, files_under, run_playbook
from janus_real import PLAYBOOK, janus_installed, push, record  # one playbook, one way to load the doc's profile

pytestmark = [pytest.mark.docker,
              pytest.mark.skipif(not janus_installed(), reason="no janus-dtnaas venv (.venv-janus; run .ci/setup)")]

# The run's controller is in 44000-44099 (tests/janus_real.py); this module's sessions in 44300-44399.
PORT_RANGE = "44300-44399"
USER = "scistream"
# What a Janus admin grants a non-admin user (docs/janus.md): the node, the host profile, the images.
GRANTS = [("nodes", ["dtn-a"]), ("profiles", ["scistream"]), ("images", ["scistream/haproxy"])]


@pytest.fixture
def controller(janus_controller):
    """The run's controller on a new, empty database, admin; admin again (a new database) if the test switched users."""
    janus = janus_controller.renew()
    janus.token = None
    try:
        yield janus
    finally:
        try:
            for session in janus.call("GET", "/active", token=janus.token).json():
                janus.call("DELETE", "/active/%d" % session["id"], token=janus.token, params={"force": "true"})
        finally:
            for container in containers_of(janus):
                container.remove(force=True)
            if janus.user != "admin":  # the next test gets admin, as the fixture promises
                janus.renew()


def containers_of(janus):
    """The containers this test's controller placed (their bind's source is its node's door)."""
    door = os.path.join(janus.state_dir, "janus", "session")
    return [c for c in docker_client().containers.list(all=True, filters={"name": "janus-scistream"})
            if any(m.get("Source") == door for m in c.attrs.get("Mounts", []))]


def play(janus, **extra):
    variables = {"state_dir": janus.state_dir, "port_range": PORT_RANGE, "janus_url": janus.url,
                 "janus_user": janus.user, "janus_password": janus.password}
    variables.update(extra)
    return run_playbook(PLAYBOOK, variables)


def test_a_remembered_id_is_adopted_only_when_the_session_carries_the_uid(controller):
    """A new controller database hands out id 1 again, to someone else's session: the module leaves it alone."""
    uid = "abababab-0000-4000-8000-000000000001"
    rc, run = play(controller, uid=uid, targets=["127.0.0.1:9"])
    assert rc == 0, run.failures()
    first_id = record(controller, uid)["runtime_state"]["janus_id"]
    assert first_id == 1

    # The controller comes back with a new (empty) database; its old container is an orphan now.
    controller.stop()
    os.rename(controller.db_path, controller.db_path + ".old")
    controller.start()
    for container in containers_of(controller):
        container.remove(force=True)
    assert controller.call("GET", "/nodes", params={"refresh": "true"}).status_code == 200
    other = controller.call("POST", "/create", json={"name": "someone-else", "instances": ["dtn-a"],
                                                     "image": "scistream/haproxy:local", "profile": "scistream",
                                                     "arguments": "sleep 600"})
    assert other.status_code == 200 and list(other.json()) == ["1"]

    rc, run = play(controller, uid=uid, targets=["127.0.0.1:9"])
    assert rc == 0 and run.result("Session")["actions"] == ["start"], run.failures()
    new_id = record(controller, uid)["runtime_state"]["janus_id"]
    assert new_id != 1
    assert controller.call("GET", "/active/1").json()["name"] == "someone-else"  # untouched

    rc, run = play(controller, uid=uid, targets=[], session_state="absent")
    assert rc == 0
    assert controller.call("GET", "/active/%d" % new_id).status_code == 404
    assert controller.call("GET", "/active/1").status_code == 200  # still there, still someone else's


def test_a_non_admin_user_with_the_documented_grants(controller):
    """scistream (not admin) runs a session once admin granted node, profile and image; admin's own stay hidden."""
    uid = "abababab-0000-4000-8000-000000000002"
    assert controller.call("GET", "/nodes", params={"refresh": "true"}).status_code == 200
    admins = controller.call("POST", "/create", json={"name": "admins-own", "instances": ["dtn-a"],
                                                      "image": "scistream/haproxy:local", "profile": "scistream",
                                                      "arguments": "sleep 600"})
    admins_id = int(list(admins.json())[0])
    controller.token = controller.admin_token()
    password = "scistream-" + os.urandom(6).hex()
    controller.restart(user=USER, password=password)

    target = Sink()
    rc, run = play(controller, uid=uid, targets=["127.0.0.1:%d" % target.port])
    result = run.result("Session")
    assert rc != 0 and "404" in result["msg"] and "'scistream'" in result["msg"], result["msg"]
    assert password not in json.dumps(run.output)
    assert not [f for f in files_under(controller.state_dir) if uid in f]

    for resource, names in GRANTS:
        granted = controller.call("POST", "/auth/bulk", token=controller.token,
                                  json={"resource": resource, "identifiers": names, "users": [USER]})
        assert granted.status_code == 200 and {r["status"] for r in granted.json()["results"]} == {"updated"}

    rc, run = play(controller, uid=uid, targets=["127.0.0.1:%d" % target.port])
    assert rc == 0, run.failures()
    assert {s["uid"]: s["healthy"] for s in run.result("Info")["sessions"]}[uid] is True
    sent = push(run.result("Session")["listeners"][0], 1024 * 1024)
    assert target.wait()["sha256"] == sent["sha256"]
    rc, again = play(controller, uid=uid, targets=["127.0.0.1:%d" % target.port])
    assert rc == 0 and again.changed == 0

    janus_id = record(controller, uid)["runtime_state"]["janus_id"]
    mine = controller.call("GET", "/active/%d" % janus_id, token=controller.token).json()
    assert mine["users"] == [USER] and mine["name"] == "scistream-" + uid
    assert controller.call("GET", "/active/%d" % admins_id).status_code == 404  # as scistream: not visible

    rc, run = play(controller, uid=uid, targets=[], session_state="absent")
    assert rc == 0 and run.result("Session")["changed"]
    assert controller.call("GET", "/active/%d" % janus_id, token=controller.token).status_code == 404
