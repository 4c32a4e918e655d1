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
import threading
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Clock
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


class SlowRefusal:
    """An introspection that refuses after a pause, counting its calls."""

    def __init__(self, started):
        self.started = started
        self.calls = 0

    def oauth2_token_introspect(self, token):
        self.calls += 1
        self.started.set()
        time.sleep(0.3)
        return {"active": False}


def test_calls_with_one_token_share_one_introspection_refusal_included():
    pytest.importorskip("globus_sdk")
    globus = server.GlobusIntrospection("client-1", "secret", clock=lambda: 1000.0)
    started = threading.Event()
    globus.client = SlowRefusal(started)
    answers = []
    first = threading.Thread(target=lambda: answers.append(globus("tok")))
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=lambda: answers.append(globus("tok")))  # S2UC's hello beside its req
    second.start()
    first.join(5)
    second.join(5)
    assert answers == [None, None] and globus.client.calls == 1
    assert globus("tok") is None and globus.client.calls == 2  # a refusal is not cached: a later call asks again


def test_globus_calls_are_bounded_in_time_and_retries():
    pytest.importorskip("globus_sdk")
    client = server.GlobusIntrospection("client-1", "secret").client
    settings_ = getattr(client, "retry_config", client.transport)  # globus-sdk 4, or 3
    assert client.transport.http_timeout == server.GlobusIntrospection.HTTP_TIMEOUT <= 10
    assert settings_.max_retries == server.GlobusIntrospection.MAX_RETRIES <= 2
    assert settings_.max_sleep <= 1


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


# -- limits that hold (issue 20 item 5) ------------------------------------------
def anon(peer):
    return Caller.anonymous(peer)


def test_port_quota_defaults_to_half_the_range(tmp_path):
    """One identity cannot hold every port: 10 ports, quota 5; a second address gets the rest."""
    service = make_service(tmp_path)
    assert service.quota_ports == 5
    assert Limits(quota_ports=7).ports_quota("1-10") == 7 and Limits().ports_quota("5100-5200") == 50

    async def scenario():
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "PROD", 6, caller=anon("127.0.0.1"))
        assert codes(exc_info) == "RESOURCE_EXHAUSTED" and "quota_ports" in exc_info.value.message
        await req_and_hello(service, str(uuid.uuid4()), "PROD", 5, ["127.0.0.1:9"], caller=anon("127.0.0.1"))
        await req_and_hello(service, str(uuid.uuid4()), "PROD", 5, ["127.0.0.1:9"], caller=anon("127.0.0.2"))

    run(scenario())


def test_pending_counts_per_identity_per_address_and_in_total(tmp_path):
    """Auth on: identities on one host have their own pending cap; the address's cap is larger; the server's holds."""
    limits = Limits(pending_per_identity=2, pending_per_peer=5, max_pending=7, quota_sessions=50, quota_ports=50)
    service = make_service(tmp_path, limits=limits, port_range="41950-41979", enforce_owner=True)
    users = [Caller(identity="token-sha256:%02d" % i, peer="127.0.0.1") for i in range(4)]

    async def scenario():
        tasks = []

        def start(caller):
            tasks.append(asyncio.ensure_future(service.req(str(uuid.uuid4()), "PROD", 1, caller=caller)))

        start(users[0])
        start(users[0])
        await asyncio.sleep(0.2)
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "PROD", 1, caller=users[0])
        assert codes(exc_info) == "RESOURCE_EXHAUSTED" and "pending_per_identity" in exc_info.value.message
        start(users[1])   # another identity on the same host is not locked out
        start(users[1])
        start(users[2])
        await asyncio.sleep(0.2)
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "PROD", 1, caller=users[3])
        assert codes(exc_info) == "RESOURCE_EXHAUSTED" and "pending_per_peer" in exc_info.value.message
        # Early hellos count too, for their identity and address.
        with pytest.raises(ControlError) as exc_info:
            await service.hello(str(uuid.uuid4()), [], caller=users[3])
        assert "pending_per_peer" in exc_info.value.message
        other = [Caller(identity="token-sha256:x%d" % i, peer="127.0.0.%d" % (2 + i)) for i in range(3)]
        start(other[0])
        start(other[1])
        await asyncio.sleep(0.2)
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "PROD", 1, caller=other[2])
        assert codes(exc_info) == "RESOURCE_EXHAUSTED" and "max_pending" in exc_info.value.message
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for dummy in range(100):  # the cancelled reservations are released in the background
            if not service.gateway.store.all():
                break
            await asyncio.sleep(0.1)
        assert service.gateway.store.all() == []

    run(scenario())


