# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""runtime: janus against the real ESnet Janus controller (janus-dtnaas 1.1), real containers, real bytes.

One controller for the whole run (tests/janus_real.py, the session fixture janus_controller), driving the local
Docker Engine through the Portainer-API stand-in (tests/portainer_standin.py),
with the profile of docs/janus/profiles/scistream.yml. The data tests move
64 MB each: run this module under ``flock /tmp/scistream-heavy.lock``.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import Sink, docker_client, files_under, run_playbook
from janus_real import (PLAYBOOK, SERVICE_PORTS, haproxy_tls_front, janus_installed, make_tls_files, pick_port,
                        push, record)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import wait_until
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.janus import CONTAINER_MOUNT

pytestmark = [pytest.mark.docker,
              pytest.mark.skipif(not janus_installed(), reason="no janus-dtnaas venv (.venv-janus; run .ci/setup)")]

# Ports: the run's controller, its stand-in and the TLS front in 44000-44099 (tests/janus_real.py); sessions 44100-44199.
PORT_RANGE = "44100-44199"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def janus(janus_controller):
    """The run's controller (tests/conftest.py), admin; whatever this module's tests left is removed after."""
    try:
        yield janus_controller
    finally:
        remove_everything(janus_controller)


def remove_everything(controller):
    """The safety net: every session this controller holds, and their containers."""
    try:
        for session in controller.call("GET", "/active").json():
            controller.call("DELETE", "/active/%d" % session["id"], params={"force": "true"})
    finally:
        for container in janus_containers(controller):
            container.remove(force=True)


def janus_containers(controller):
    """Containers placed by this controller (their bind's source is its node's door)."""
    doors = [os.path.join(d, "janus", "session") for d in (controller.state_dir, controller.cons_state_dir)]
    return [c for c in docker_client().containers.list(all=True, filters={"name": "janus-scistream"})
            if any(m.get("Source") in doors for m in c.attrs.get("Mounts", []))]


def play_vars(controller):
    return {"state_dir": controller.state_dir, "cons_state_dir": controller.cons_state_dir,
            "cons_profile": "scistream-b", "port_range": PORT_RANGE, "janus_url": controller.url,
            "janus_password": controller.password}


def play(controller, **extra):
    return run_playbook(PLAYBOOK, dict(play_vars(controller), **extra))


def janus_session(controller, janus_id):
    response = controller.call("GET", "/active/%d" % janus_id)
    return response.json() if response.status_code == 200 else None


def container_of(controller, uid, state_dir=None):
    """The Docker container of session ``uid``, found through what Janus says about it."""
    session = janus_session(controller, record(controller, uid, state_dir)["runtime_state"]["janus_id"])
    [service] = session["services"]["dtn-a"]
    return docker_client().containers.get(service["container_id"])


def health(run, uid, task="Info"):
    """healthy of session ``uid`` as s2ds_info reports it."""
    return {s["uid"]: s["healthy"] for s in run.result(task)["sessions"]}.get(uid)


def assert_released(controller, uid, janus_ids, container_ids):
    for janus_id in janus_ids:
        assert janus_session(controller, janus_id) is None
    left = {c.id for c in docker_client().containers.list(all=True)}
    assert not set(container_ids) & left
    for state_dir in (controller.state_dir, controller.cons_state_dir):
        assert not [f for f in files_under(state_dir) if uid in f]


@pytest.mark.parametrize("backend", ["haproxy", "nginx", "stunnel"])
def test_prod_and_cons_carry_64_mb(janus, sink, backend):
    """PROD and CONS sessions placed by Janus carry 64 MB (SHA-256 equal), re-run changed=0, release leaves nothing."""
    uid = "cccccccc-0000-4000-8000-00000000000%d" % ["haproxy", "nginx", "stunnel"].index(backend)
    target = sink(timeout=90)
    extra = {"backend": backend, "uid": uid, "with_cons": True, "targets": ["127.0.0.1:%d" % target.port]}
    if backend == "stunnel":
        extra["psk"] = "janus-test-psk-" + "5" * 24
    rc, run = play(janus, **extra)
    assert rc == 0, run.failures()
    assert health(run, uid) is True and health(run, uid, "Consumer info") is True
    cons = run.result("Consumer session")
    state_dirs = (janus.state_dir, janus.cons_state_dir)
    ids = [record(janus, uid, d)["runtime_state"]["janus_id"] for d in state_dirs]
    for janus_id, profile in zip(ids, ("scistream", "scistream-b")):
        session = janus_session(janus, janus_id)
        assert session["state"] == "STARTED" and session["name"] == "scistream-" + uid
        [service] = session["services"]["dtn-a"]
        assert service["container_name"] == "janus-%s-%d-1" % (profile, janus_id) and service["errors"] == []
        assert service["kwargs"]["HostConfig"]["NetworkMode"] == "host"
        assert "Autoremove" not in service["kwargs"]["HostConfig"]
    containers = [container_of(janus, uid, d) for d in state_dirs]

    sent = push(cons["listeners"][0], 64 * MB)
    assert target.wait()["sha256"] == sent["sha256"] and sent["bytes"] == 64 * MB

    rc, again = play(janus, **extra)
    assert rc == 0 and again.changed == 0, again.failures()

    rc, released = play(janus, session_state="absent", **extra)
    assert rc == 0 and released.result("Session")["changed"] and released.result("Consumer session")["changed"]
    assert_released(janus, uid, ids, [c.id for c in containers])


