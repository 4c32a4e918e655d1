# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The control service's logic without gRPC: req/hello ordering, limits, ownership, tokens, the command line.

Sessions here never get targets, so no proxy runs; the Gateway and its
state dir are real. The service is asyncio code: each test runs one loop.
Ports 41950-41979 (the s2cs block).
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.control import (
    Caller, ControlError, ControlService, Limits, PendingMarks, peer_host, public_message)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import PortsExhausted, S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.ports import reserve_ports
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

server = pytest.importorskip("ansible_collections.scistream.gateway.plugins.module_utils.s2cs.server")

ALICE = Caller(identity="token-sha256:aa", peer="127.0.0.1")
BOB = Caller(identity="token-sha256:bb", peer="127.0.0.2")
ADMIN = Caller(identity="token-sha256:cc", peer="127.0.0.3", admin=True)


def make_service(tmp_path, **kwargs):
    gateway = Gateway(str(tmp_path / "state"), {"process": lambda s: ProcessRuntime("daemon")}, policy=LOOPBACK_POLICY)
    options = dict(listener_ip="127.0.0.1", port_range="41950-41959", hello_timeout=5, hello_grace=2)
    options.update(kwargs)
    return ControlService(gateway, **options)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def req_and_hello(service, uid, role, num_conn, prod_listeners=(), caller=None):
    """As S2UC: req and hello at once, the hello with role PROD (the service takes the role from req)."""
    req = asyncio.ensure_future(service.req(uid, role, num_conn, caller=caller))
    hello = asyncio.ensure_future(service.hello(uid, list(prod_listeners), caller=caller))
    return await req, await hello


def codes(exc_info):
    return exc_info.value.code


def test_hello_may_overtake_its_req(tmp_path):
    service = make_service(tmp_path)
    uid = str(uuid.uuid4())

    async def scenario():
        hello = asyncio.ensure_future(service.hello(uid, ["127.0.0.1:9000"]))
        await asyncio.sleep(0.05)
        listeners, prod_listeners, created = await service.req(uid, "PROD", 2)
        assert created and listeners == ["127.0.0.1:41950", "127.0.0.1:41951"]
        assert prod_listeners == ["127.0.0.1:9000"]
        assert await hello == listeners
        await service.release(uid)

    run(scenario())


def test_cons_session_takes_its_role_from_req(tmp_path):
    """S2UC sends hello with role PROD for a CONS session: accepted, its listeners not used as targets."""
    service = make_service(tmp_path)
    uid = str(uuid.uuid4())

    async def scenario():
        answer, hello = await req_and_hello(service, uid, "CONS", 1, ["consumer-host:7000"])
        assert answer == (["127.0.0.1:41950"], [], True) and hello == ["127.0.0.1:41950"]
        await service.release(uid)

    run(scenario())


def test_release_while_waiting_for_hello(tmp_path):
    service = make_service(tmp_path)
    uid = str(uuid.uuid4())

    async def scenario():
        req = asyncio.ensure_future(service.req(uid, "PROD", 1))
        for dummy in range(100):
            if uid in service._pending and service._pending[uid].reserved.is_set():  # pylint: disable=protected-access
                break
            await asyncio.sleep(0.02)
        await service.release(uid)
        with pytest.raises(ControlError) as exc_info:
            await req
        assert codes(exc_info) == "ABORTED"

    run(scenario())
    assert service.gateway.store.all() == [] and PendingMarks(service.gateway.store.state_dir).left() == []


def test_refused_hello_ends_its_req_at_once(tmp_path):
    """A hello with a bad prod_listener: the hello's error, for the req too, long before the hello timeout."""
    service = make_service(tmp_path, hello_timeout=60)
    uid = str(uuid.uuid4())

    async def scenario():
        loop = asyncio.get_running_loop()
        started = loop.time()
        req = asyncio.ensure_future(service.req(uid, "PROD", 1))
        with pytest.raises(ControlError) as hello_error:
            await service.hello(uid, ["127.0.0.1:70000"])
        with pytest.raises(ControlError) as req_error:
            await req
        assert loop.time() - started < 5
        return hello_error.value, req_error.value

    hello_error, req_error = run(scenario())
    assert hello_error.code == req_error.code == "INVALID_ARGUMENT"
    assert req_error.message == hello_error.message and "prod_listeners" in req_error.message
    assert service.gateway.store.all() == []