def test_anonymous_sessions_have_a_server_wide_cap(tmp_path):
    service = make_service(tmp_path, limits=Limits(max_anonymous_sessions=2))

    async def scenario():
        for peer in ("127.0.0.1", "127.0.0.2"):
            await req_and_hello(service, str(uuid.uuid4()), "PROD", 1, ["127.0.0.1:9"], caller=anon(peer))
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "PROD", 1, caller=anon("127.0.0.3"))
        assert codes(exc_info) == "RESOURCE_EXHAUSTED" and "max_anonymous_sessions" in exc_info.value.message

    run(scenario())


def test_a_large_req_waits_a_shorter_hello_timeout(tmp_path):
    service = make_service(tmp_path, hello_timeout=30, limits=Limits(large_req_hello_timeout=0.5))
    assert service.hello_timeout_for(2) == 30 and service.hello_timeout_for(3) == 0.5  # a quarter of 10 is 2

    async def scenario():
        started = asyncio.get_running_loop().time()
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "PROD", 5)
        assert codes(exc_info) == "DEADLINE_EXCEEDED" and asyncio.get_running_loop().time() - started < 5
        assert service.gateway.store.all() == []

    run(scenario())


def test_unknown_release_is_answered_without_the_gateway(tmp_path):
    """3,000 made-up uids: NOT_FOUND from a stat, no lock, no worker thread."""
    service = make_service(tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("the gateway was asked")

    service.gateway.absent = fail
    service._blocking = fail  # pylint: disable=protected-access

    async def scenario():
        for dummy in range(3000):
            with pytest.raises(ControlError) as exc_info:
                await service.release(str(uuid.uuid4()))
            assert codes(exc_info) == "NOT_FOUND"

    run(scenario())


def test_rate_limiter_refills_and_forgets_quiet_peers():
    clock = Clock(0.0)
    limiter = control_module().RateLimiter(10, 5, clock=clock)
    assert [limiter.allow("a") for dummy in range(6)] == [True] * 5 + [False]
    assert limiter.allow("b")  # each address its own bucket
    clock.now = 0.1
    assert limiter.allow("a") and not limiter.allow("a")
    limiter.MAX_BUCKETS = 3
    clock.now = 10
    for peer in ("c", "d", "e"):
        limiter.allow(peer)
    assert len(limiter._buckets) <= 3  # pylint: disable=protected-access


@settings(max_examples=200, deadline=None)
@given(st.floats(0.5, 100), st.integers(1, 50), st.lists(st.floats(0, 2), max_size=200))
def test_fuzz_rate_limiter_never_allows_more_than_burst_plus_rate(rate, burst, gaps):
    clock = Clock(0.0)
    limiter = control_module().RateLimiter(rate, burst, clock=clock)
    allowed = 0
    for gap in gaps:
        clock.now += gap
        allowed += limiter.allow("peer")
    assert allowed <= burst + rate * clock.now + 1e-6


def control_module():
    from ansible_collections.scistream.gateway.plugins.module_utils.s2cs import control  # pylint: disable=import-outside-toplevel
    return control


def test_rate_limit_refusal_names_its_limit():
    control = control_module()

    class Service:
        limits = Limits(rate_per_peer=1, rate_burst=2)

        @staticmethod
        async def release(uid, caller=None):
            return []

    class Context:
        aborted = None

        def peer(self):
            return "ipv4:127.0.0.5:4000"

        async def abort(self, code, details):
            self.aborted = (code, details)
            raise RuntimeError("aborted")

    servicer = control.ControlServicer(Service())

    async def scenario():
        context = Context()
        for dummy in range(2):
            assert await servicer._call(context, Service.release, "u") == []  # pylint: disable=protected-access
        with pytest.raises(RuntimeError):
            await servicer._call(context, Service.release, "u")  # pylint: disable=protected-access
        assert context.aborted[0].name == "RESOURCE_EXHAUSTED" and "rate_per_peer" in context.aborted[1]

    run(scenario())


def test_proxy_output_stays_in_the_log(tmp_path, caplog):
    """A proxy checker's output (its version, a log tail, a file it was made to read) never reaches the client."""
    service = make_service(tmp_path)
    hostile = "HAProxy version 2.8.5\x1b[2J\nSECRET-FROM-A-ROOT-FILE" + "x" * 5000

    def present(spec, owner=None, **kwargs):
        raise S2DSError("haproxy rejected the rendered config: %s" % hostile, field="template", value="haproxy")

    service.gateway.present = present

    async def scenario():
        with pytest.raises(ControlError) as exc_info:
            await service.req(str(uuid.uuid4()), "PROD", 1)
        assert codes(exc_info) == "INTERNAL"
        assert "SECRET" not in exc_info.value.message and "version" not in exc_info.value.message

    with caplog.at_level("ERROR", logger="scistream.s2cs"):
        run(scenario())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "SECRET-FROM-A-ROOT-FILE" in logged and "\x1b" not in logged and "\\x1b[2J\\n" in logged
    assert max(len(r.getMessage()) for r in caplog.records) < 2200


# -- connections and descriptors -------------------------------------------------
class FakeResource:
    RLIMIT_NOFILE = 7
    RLIM_INFINITY = -1

    def __init__(self, soft, hard):
        self.limits = (soft, hard)

    def getrlimit(self, which):
        return self.limits

    def setrlimit(self, which, limits):
        self.limits = limits


def test_soft_nofile_is_raised_and_connections_fit_in_it():
    fake = FakeResource(1024, 524288)
    assert server.raise_nofile(fake) == 524288 and fake.limits == (524288, 524288)
    assert server.raise_nofile(FakeResource(1024, 1024)) == 1024
    assert server.connection_cap(4096, 1024) == 1024 - server.FD_RESERVE
    assert server.connection_cap(4096, 524288) == 4096 and server.connection_cap(4096, None) == 4096
    options = dict(server.grpc_options(server.parse_args([]), 1024))
    assert options["grpc.max_allowed_incoming_connections"] == 768
    assert options["grpc.server_handshake_timeout_ms"] == 10000 and options["grpc.max_concurrent_streams"] == 64


def test_new_limit_options(capsys):
    args = server.parse_args(["--max_pending_per_identity", "3", "--max-pending", "9", "--rate_per_peer", "2.5",
                              "--rate_burst", "4", "--max_connections", "100", "--large_req_hello_timeout", "7",
                              "--max_anonymous_sessions", "11"])
    limits = server.limits_of(args)
    assert (limits.pending_per_identity, limits.max_pending, limits.rate_per_peer, limits.rate_burst,
            limits.large_req_hello_timeout, limits.max_anonymous_sessions) == (3, 9, 2.5, 4, 7.0, 11)
    assert limits.quota_ports is None  # half of the range, resolved by the service
    for bad in (["--rate_per_peer", "inf"], ["--rate_per_peer", "nan"], ["--handshake_timeout", "0"],
                ["--max_pending", "0"], ["--max_connections", "-1"]):
        with pytest.raises(SystemExit):
            server.parse_args(bad)
    help_text = server.parser().format_help()
    for option in ("--max_pending_per_identity", "--max_pending ", "--max_anonymous_sessions", "--rate_per_peer",
                   "--rate_burst", "--max_connections", "--handshake_timeout", "--max_connection_idle",
                   "--max_concurrent_streams", "--large_req_hello_timeout"):
        assert option in help_text


# -- Globus Auth's sub and exp (issue 20 item 6) -------------------------------------
def test_globus_sub_only_in_canonical_text():
    user = "0f8e5c34-1d8a-4f6b-9f5e-3d2c1b0a9e8d"
    assert server.globus_identity(user) == "globus:" + user
    for folded in (user.upper(), "{%s}" % user, "urn:uuid:%s" % user, user.replace("-", ""), " %s" % user,
                   "%s\n" % user, "{%s}" % user.upper()):
        assert server.globus_identity(folded) is None, folded


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.uuids().map(lambda u: u.urn),
                 st.uuids().map(lambda u: "{%s}" % u), st.uuids().map(lambda u: u.hex), st.text(max_size=60)))
