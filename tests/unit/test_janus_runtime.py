# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Janus runtime's decisions with a fake controller: what the real one cannot be made to do on demand.

Covered here and not against janus-dtnaas (tests/integration/test_janus*.py):
error bodies in every shape (the real 1.1 answers ``{"error": ...}`` and HTML;
``{"message": ...}`` comes from fronts and other versions), answers that are
not sessions at all (fuzzed), a session Janus reports MIXED or with service
errors, and the door's timing around one start.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes import janus, janus_client
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.store import SessionStore

UID = "4f6c1b7e-2a3d-4c5e-9f00-1234567890ab"
BASE = "http://127.0.0.1:1/api/janus/controller"


class Answer:
    """Just enough of a requests.Response."""

    def __init__(self, status_code, body):
        self.status_code = status_code
        self.text = body if isinstance(body, str) else json.dumps(body)

    def json(self):
        return json.loads(self.text)


@pytest.mark.parametrize("body, shown", [
    ({"error": "Creating session failed: Profile x not found"}, "Creating session failed: Profile x not found"),
    ({"message": "Invalid credentials", "details": "Unauthorized"}, "Invalid credentials; Unauthorized"),
    ([{"loc": ["body", "image"], "msg": "Field required"}], "Field required"),
    ("<!doctype html><title>403 Forbidden</title><h1>Forbidden</h1>", "403 Forbidden"),
    ("plain words", "plain words"),
    ({"other": 1}, "{'other': 1}"),
])
def test_errors_are_shown_in_every_body_shape(body, shown):
    assert shown in janus.error_text(Answer(500, body))


def client():
    return janus.JanusClient("http://127.0.0.1:1", "scistream", "the-password")


def test_failures_name_the_field_and_never_the_password():
    c = client()
    unauthorized = c._failure(Answer(401, {"error": "Unauthorized"}), "create")
    assert unauthorized.field == "janus_user" and "'scistream'" in str(unauthorized)
    forbidden = c._failure(Answer(403, "<title>403 Forbidden</title>"), "create")
    assert forbidden.field == "janus_user" and "403" in str(forbidden)
    for detail, field in (("Profile scistream not found", "janus_profile"), ("Image a/b:c not found", "image"),
                          ("Ednpoint dtn-a not found", "janus_node")):
        error = c._failure(Answer(404, {"error": "Creating session failed: " + detail}), "create")
        assert error.field == field and detail in str(error) and "/auth/bulk" in str(error)
    message = c._failure(Answer(500, {"message": "boom"}), "start of session 3")
    assert "boom" in str(message) and "500" in str(message)
    for error in (unauthorized, forbidden, message):
        assert "the-password" not in str(error)


def session_body(**overrides):
    body = {"id": 3, "name": "scistream-" + UID, "state": "STARTED", "users": ["scistream"],
            "services": {"dtn-a": [{"container_id": "abc", "container_name": "janus-scistream-3-1", "errors": [],
                                    "kwargs": {"HostConfig": {"NetworkMode": "host", "Mounts": [
                                        {"Source": "/s/janus/session", "Target": janus.CONTAINER_MOUNT,
                                         "Type": "bind", "ReadOnly": False}]}}}]}}
    body.update(overrides)
    return body


def test_a_session_is_parsed_into_typed_fields():
    session = janus.JanusSession.parse(session_body(state="started"), BASE)
    assert session.id == 3 and session.state == "STARTED" and session.errors == []
    [service] = session.services
    assert service.mounts == (("/s/janus/session", janus.CONTAINER_MOUNT),) and service.network_mode == "host"
    broken = janus.JanusSession.parse(session_body(services={"dtn-a": [{"errors": [
        {"reason": "Not Found", "response": {"message": "No such container: abc"}}]}]}), BASE)
    assert broken.errors == ["Not Found: No such container: abc"]
    # start and stop answer {"<id>": session}
    assert janus_client._unwrap({"3": session_body()})["id"] == 3 and janus_client._unwrap(session_body())["id"] == 3


@pytest.mark.parametrize("bad", [None, [], {"id": "3"}, {"id": True}, {"id": -1}, {"id": 3, "name": 7},
                                 {"id": 3, "state": 2}, {"id": 3, "services": []}, {"id": 3, "services": {"n": {}}},
                                 {"id": 3, "services": {"n": ["x"]}}, {"id": 3, "services": {"n": [{"errors": {}}]}}])
def test_what_is_not_a_session_is_refused_by_name(bad):
    with pytest.raises(S2DSError) as caught:
        janus.JanusSession.parse(bad, BASE)
    assert caught.value.field == "janus_url" and BASE in str(caught.value)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20)
SESSIONISH = st.fixed_dictionaries({"id": st.integers(-2, 10) | JSON}, optional={
    "name": st.text(max_size=10) | JSON, "state": st.sampled_from(["STARTED", "MIXED"]) | JSON,
    "services": st.dictionaries(st.text(max_size=5), st.lists(JSON | st.fixed_dictionaries(
        {}, optional={"errors": JSON, "kwargs": JSON, "container_id": JSON}), max_size=3), max_size=2) | JSON})


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, SESSIONISH))
def test_any_answer_is_a_session_or_a_clear_error(data):
    try:
        session = janus.JanusSession.parse(data, BASE)
    except S2DSError as exc:
        assert exc.field == "janus_url"
        return
    assert isinstance(session.id, int) and isinstance(session.state, str)
    assert all(isinstance(e, str) and len(e) <= janus.MAX_ERROR_TEXT + 3 for e in session.errors)


