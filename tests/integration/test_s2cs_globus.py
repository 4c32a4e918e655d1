# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Globus Auth on a real S2CS: --client_id / --client_secret, tokens checked by introspection.

There is no network here, so Globus Auth is stood in for by
tests/globus_auth_standin.py (HTTPS on loopback, the one call the server
makes). globus-sdk is pointed at it the documented way: the
GLOBUS_SDK_SERVICE_URL_AUTH environment variable (read by
globus_sdk.config.get_service_url), and trusts its certificate through
GLOBUS_SDK_VERIFY_SSL (a CA file). Ports 41004-41005, 41011, 41017-41019, 41420-41429.

Every test asks for ``globus`` before ``servers``: the servers stop first, while
Globus Auth still answers, as in a real deployment.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from globus_auth_standin import AuthState, GlobusAuthStandIn
from s2cs_real import sessions

pytest.importorskip("grpc")
pytest.importorskip("globus_sdk")

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import ControlCallError  # noqa: E402

CLIENT_ID = "6d1c1f3e-2b43-4a7f-9c1e-1f0a4b7c2d11"
SCOPE = "https://auth.globus.org/scopes/%s/scistream" % CLIENT_ID
ALICE, BOB = "b1a2c3d4-0000-4000-8000-00000000a11c", "b1a2c3d4-0000-4000-8000-000000000b0b"


@pytest.fixture
def globus(pki, tmp_path):
    state = AuthState(CLIENT_ID, "the-client-secret")
    later = int(time.time()) + 3600
    state.add_token("tok-alice", sub=ALICE, scope="openid " + SCOPE, exp=later, username="alice@example.org")
    state.add_token("tok-bob", sub=BOB, scope=SCOPE, exp=later, username="bob@example.org")
    state.add_token("tok-expired", sub=ALICE, scope=SCOPE, exp=int(time.time()) - 10)
    state.add_token("tok-other-scope", sub=ALICE, scope="https://auth.globus.org/scopes/another-client/scistream",
                    exp=later)
    state.add_token("tok-inactive", active=False)
    secret = tmp_path / "client_secret"
    secret.write_text("the-client-secret\n")
    os.chmod(secret, 0o600)
    with GlobusAuthStandIn(state, 41005, pki["server.crt"], pki["server.key"]) as standin:
        env = {"GLOBUS_SDK_SERVICE_URL_AUTH": standin.url, "GLOBUS_SDK_VERIFY_SSL": pki["ca.crt"]}
        yield state, env, str(secret)


def test_globus_tokens_are_introspected_cached_and_own_their_sessions(globus, servers, tmp_path):
    state, env, secret = globus
    server = servers("gw", 41004, "41420-41429", env=env,
                     extra=["--client-id", CLIENT_ID, "--client_secret_file", secret])
    assert "Globus Auth (scope %s)" % SCOPE in server.log()
    uid = str(uuid.uuid4())
    with server.client(token="tok-alice") as alice, server.client(token="tok-bob") as bob:
        listeners = alice.request(uid, "PROD", 1, ["127.0.0.1:9"])[0]
        alice.update(uid, ["127.0.0.1:9"], "PROD")
        # req, hello and update with one token: Globus was asked once (cached until the token expires).
        assert state.count("tok-alice") == 1
        [info] = sessions(server.state_dir)
        assert info["owner"] == "globus:%s" % ALICE
        with pytest.raises(ControlCallError) as exc_info:
            bob.release(uid)
        assert exc_info.value.code == "PERMISSION_DENIED"
        assert alice.release(uid) == listeners
    for token in ("tok-expired", "tok-other-scope", "tok-inactive", "not-a-known-token", None):
        with server.client(token=token) as client:  # None: S2UC's INVALID_TOKEN
            with pytest.raises(ControlCallError) as exc_info:
                client.request(str(uuid.uuid4()), "PROD", 1, ["127.0.0.1:9"])
            assert exc_info.value.code == "UNAUTHENTICATED", (token, exc_info.value)
    assert sessions(server.state_dir) == []
    log = server.log()
    assert "expired" in log and "without the scope" in log and "not active" in log
    assert "tok-" not in log and "the-client-secret" not in log


def test_a_wrong_client_secret_refuses_every_call(globus, servers, tmp_path):
    state, env, dummy = globus
    wrong = tmp_path / "wrong_secret"
    wrong.write_text("not-the-secret\n")
    os.chmod(wrong, 0o600)
    server = servers("gw-wrong", 41011, "41425-41429", env=env,
                     extra=["--client_id", CLIENT_ID, "--client-secret-file", str(wrong)])
    with server.client(token="tok-alice") as client:
        with pytest.raises(ControlCallError) as exc_info:
            client.request(str(uuid.uuid4()), "PROD", 1, ["127.0.0.1:9"])
        assert exc_info.value.code == "UNAUTHENTICATED"
    assert "introspection refused (HTTP 401)" in server.log()


def test_a_globus_auth_that_never_answers_holds_neither_the_caller_nor_the_server(servers, pki, tmp_path):
    """Globus Auth accepts the connection and says nothing: the call is refused in bounded time, the server stops."""
    secret = tmp_path / "client_secret"
    secret.write_text("the-client-secret\n")
    os.chmod(secret, 0o600)
    with socket.create_server(("127.0.0.1", 41017), backlog=16) as silent:  # listens, never accepts, never answers
        env = {"GLOBUS_SDK_SERVICE_URL_AUTH": "https://127.0.0.1:41017/", "GLOBUS_SDK_VERIFY_SSL": pki["ca.crt"]}
        server = servers("gw-silent", 41018, "41019-41019", env=env,
                         extra=["--client_id", CLIENT_ID, "--client_secret_file", str(secret)])
        started = time.monotonic()
        with server.client(token="tok-alice", timeout=60) as client:
            with pytest.raises(ControlCallError) as exc_info:
                client.request(str(uuid.uuid4()), "PROD", 1, ["127.0.0.1:9"])
        waited = time.monotonic() - started
        assert exc_info.value.code == "UNAUTHENTICATED"
        # Two attempts of 5 s and a pause of at most 1 s (globus-sdk alone would retry 5 times over a minute);
        # a bound, with room for a loaded machine, not a measurement.
        assert waited < 30, waited
        assert "Globus Auth cannot be reached" in server.log()
        server.stop()  # while Globus Auth still says nothing
        assert silent.fileno() >= 0