def test_fuzz_globus_sub_is_an_identity_only_when_canonical(sub):
    identity = server.globus_identity(sub)
    canonical = bool(re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", sub))
    assert (identity is not None) == canonical
    if identity is not None:
        assert identity == "globus:%s" % uuid.UUID(sub)


def test_globus_exp_finite_near_and_cached_briefly():
    pytest.importorskip("globus_sdk")
    now = [1000.0]
    globus = server.GlobusIntrospection("client-1", "secret", clock=lambda: now[0])
    good = {"active": True, "exp": 1000 + 48 * 3600, "scope": "https://auth.globus.org/scopes/client-1/scistream",
            "sub": USER}
    for bad_exp in (float("inf"), float("nan"), 10 ** 400, 1000 + 365 * 86400, "2000000000", -float("inf")):
        globus.client = FakeIntrospection(dict(good, exp=bad_exp))
        assert globus("tok-%r" % (bad_exp,)) is None
    globus.client = FakeIntrospection(good)
    assert globus("tok") == "globus:" + USER and globus.client.calls == 1
    now[0] += globus.MAX_CACHE_SECONDS + 1  # within exp, past the cache's own bound: Globus is asked again
    assert globus("tok") == "globus:" + USER and globus.client.calls == 2


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10 ** 500, max_value=10 ** 500),
                 st.booleans(), st.text(max_size=10), st.none()))