class FakeClient:
    """A controller with one session table; records calls and where the door pointed at each start."""

    def __init__(self, store, sessions=None):
        self.store = store
        self.table = dict(sessions or {})
        self.next_id = max(self.table, default=0) + 1
        self.calls = []
        self.door_at_start = []
        self.base, self.user = BASE, "scistream"

    def active(self, session_id):
        self.calls.append(("active", session_id))
        body = self.table.get(session_id)
        return janus.JanusSession.parse(body, BASE) if body else None

    def refresh_nodes(self):
        self.calls.append(("refresh",))

    def create(self, request):
        self.calls.append(("create", request["name"]))
        session_id, self.next_id = self.next_id, self.next_id + 1
        mounts = [{"Source": janus.JanusRuntime.door(self.store), "Target": janus.CONTAINER_MOUNT}]
        service = {"errors": [], "kwargs": {"HostConfig": {"NetworkMode": "host", "Mounts": mounts}}}
        self.table[session_id] = session_body(id=session_id, name=request["name"], state="INITIALIZED",
                                              services={"dtn-a": [service]})
        return session_id

    def stop(self, session_id):
        self.calls.append(("stop", session_id))
        self.table[session_id]["state"] = "STOPPED"
        return janus.JanusSession.parse(self.table[session_id], BASE)

    def start(self, session_id):
        self.calls.append(("start", session_id))
        self.door_at_start.append(os.path.realpath(janus.JanusRuntime.door(self.store)))
        self.table[session_id]["state"] = "STARTED"
        return janus.JanusSession.parse(self.table[session_id], BASE)

    def delete(self, session_id):
        self.calls.append(("delete", session_id))
        self.table.pop(session_id, None)

    def sessions(self):
        return [janus.JanusSession.parse(body, BASE) for body in self.table.values()]


def runtime_with(tmp_path, sessions=None):
    store = SessionStore(str(tmp_path / "node"))
    store.ensure_dirs()
    runtime = janus.JanusRuntime(url="http://127.0.0.1:1", node="dtn-a", profile="scistream",
                                 image="scistream/haproxy:local")
    runtime._client = FakeClient(store, sessions)
    record = SessionRecord(uid=UID, role="PROD", backend="haproxy", runtime="janus", listener_ip="127.0.0.1",
                           ports=[1], targets=["127.0.0.1:9"], runtime_state={"janus_node": "dtn-a"})
    os.makedirs(store.run_dir(UID), exist_ok=True)
    return runtime, store, record


def test_the_request_keeps_the_container_and_names_the_uid(tmp_path):
    runtime, store, record = runtime_with(tmp_path)
    request = runtime.request(get_backend("haproxy"), record)
    assert request["remove_container"] is False and request["name"] == "scistream-" + UID
    assert request["arguments"] == "haproxy -W -db -f %s/haproxy.cfg" % janus.CONTAINER_MOUNT


def test_start_opens_the_door_to_this_session_only_while_janus_starts_it(tmp_path):
    runtime, store, record = runtime_with(tmp_path)
    runtime.start(get_backend("haproxy"), store, record)
    client = runtime.client
    assert [c[0] for c in client.calls] == ["refresh", "create", "active", "start"]
    assert client.door_at_start == [os.path.realpath(store.run_dir(UID))]
    door = janus.JanusRuntime.door(store)
    assert os.path.realpath(door) == os.path.join(store.state_dir, "janus", "closed") and os.listdir(door) == []
    # Started already (its container may have died): stopped first, since Janus's start would do nothing.
    client.calls.clear()
    runtime.start(get_backend("haproxy"), store, record)
    assert [c[0] for c in client.calls] == ["active", "stop", "start"]


def test_a_remembered_id_of_someone_elses_session_is_not_adopted(tmp_path):
    runtime, store, record = runtime_with(tmp_path, {1: session_body(id=1, name="someone-else")})
    record.runtime_state["janus_id"] = 1
    assert runtime.is_running(get_backend("haproxy"), store, record) is False
    runtime.stop(get_backend("haproxy"), store, record)
    assert ("delete", 1) not in runtime.client.calls
    runtime.start(get_backend("haproxy"), store, record)
    assert record.runtime_state["janus_id"] == 2 and runtime.client.table[1]["name"] == "someone-else"


@pytest.mark.parametrize("state, errors", [("MIXED", []), ("INITIALIZED", []), ("STARTED", [{"reason": "x"}])])
def test_janus_saying_started_with_errors_or_anything_else_is_not_running(tmp_path, state, errors):
    body = session_body(id=1, state=state)
    body["services"]["dtn-a"][0]["errors"] = errors
    runtime, store, record = runtime_with(tmp_path, {1: body})
    record.runtime_state["janus_id"] = 1
    assert runtime.is_running(get_backend("haproxy"), store, record) is False