def test_config_change_kill_and_restore(janus, sink):
    """A changed config reaches the same container; a killed proxy is unhealthy until the next run restarts it."""
    uid = "dddddddd-0000-4000-8000-000000000001"
    first, second = sink(), sink()
    rc, run = play(janus, uid=uid, targets=["127.0.0.1:%d" % first.port])
    assert rc == 0 and health(run, uid) is True, run.failures()
    janus_id = record(janus, uid)["runtime_state"]["janus_id"]
    container = container_of(janus, uid)

    config = os.path.join(janus.state_dir, "run", uid, "haproxy.cfg")
    before = open(config, encoding="utf-8").read()
    rc, run = run_playbook(PLAYBOOK, dict(play_vars(janus), uid=uid, targets=["127.0.0.1:%d" % second.port]),
                           check=True, diff=True)
    checked = run.result("Session")
    assert rc == 0 and checked["changed"] and checked["actions"] == ["update", "write_config", "reload"]
    assert open(config, encoding="utf-8").read() == before and container_of(janus, uid).id == container.id
    assert str(second.port) in json.dumps(checked["diff"])

    rc, run = play(janus, uid=uid, targets=["127.0.0.1:%d" % second.port])
    assert rc == 0, run.failures()
    assert run.result("Session")["actions"] == ["update", "write_config", "reload"]
    assert container_of(janus, uid).id == container.id  # kept across the stop and start
    assert janus_session(janus, janus_id)["state"] == "STARTED"
    listener = run.result("Session")["listeners"][0]
    sent = push(listener, 4 * MB)
    assert second.wait()["sha256"] == sent["sha256"]

    container.kill()
    assert wait_until(lambda: docker_client().containers.get(container.id).status != "running", 10)
    assert janus_session(janus, janus_id)["state"] == "STARTED"  # Janus has not noticed
    rc, run = play(janus, uid=uid, targets=["127.0.0.1:%d" % second.port], only_info=True)
    assert rc == 0 and health(run, uid) is False
    [info] = [s for s in run.result("Info")["sessions"] if s["uid"] == uid]
    assert info["running"] is False

    rc, run = play(janus, uid=uid, targets=["127.0.0.1:%d" % second.port])
    assert rc == 0 and run.result("Session")["actions"] == ["start"], run.failures()
    assert health(run, uid) is True
    assert container_of(janus, uid).id == container.id
    again = Sink(port=second.port)
    sent = push(listener, 4 * MB)
    assert again.wait()["sha256"] == sent["sha256"]

    # A container removed behind Janus's back cannot be started again: the session is replaced.
    container.remove(force=True)
    rc, run = play(janus, uid=uid, targets=["127.0.0.1:%d" % second.port])
    assert rc == 0 and run.result("Session")["actions"] == ["start"] and health(run, uid) is True, run.failures()
    assert janus_session(janus, janus_id) is None
    replaced_id = record(janus, uid)["runtime_state"]["janus_id"]
    replacement = container_of(janus, uid)
    assert replaced_id != janus_id and replacement.status == "running"

    rc, released = play(janus, uid=uid, targets=[], session_state="absent")
    assert rc == 0 and released.result("Session")["changed"]
    assert_released(janus, uid, [janus_id, replaced_id], [container.id, replacement.id])