def test_fuzz_globus_exp_is_finite_and_bounded(exp):
    pytest.importorskip("globus_sdk")
    globus = server.GlobusIntrospection("client-1", "secret", clock=lambda: 1000.0)
    globus.client = FakeIntrospection({"active": True, "exp": exp, "sub": USER,
                                       "scope": "https://auth.globus.org/scopes/client-1/scistream"})
    if globus("token") is not None:
        assert 1000.0 < float(exp) <= 1000.0 + globus.MAX_LIFETIME
        [(identity, until)] = globus._cache.values()  # pylint: disable=protected-access
        assert until <= 1000.0 + globus.MAX_CACHE_SECONDS


# -- text from elsewhere ------------------------------------------------------
def test_untrusted_text_is_escaped_and_cut():
    from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.text import untrusted_text  # pylint: disable=import-outside-toplevel
    assert untrusted_text("plain: 'ok' \\ done") == "plain: 'ok' \\ done"
    assert untrusted_text("a\x1b[31mb\nc\u202ed\x00") == "a\\x1b[31mb\\nc\\u202ed\\x00"
    cut = untrusted_text("y" * 3069)
    assert len(cut) == 300 and cut.endswith("...[cut]")
    assert untrusted_text(b"\xff\xfe") == "\\xff\\xfe"


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=2000), st.binary(max_size=500)), st.integers(16, 400))
def test_fuzz_untrusted_text_is_printable_ascii_and_bounded(value, limit):
    from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.text import untrusted_text  # pylint: disable=import-outside-toplevel
    text = untrusted_text(value, limit)
    assert len(text) <= limit and all(" " <= c <= "~" for c in text)
    if isinstance(value, str) and len(value) <= limit and all(" " <= c <= "~" for c in value):
        assert text == value


# -- proxy_container's names (matched whole) -------------------------------------------
def test_proxy_container_names_are_matched_whole():
    from ansible_collections.scistream.gateway.plugins.modules import proxy_container  # pylint: disable=import-outside-toplevel
    assert proxy_container.FILE_RE.fullmatch("psk.txt")
    for bad in ("psk.txt\n", "psk.txt\n/../../etc/x", "", ".hidden", "a/b", "x" * 129):
        assert not proxy_container.FILE_RE.fullmatch(bad) and not proxy_container.NAME_RE.fullmatch(bad), bad


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=140))
def test_fuzz_proxy_container_names(name):
    from ansible_collections.scistream.gateway.plugins.modules import proxy_container  # pylint: disable=import-outside-toplevel
    for pattern in (proxy_container.NAME_RE, proxy_container.FILE_RE):
        if pattern.fullmatch(name):
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name) and "\n" not in name and "/" not in name