def test_a_profile_without_the_bind_fails_and_leaves_no_session(tmp_path):
    runtime, store, record = runtime_with(tmp_path)
    original = runtime.client.create

    def create_with_the_base_profile(request):
        session_id = original(request)
        runtime.client.table[session_id]["services"]["dtn-a"][0]["kwargs"] = {
            "HostConfig": {"NetworkMode": "bridge", "Mounts": []}}
        return session_id
    runtime.client.create = create_with_the_base_profile
    with pytest.raises(S2DSError) as caught:
        runtime.start(get_backend("haproxy"), store, record)
    assert caught.value.field == "janus_profile" and "bridge" in str(caught.value) and "binds nothing" in str(caught.value)
    assert runtime.client.table == {}


def test_the_door_is_never_a_real_directory(tmp_path):
    runtime, store, record = runtime_with(tmp_path)
    os.makedirs(janus.JanusRuntime.door(store))
    with pytest.raises(S2DSError) as caught:
        runtime.start(get_backend("haproxy"), store, record)
    assert caught.value.field == "state_dir"


def test_the_doc_shows_the_profile_file_as_it_is():
    """docs/janus.md shows docs/janus/profiles/scistream.yml (which the integration tests load) without drift."""
    import yaml  # pylint: disable=import-outside-toplevel
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "janus.md"), encoding="utf-8") as handle:
        doc = handle.read()
    shown = doc.split("## The profile", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    with open(os.path.join(root, "docs", "janus", "profiles", "scistream.yml"), encoding="utf-8") as handle:
        assert yaml.safe_load(shown) == yaml.safe_load(handle)


class Login:
    """A requests.Session.request that answers POST /token with ``answer`` and records the auth of every call."""

    def __init__(self, session, answer):
        self.session, self.answer, self.seen = session, answer, []

    def __call__(self, method, url, **kwargs):
        self.seen.append((url.rsplit("/", 1)[1], self.session.auth, self.session.headers.get("Authorization")))
        return self.answer if url.endswith("/token") else Answer(200, [])


@pytest.mark.parametrize("answer, bearer", [(Answer(200, {"access_token": "tok"}), True),
                                            (Answer(404, "<title>404 Not Found</title>"), False),
                                            (Answer(200, {"access_token": 7}), False)])
def test_the_password_is_traded_for_a_jwt_once_where_the_controller_offers_one(answer, bearer):
    c = client()
    c.session.request = login = Login(c.session, answer)
    c.sessions()
    c.sessions()
    assert [name for name, dummy, dummy in login.seen] == ["token", "active", "active"]
    last = login.seen[-1]
    assert (last[2] == "Bearer tok" and last[1] is None) if bearer else last[1] == ("scistream", "the-password")


def test_a_refused_login_names_the_user():
    c = client()
    c.session.request = Login(c.session, Answer(401, {"error": "Unauthorized"}))
    with pytest.raises(S2DSError) as caught:
        c.sessions()
    assert caught.value.field == "janus_user" and "the-password" not in str(caught.value)


def test_a_broken_record_releases_the_sessions_named_for_its_uid_only(tmp_path):
    runtime, store, record = runtime_with(tmp_path, {1: session_body(id=1), 2: session_body(id=2, name="other")})
    assert runtime.release_orphan(store, UID) == ["Janus session 1"]
    assert list(runtime.client.table) == [2]


def test_a_session_whose_container_is_gone_is_replaced(tmp_path):
    runtime, store, record = runtime_with(tmp_path, {1: session_body(id=1, state="STOPPED")})
    record.runtime_state["janus_id"] = 1
    original_start = runtime.client.start

    def start_fails_for_the_old_one(session_id):
        session = original_start(session_id)
        if session_id == 1:
            runtime.client.table[1]["state"] = "MIXED"
            runtime.client.table[1]["services"]["dtn-a"][0]["errors"] = [{"reason": "No such container"}]
            return janus.JanusSession.parse(runtime.client.table[1], BASE)
        return session
    runtime.client.start = start_fails_for_the_old_one
    runtime.start(get_backend("haproxy"), store, record)
    assert record.runtime_state["janus_id"] == 2 and 1 not in runtime.client.table


def test_a_profile_that_also_binds_the_state_dir_is_refused(tmp_path):
    runtime, store, record = runtime_with(tmp_path)
    original = runtime.client.create

    def create_with_an_extra_bind(request):
        session_id = original(request)
        mounts = runtime.client.table[session_id]["services"]["dtn-a"][0]["kwargs"]["HostConfig"]["Mounts"]
        mounts.append({"Source": os.path.join(store.state_dir, "run"), "Target": "/etc/scistream/sessions"})
        return session_id
    runtime.client.create = create_with_an_extra_bind
    with pytest.raises(S2DSError) as caught:
        runtime.start(get_backend("haproxy"), store, record)
    assert "other sessions' files" in str(caught.value) and runtime.client.table == {}
    assert janus._inside("/", store.state_dir) and not janus._inside("/data", store.state_dir)