def test_unknown_and_bad(tmp_path):
    service = make_service(tmp_path, hello_grace=0.1)

    async def scenario():
        with pytest.raises(ControlError) as exc_info:
            await service.update(str(uuid.uuid4()), ["127.0.0.1:9"])
        assert codes(exc_info) == "NOT_FOUND"
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "SIDEWAYS", 1)
        assert codes(exc_info) == "INVALID_ARGUMENT" and "role" in exc_info.value.message
        with pytest.raises(ControlError) as exc_info:
            await service.hello(str(uuid.uuid4()), [])
        assert codes(exc_info) == "NOT_FOUND"

    run(scenario())


def test_limits_name_themselves(tmp_path):
    limits = Limits(pending_per_peer=2, quota_sessions=2, quota_ports=3, max_listeners=2)
    service = make_service(tmp_path, limits=limits)

    async def scenario():
        # Pending reqs per peer: two wait, the third is refused.
        waiting = [asyncio.ensure_future(service.req(str(uuid.uuid4()), "PROD", 1, caller=ALICE)) for dummy in range(2)]
        await asyncio.sleep(0.3)
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "PROD", 1, caller=ALICE)
        assert codes(exc_info) == "RESOURCE_EXHAUSTED" and "pending_per_peer" in exc_info.value.message
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await asyncio.sleep(0.3)  # the cancelled reservations are released
        assert service.gateway.store.all() == []
        # Ports per identity: 2 + 2 > 3.
        first = str(uuid.uuid4())
        await req_and_hello(service, first, "PROD", 2, ["127.0.0.1:9"], caller=ALICE)
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "PROD", 2, caller=ALICE)
        assert codes(exc_info) == "RESOURCE_EXHAUSTED" and "quota_ports" in exc_info.value.message
        # Sessions per identity: a second one fits, a third does not.
        await req_and_hello(service, str(uuid.uuid4()), "PROD", 1, ["127.0.0.1:9"], caller=ALICE)
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "PROD", 1, caller=ALICE)
        assert codes(exc_info) == "RESOURCE_EXHAUSTED" and "quota_sessions" in exc_info.value.message
        # Another identity has its own quota.
        await req_and_hello(service, str(uuid.uuid4()), "PROD", 1, ["127.0.0.1:9"], caller=BOB)
        # List lengths: num_conn (2) or max_listeners (2).
        with pytest.raises(ControlError) as exc_info:
            await service.update(first, ["127.0.0.1:9"] * 3, caller=ALICE)
        assert codes(exc_info) == "RESOURCE_EXHAUSTED" and "remote_listeners" in exc_info.value.message

    run(scenario())


def test_ownership(tmp_path):
    service = make_service(tmp_path, enforce_owner=True)
    uid = str(uuid.uuid4())

    async def scenario():
        await req_and_hello(service, uid, "PROD", 1, ["127.0.0.1:9"], caller=ALICE)
        [record] = service.gateway.store.all()
        assert record.owner == ALICE.identity
        for call in (lambda: service.update(uid, ["127.0.0.1:9"], caller=BOB),
                     lambda: service.release(uid, caller=BOB)):
            with pytest.raises(ControlError) as exc_info:
                await call()
            assert codes(exc_info) == "PERMISSION_DENIED"
        assert await service.release(uid, caller=ADMIN) == ["127.0.0.1:41950"]

    run(scenario())
    assert service.gateway.store.all() == []


def test_pending_marks_are_released_by_the_next_server(tmp_path):
    service = make_service(tmp_path)
    uid = str(uuid.uuid4())
    # What a server killed while the req waited leaves: the reservation and its mark.
    service.gateway.present(service._spec(uid, "PROD", 1), owner="peer:x")  # pylint: disable=protected-access
    service.marks.add(uid)
    again = make_service(tmp_path)
    assert again.recover() == [uid]
    assert again.gateway.store.all() == [] and again.marks.left() == []


def test_ports_exhausted_is_still_an_s2ds_error():
    with pytest.raises(PortsExhausted) as exc_info:
        reserve_ports(3, (41960, 41961), "127.0.0.1")
    assert isinstance(exc_info.value, S2DSError)
    assert exc_info.value.field == "num_conn" and str(exc_info.value).startswith("num_conn 3:")


def test_messages_lose_server_paths_and_peers_their_ports():
    assert public_message("record /var/lib/scistream/sessions/x.json is broken") == "record <path> is broken"
    assert public_message("num_conn 3: only 2 free in 5100-5200") == "num_conn 3: only 2 free in 5100-5200"
    assert peer_host("ipv4:127.0.0.1:53211") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:53211") == "::1"