def test_a_proxy_container_cannot_read_another_sessions_psk(janus, sink):
    """Each container's one bind is its own session's run dir: another session's key is not in it."""
    uids = ["eeeeeeee-0000-4000-8000-000000000001", "eeeeeeee-0000-4000-8000-000000000002"]
    psks = ["first-session-psk-" + "a" * 20, "second-session-psk-" + "b" * 20]
    target = sink()
    for uid, psk in zip(uids, psks):
        rc, run = play(janus, uid=uid, backend="stunnel", psk=psk, targets=["127.0.0.1:%d" % target.port])
        assert rc == 0, run.failures()
    first, second = (container_of(janus, u) for u in uids)
    run_dirs = [os.path.join(janus.state_dir, "run", u) for u in uids]

    code, own = first.exec_run(["cat", CONTAINER_MOUNT + "/psk.txt"])
    assert code == 0 and psks[0] in own.decode()
    code, listing = first.exec_run(["ls", CONTAINER_MOUNT])
    assert sorted(listing.decode().split()) == sorted(os.listdir(run_dirs[0]))
    code, mountinfo = first.exec_run(["cat", "/proc/self/mountinfo"])
    [bind] = [line.split() for line in mountinfo.decode().splitlines() if line.split()[4] == CONTAINER_MOUNT]
    assert bind[3].endswith("/run/" + uids[0])  # the root of the bind: this session's run dir only
    for path in (os.path.join(run_dirs[1], "psk.txt"), CONTAINER_MOUNT + "/../" + uids[1] + "/psk.txt"):
        code, dummy = first.exec_run(["cat", path])
        assert code != 0
    code, found = first.exec_run(["grep", "-rlF", psks[1], "/etc", "/tmp", "/run"])
    assert code == 1 and found == b""  # grep: 1 = not found anywhere
    # Between starts the profile's bind source points at an empty directory.
    door = os.path.join(janus.state_dir, "janus", "session")
    assert os.listdir(os.path.realpath(door)) == []

    for uid in uids:
        rc, released = play(janus, uid=uid, backend="stunnel", targets=[], session_state="absent")
        assert rc == 0 and released.result("Session")["changed"]


def test_bad_credentials_unknown_profile_and_unreachable(janus):
    uid = "ffffffff-0000-4000-8000-000000000001"
    wrong = "not-the-password-xyz"
    rc, run = play(janus, uid=uid, targets=["127.0.0.1:9"], janus_password=wrong)
    result = run.result("Session")
    assert rc != 0 and "401" in result["msg"] and "'admin'" in result["msg"]
    assert wrong not in json.dumps(run.output) and janus.password not in json.dumps(run.output)
    assert not [f for f in files_under(janus.state_dir) if uid in f]

    rc, run = play(janus, uid=uid, targets=["127.0.0.1:9"], janus_profile="no-such-profile")
    result = run.result("Session")
    assert rc != 0 and "Profile no-such-profile not found" in result["msg"] and "404" in result["msg"]
    assert result["field"] == "janus_profile"
    assert not [f for f in files_under(janus.state_dir) if uid in f]

    closed = pick_port(SERVICE_PORTS[0] + 10, SERVICE_PORTS[1])  # free now: nothing listens there
    rc, run = play(janus, uid=uid, targets=["127.0.0.1:9"], janus_url="http://127.0.0.1:%d" % closed)
    assert rc != 0 and "not reachable" in run.result("Session")["msg"]
    assert not [f for f in files_under(janus.state_dir) if uid in f]


def test_tls_front_with_a_ca_file(janus, tmp_path):
    """Janus behind a TLS front (HAProxy, as deployments put NGINX in front): verified with janus_ca_path."""
    ca, cert, key = make_tls_files(tmp_path)
    tls_port = pick_port(SERVICE_PORTS[0] + 10, SERVICE_PORTS[1])
    front = haproxy_tls_front(tmp_path, tls_port, janus.port, cert, key)
    url = "https://127.0.0.1:%d" % tls_port
    uid = "ffffffff-0000-4000-8000-000000000002"
    try:
        rc, run = play(janus, uid=uid, targets=["127.0.0.1:9"], janus_url=url)
        assert rc != 0 and "TLS verification failed" in run.result("Session")["msg"]
        rc, run = play(janus, uid=uid, targets=["127.0.0.1:9"], janus_url=url, janus_ca_path=ca)
        assert rc == 0 and run.result("Session")["changed"] and health(run, uid) is True, run.failures()
        janus_id = record(janus, uid)["runtime_state"]["janus_id"]
        rc, run = play(janus, uid=uid, targets=[], janus_url=url, janus_ca_path=ca, session_state="absent")
        assert rc == 0 and janus_session(janus, janus_id) is None
    finally:
        front.terminate()
        front.wait(5)


def test_a_broken_record_still_releases_its_janus_session(janus, sink):
    """A truncated session record: release finds the Janus session by its name and removes it and its container."""
    uid = "ffffffff-0000-4000-8000-000000000003"
    target = sink()
    rc, run = play(janus, uid=uid, targets=["127.0.0.1:%d" % target.port])
    assert rc == 0, run.failures()
    janus_id = record(janus, uid)["runtime_state"]["janus_id"]
    container = container_of(janus, uid)
    with open(os.path.join(janus.state_dir, "sessions", uid + ".json"), "w", encoding="utf-8") as handle:
        handle.write('{"uid": "%s", "ro' % uid)
    rc, run = play(janus, uid=uid, targets=[], session_state="absent")
    result = run.result("Session")
    assert rc == 0 and result["changed"] and "Janus session %d" % janus_id in json.dumps(result["warnings"])
    assert_released(janus, uid, [janus_id], [container.id])