def test_sessions_get_the_server_lifetime_and_the_owner_renews_them(tmp_path):
    service = make_service(tmp_path, session_lifetime=3600, max_session_lifetime=5400, idle_timeout=86400)
    clock = {"now": 1_800_000_000}
    service.gateway.clock = lambda: clock["now"]
    uid = str(uuid.uuid4())

    async def scenario():
        await req_and_hello(service, uid, "PROD", 1, caller=ALICE)
        [record] = service.gateway.store.all()
        assert (record.lifetime, record.idle_timeout, record.expires_at) == (3600, 86400, clock["now"] + 3600)
        assert record.max_expires_at == clock["now"] + 5400
        clock["now"] += 1000
        await service.hello(uid, [], caller=ALICE)  # a hello renews
        assert service.gateway.store.load(uid).expires_at == clock["now"] + 3600
        clock["now"] += 1000
        await service.req(uid, "PROD", 1, caller=ALICE)  # so does a req
        await service.update(uid, ["127.0.0.1:9"], caller=ALICE)  # and an update (this one changes it)
        assert service.gateway.store.load(uid).expires_at == 1_800_000_000 + 5400  # never past the maximum
        assert await service.expire() == []
        clock["now"] = 1_800_000_000 + 5400
        [gone] = await service.expire()
        assert gone["uid"] == uid and gone["reason"] == "lifetime"

    run(scenario())
    assert service.gateway.store.all() == []


def test_a_req_waiting_for_its_hello_is_not_expired(tmp_path):
    service = make_service(tmp_path, session_lifetime=1, hello_timeout=3)
    uid = str(uuid.uuid4())

    async def scenario():
        req = asyncio.ensure_future(service.req(uid, "PROD", 1, caller=ALICE))
        await asyncio.sleep(0.3)
        assert await service.expire() == []
        service.gateway.clock = lambda: 10 ** 10
        assert await service.expire() == []  # pending: kept
        await service.hello(uid, [], caller=ALICE)
        await req  # the hello renewed it: one second from "now"
        assert await service.expire() == []
        service.gateway.clock = lambda: 10 ** 10 + 1
        [gone] = await service.expire()
        assert gone["uid"] == uid

    run(scenario())


@pytest.mark.parametrize("argv, message", [
    (["--session_lifetime", "12 h"], "--session_lifetime '12 h'"),
    (["--idle_timeout=-5m"], "--idle_timeout '-5m'"),
    (["--max_session_lifetime", "31d"], "--max_session_lifetime '31d'"),
    (["--session_lifetime", "2h", "--max_session_lifetime", "1h"], "longer than --max_session_lifetime 1h"),
    (["--expire_interval", "0"], "--expire_interval"),
])
def test_lifetime_options_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        server.parse_args(argv)
    assert message in capsys.readouterr().err


def test_lifetime_option_defaults():
    args = server.parse_args([])
    assert (args.session_lifetime, args.max_session_lifetime, args.idle_timeout, args.expire_interval) == (43200, 0, 0, 5.0)
    args = server.parse_args(["--session-lifetime", "90s", "--idle-timeout=30m", "--max-session-lifetime", "7d"])
    assert (args.session_lifetime, args.idle_timeout, args.max_session_lifetime) == (90, 1800, 604800)


def rated_service(tmp_path, **kwargs):
    """A service whose gateway's shaper is a fake one (no kernel state is touched here)."""
    from test_rate_decisions import FakeShaper  # pylint: disable=import-outside-toplevel
    gateway = Gateway(str(tmp_path / "state"), {"process": lambda s: ProcessRuntime("daemon")}, policy=LOOPBACK_POLICY,
                      shaper=FakeShaper())
    options = dict(listener_ip="127.0.0.1", port_range="41950-41959", hello_timeout=5, hello_grace=2)
    options.update(kwargs)
    return ControlService(gateway, **options)


