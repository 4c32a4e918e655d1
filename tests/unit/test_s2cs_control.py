# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The control service's logic without gRPC: req/hello ordering, release while waiting, tokens.

Sessions here never get targets, so no proxy runs; the Gateway and its
state dir are real.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.control import ControlError, ControlService
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import PortsExhausted, S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.ports import reserve_ports
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import wait_until
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime


@pytest.fixture
def service(tmp_path):
    gateway = Gateway(str(tmp_path / "state"), {"process": lambda s: ProcessRuntime("daemon")})
    return ControlService(gateway, listener_ip="127.0.0.1", port_range="31950-31959", hello_timeout=5, hello_grace=5)


def in_thread(fn, *args):
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except ControlError as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def test_hello_may_overtake_its_req(service):
    uid = str(uuid.uuid4())
    hello, hello_box = in_thread(service.hello, uid, ["127.0.0.1:9000"])
    listeners, prod_listeners, created = service.req(uid, "PROD", 2)
    hello.join(10)
    assert created and listeners == ["127.0.0.1:31950", "127.0.0.1:31951"]
    assert prod_listeners == ["127.0.0.1:9000"]
    assert hello_box["value"] == listeners
    service.release(uid)


def test_cons_session_takes_its_role_from_req(service):
    """S2UC sends hello with role PROD for a CONS session: accepted, its listeners not used as targets."""
    uid = str(uuid.uuid4())
    req, box = in_thread(service.req, uid, "CONS", 1)
    assert service.hello(uid, ["consumer-host:7000"]) == ["127.0.0.1:31950"]
    req.join(10)
    assert box["value"] == (["127.0.0.1:31950"], [], True)
    service.release(uid)


def test_release_while_waiting_for_hello(service):
    uid = str(uuid.uuid4())
    req, box = in_thread(service.req, uid, "PROD", 1)
    assert wait_until(lambda: service.gateway.store.load(uid) is not None, 5)  # reserved, waiting for hello
    service.release(uid)
    req.join(10)
    assert box["error"].code == "ABORTED"
    assert service.gateway.store.all() == []


def test_unknown_and_bad(service):
    with pytest.raises(ControlError) as exc_info:
        service.update(str(uuid.uuid4()), ["127.0.0.1:9"])
    assert exc_info.value.code == "NOT_FOUND"
    with pytest.raises(ControlError) as exc_info:
        service.req(str(uuid.uuid4()), "SIDEWAYS", 1)
    assert exc_info.value.code == "INVALID_ARGUMENT" and "role" in exc_info.value.message
    service.hello_grace = 0.1
    with pytest.raises(ControlError) as exc_info:
        service.hello(str(uuid.uuid4()), [])
    assert exc_info.value.code == "NOT_FOUND"


def test_ports_exhausted_is_still_an_s2ds_error():
    with pytest.raises(PortsExhausted) as exc_info:
        reserve_ports(3, (31960, 31961), "127.0.0.1")
    assert isinstance(exc_info.value, S2DSError)
    assert exc_info.value.field == "num_conn" and str(exc_info.value).startswith("num_conn 3:")


def test_tokens_and_hook():
    server = pytest.importorskip("ansible_collections.scistream.gateway.plugins.module_utils.s2cs.server")
    checker = server.TokenChecker(["alpha-token"])
    assert checker.enabled and checker("alpha-token") and not checker("beta") and not checker("")
    assert server.bearer_token([("authorization", "Bearer alpha-token")]) == "alpha-token"
    assert server.bearer_token([("authorization", "INVALID_TOKEN")]) == "INVALID_TOKEN"
    assert server.bearer_token([]) == ""

    def broken(token):
        raise RuntimeError("introspection down")

    assert not server.TokenChecker([], broken)("anything")
    assert server.TokenChecker([], lambda t: t == "from-hook")("from-hook")
    assert not server.TokenChecker().enabled
    assert server.backend_name("StunnelSubprocess") == "stunnel"