def test_tokens_admins_and_hook():
    checker = server.TokenChecker(["alpha-token"], admin_tokens=["root-token"])
    assert checker.enabled and checker("alpha-token") and not checker("beta") and not checker("")
    assert checker.identify("alpha-token") == (server.token_identity("alpha-token"), False)
    assert checker.identify("root-token")[1] is True
    assert "alpha" not in server.token_identity("alpha-token")
    assert server.bearer_token([("authorization", "Bearer alpha-token")]) == "alpha-token"
    assert server.bearer_token([("authorization", "INVALID_TOKEN")]) == "INVALID_TOKEN"
    assert server.bearer_token([]) == ""

    def broken(token):
        raise RuntimeError("introspection down")

    assert not server.TokenChecker([], broken)("anything")
    assert server.TokenChecker([], lambda t: t == "from-hook")("from-hook")
    assert server.TokenChecker([], lambda t: "user-7").identify("x") == ("hook:user-7", False)
    assert server.TokenChecker([], lambda t: "user 7\n").identify("x") is None
    assert not server.TokenChecker().enabled


USER = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b"


class FakeIntrospection:
    """Stands in for globus_sdk's client in the cache test (the real one is tested against a local endpoint)."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = 0

    def oauth2_token_introspect(self, token):
        self.calls += 1
        return self.answer


def test_globus_answers_are_checked_and_cached():
    pytest.importorskip("globus_sdk")
    now = [1000.0]
    globus = server.GlobusIntrospection("client-1", "secret", clock=lambda: now[0])
    good = {"active": True, "exp": 1100, "scope": "openid https://auth.globus.org/scopes/client-1/scistream",
            "sub": USER}
    globus.client = FakeIntrospection(good)
    assert globus("tok") == "globus:" + USER and globus("tok") == "globus:" + USER
    assert globus.client.calls == 1  # cached
    now[0] = 1200.0
    assert globus("tok") is None  # expired: asked again, refused
    assert globus.client.calls == 2
    now[0] = 1000.0
    for bad in (dict(good, active=False), dict(good, scope="https://auth.globus.org/scopes/other/scistream"),
                dict(good, sub=""), dict(good, exp=None), dict(good, active="yes"), dict(good, exp=True),
                dict(good, sub="user\nname"), dict(good, scope=None)):
        globus.client = FakeIntrospection(bad)
        assert globus("other-%s" % id(bad)) is None


UPSTREAM_TYPES = [("Haproxy", ("haproxy", "docker")), ("Nginx", ("nginx", "docker")),
                  ("Stunnel", ("stunnel", "docker")), ("HaproxySubprocess", ("haproxy", "process")),
                  ("StunnelSubprocess", ("stunnel", "process")), ("DockerSock", ("haproxy", "docker")),
                  ("haproxy", ("haproxy", "process")), ("nginx", ("nginx", "process"))]


@pytest.mark.parametrize("name,expected", UPSTREAM_TYPES)
def test_upstream_type_names(name, expected):
    args = server.parse_args(["-t", name])
    assert (args.backend, args.runtime) == expected


def test_upstream_command_line_as_it_is():
    args = server.parse_args(["--listener-ip=10.0.0.1", "--port=5001", "--port-range=5151-5200",
                              "--type=HaproxySubprocess", "--server_crt=/etc/s.crt", "--server-key=/etc/s.key",
                              "--client-id", "cid", "--client_secret=xyz", "--verbose"])
    assert (args.listener_ip, args.port, args.port_range) == ("10.0.0.1", 5001, "5151-5200")
    assert (args.server_cert, args.server_key, args.client_id, args.client_secret) == (
        "/etc/s.crt", "/etc/s.key", "cid", "xyz")
    assert args.verbose and args.ssl and not args.insecure
    assert server.parse_args(["--ssl=False"]).insecure and server.parse_args(["--nossl"]).insecure
    assert not server.parse_args(["--ssl"]).insecure and server.parse_args(["--insecure"]).insecure
    assert server.parse_args(["--hello-timeout", "7"]).hello_timeout == 7.0
    assert server.parse_args(["--verbose=True"]).verbose and server.parse_args(["--v"]).verbose
    assert not server.parse_args(["--verbose=False"]).verbose and not server.parse_args([]).verbose
    assert server.parse_args(["--ssl", "False"]).insecure
    assert server.parse_args([]).hello_timeout == 180.0


def test_options_that_cannot_be_honoured_say_so(capsys):
    for argv, words in ((["-t", "Janus"], "cannot be honoured"), (["-t", "Bogus"], "must be one of"),
                        (["-t", "HaproxySubprocess", "--runtime", "docker"], "contradicts"),
                        (["--quota_ports", "0"], "at least 1")):
        with pytest.raises(SystemExit):
            server.parse_args(argv)
        assert words in capsys.readouterr().err


def test_version_and_grouped_help(capsys):
    with pytest.raises(SystemExit) as exc_info:
        server.parse_args(["--version"])
    assert exc_info.value.code == 0
    assert capsys.readouterr().out.startswith("s2cs, version: %s" % server.VERSION)
    galaxy = os.path.join(os.path.dirname(__file__), "..", "..", "galaxy.yml")
    with open(galaxy, encoding="utf-8") as handle:
        assert "version: %s\n" % server.VERSION in handle.read()
    text = server.parser().format_help()
    for heading in ("SciStream's s2cs options", "this server's options", "limits"):
        assert heading in text
    for option in ("--listener-ip", "--port-range", "--server_crt", "--client_id", "--quota_sessions", "-t"):
        assert option in text


def test_state_dir_lock(tmp_path):
    first = server.StateDirLock(str(tmp_path)).acquire()
    with pytest.raises(SystemExit) as exc_info:
        server.StateDirLock(str(tmp_path)).acquire()
    assert "held by another running S2CS (pid %d)" % os.getpid() in str(exc_info.value)
    first.release()
    server.StateDirLock(str(tmp_path)).acquire().release()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["active", "exp", "scope", "sub", "client_id"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(),
                                 st.lists(st.text(), max_size=3)), max_size=5))
def test_fuzz_any_introspection_answer(answer):
    """Whatever Globus (or something pretending to be it) answers: no exception, and an identity only when valid."""
    pytest.importorskip("globus_sdk")
    globus = server.GlobusIntrospection("client-1", "secret", clock=lambda: 1000.0)
    globus.client = FakeIntrospection(answer)
    identity = globus("token")
    if identity is not None:
        assert answer["active"] is True and answer["exp"] > 1000.0
        assert "https://auth.globus.org/scopes/client-1/scistream" in answer["scope"].split()
        assert re.fullmatch(r"globus:[0-9a-f-]{36}", identity)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.booleans(), st.none(), st.integers()))
def test_fuzz_hook_identities_stay_in_their_grammar(answer):
    found = server.TokenChecker([], lambda t: answer).identify("token")
    if found is not None:
        assert re.fullmatch(r"(hook:[A-Za-z0-9._@+-]{1,128}|token-sha256:[0-9a-f]{64})", found[0])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_public_messages_carry_no_path(text):
    cleaned = public_message("failed at /var/lib/scistream/run/%s/haproxy.cfg" % text.replace("/", ""))
    assert "/var/lib" not in cleaned


class FakeContext:
    """What authenticate() reads of a gRPC call: its peer and metadata (no traffic)."""

    def __init__(self, peer, token):
        self._peer, self._token = peer, token

    def peer(self):
        return self._peer

    def invocation_metadata(self):
        return (("authorization", self._token),)


def test_token_checks_are_bounded_per_peer_and_known_tokens_skip_the_queue():
    import concurrent.futures  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel
    release = threading.Event()

    def slow_hook(token):
        release.wait(5)
        return False

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    authenticate = server.authenticator(server.TokenChecker(["known-token"], slow_hook), pool, per_peer=2)

    async def scenario():
        slow = [asyncio.ensure_future(authenticate(FakeContext("ipv4:127.0.0.9:1000", "made-up-%d" % i)))
                for i in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(ControlError) as exc_info:
            await authenticate(FakeContext("ipv4:127.0.0.9:1001", "made-up-3"))
        assert codes(exc_info) == "RESOURCE_EXHAUSTED" and "pending_per_peer" in exc_info.value.message
        # Both threads are busy with made-up tokens; a listed token is answered at once all the same.
        caller = await asyncio.wait_for(authenticate(FakeContext("ipv4:127.0.0.8:1000", "known-token")), 1)
        assert caller.identity == server.token_identity("known-token") and caller.peer == "127.0.0.8"
        release.set()
        for outcome in await asyncio.gather(*slow, return_exceptions=True):
            assert isinstance(outcome, ControlError) and outcome.code == "UNAUTHENTICATED"

    try:
        run(scenario())
    finally:
        release.set()
        pool.shutdown(wait=True)