async def rated_req(service, rate, caller=ALICE):
    uid = str(uuid.uuid4())
    req = asyncio.ensure_future(service.req(uid, "PROD", 1, caller=caller, rate=rate))
    hello = asyncio.ensure_future(service.hello(uid, [], caller=caller))
    try:
        await req  # a refused req first: its hello then finds no session
    finally:
        await asyncio.gather(hello, return_exceptions=True)
    return service.gateway.store.load(uid).rate


def test_rate_policy_off_ignores_what_clients_ask(tmp_path):
    service = rated_service(tmp_path)
    assert run(rated_req(service, 10000)) is None  # S2UC's default slows nothing


def test_rate_policy_honour_and_its_limits(tmp_path):
    service = rated_service(tmp_path, rate_policy="honour", max_rate=200_000_000, max_rate_per_identity=240_000_000)

    async def scenario():
        assert await rated_req(service, 20000) == 160_000_000  # upstream's --rate=20000, 20 MB/s
        with pytest.raises(ControlError, match=r"limit max_rate \(--max_rate 200Mbit\) reached: the session asks for "
                                               r"240Mbit") as refused:
            await rated_req(service, 30000)
        assert codes(refused) == "RESOURCE_EXHAUSTED"
        with pytest.raises(ControlError, match=r"limit max_rate_per_identity \(--max_rate_per_identity 240Mbit\) "
                                               r"reached: this identity's sessions hold 160Mbit"):
            await rated_req(service, 15000)
        assert await rated_req(service, 10000) == 80_000_000  # 160 + 80 = 240: exactly the cap
        assert await rated_req(service, 10000, caller=BOB) == 80_000_000  # another identity, its own cap

    run(scenario())


def test_rate_policy_cap(tmp_path):
    service = rated_service(tmp_path, rate_policy="cap", max_rate=100_000_000, max_rate_per_identity=150_000_000)

    async def scenario():
        assert await rated_req(service, 20000) == 100_000_000  # min(asked, --max_rate)
        assert await rated_req(service, 0) == 50_000_000  # none asked: what is left of the identity's cap
        with pytest.raises(ControlError, match="limit max_rate_per_identity"):
            await rated_req(service, 1000)

    run(scenario())


def test_rate_settings_are_checked(tmp_path, capsys):
    with pytest.raises(S2DSError, match="needs --max_rate"):
        rated_service(tmp_path, rate_policy="cap")
    for argv, message in ((["--max_rate", "5 Mbit"], "--max_rate '5 Mbit'"), (["--max_rate", "100"], "--max_rate '100'"),
                          (["--rate_policy", "always"], "--rate_policy"),
                          (["--max_rate_per_identity", "1.5Gbit"], "--max_rate_per_identity '1.5Gbit'"),
                          (["--rate_devices", "eth0,../x"], "--rate_devices '../x'")):
        with pytest.raises(SystemExit):
            server.parse_args(argv)
        assert message in capsys.readouterr().err
    args = server.parse_args(["--rate-policy", "cap", "--max-rate", "2Gbit", "--max_rate_per_identity", "100MB/s",
                              "--rate_devices", "eth1,eth2"])
    assert (args.rate_policy, args.max_rate, args.max_rate_per_identity, args.rate_devices) == (
        "cap", 2 * 10 ** 9, 800_000_000, ["eth1", "eth2"])
    assert server.parse_args([]).rate_policy == "off"


def test_a_server_that_cannot_enforce_rates_does_not_start(tmp_path):
    from test_rate_decisions import FakeShaper  # pylint: disable=import-outside-toplevel
    gateway = Gateway(str(tmp_path / "state"), {}, shaper=FakeShaper("rates need pyroute2"))
    server.check_rates(server.parse_args([]), gateway)  # off: nothing to enforce
    with pytest.raises(SystemExit, match=r"--rate_policy honour: rates cannot be enforced here: rates need pyroute2"):
        server.check_rates(server.parse_args(["--rate_policy", "honour"]), gateway)
