# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Session lifetimes and idle expiry with real proxies (process runtime, daemon supervisor) and the kernel counters.

* A session past its lifetime leaves nothing: no record, no run dir, no proxy process, its ports free, no
  counting chain.
* A session with bytes flowing is not idle; the same session, idle afterwards, expires.
* A deadline is on disk: a Gateway made again from the state dir keeps it.
* A short-lifetime session made through a real S2CS is released by the server's own loop.

The gateways' clock is a fake one where it helps (no test waits an hour); the S2CS test runs on the real one.
Ports 47000-47999 (this file's block).
"""

from __future__ import annotations

import os
import uuid

import pytest

from conftest import CLOCK_T0, Clock, Sink, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import counting
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import (
    listening_ports, process_alive, process_cmdline, wait_until)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec

# Its sessions forward to sinks on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)
T0 = CLOCK_T0


def make_gateway(state_dir, clock):
    return Gateway(str(state_dir), {"process": lambda session: ProcessRuntime("daemon")}, policy=LOOPBACK_POLICY,
                   clock=clock)


def spec(uid, port_range, target_port, backend="haproxy", **kwargs):
    return SessionSpec.build(uid=uid, role="PROD", num_conn=2, listener_ip="127.0.0.1", port_range=port_range,
                             targets=["127.0.0.1:%d" % target_port], backend=backend,
                             psk="p" * 32 if backend == "stunnel" else None, **kwargs)


def proxies_of(config_path):
    """Live processes whose command line names ``config_path``."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and process_alive(int(name))
            and config_path in process_cmdline(int(name)).split()]


def send_through(port, sink_port, size=256 * 1024):
    """``size`` bytes through listener ``port`` arrive intact at a sink on ``sink_port``."""
    target = Sink(port=sink_port, timeout=20)
    sent = streamcheck.send("127.0.0.1", port, size, timeout=10)
    assert target.wait()["sha256"] == sent["sha256"]


def counting_chains(gateway, record):
    listing = gateway.counter.listing()
    key = counting.chain_key(record, gateway.counter.instance)
    return listing.chains_of(key) + [str(e) for e in listing.owned_elements(key)]


def assert_left_nothing(gateway, record, config_path):
    assert gateway.store.load_entry(record.uid) is None
    assert not os.path.exists(gateway.store.run_dir(record.uid))
    assert wait_until(lambda: not proxies_of(config_path), 10), proxies_of(config_path)
    assert not set(record.ports) & listening_ports("tcp")
    if gateway.counter is not None and gateway.counter.available:
        assert counting_chains(gateway, record) == []


def needs_counters(gateway):
    if gateway.counter is None or not gateway.counter.available:
        pytest.skip("idle expiry needs the kernel counters: %s" % getattr(gateway.counter, "reason", "none"))


@pytest.mark.parametrize("backend, slot", [("haproxy", 0), ("nginx", 1), ("stunnel", 2)])
def test_past_its_lifetime_a_session_leaves_nothing(tmp_path, backend, slot):
    base = 47000 + 20 * slot
    clock = Clock()
    gateway = make_gateway(tmp_path / "gw", clock)
    uid = str(uuid.uuid4())
    out = gateway.present(spec(uid, "%d-%d" % (base, base + 9), base + 19, backend, lifetime="90s"))
    assert out.session["expires_at"] == T0 + 90 and out.session["expires_in"] == 90
    record = gateway.store.load(uid)
    config_path = os.path.join(gateway.store.run_dir(uid), get_backend(backend).config_name)
    assert proxies_of(config_path)
    if backend != "stunnel":  # a PROD stunnel speaks TLS-PSK to its clients: the data test is test_chain's
        send_through(record.ports[0], base + 19)
    assert gateway.expire(T0 + 89) == [] and proxies_of(config_path)
    [released] = gateway.expire(T0 + 90)
    assert released == {"uid": uid, "owner": None, "reason": "lifetime", "deadline": T0 + 90, "ports": record.ports}
    assert_left_nothing(gateway, record, config_path)
    # The ports are handed out again.
    assert gateway.present(spec(str(uuid.uuid4()), "%d-%d" % (base, base + 9), base + 19, backend)).session["ports"] \
        == record.ports


def test_a_busy_session_is_not_idle_and_expires_once_idle(tmp_path):
    clock = Clock()
    gateway = make_gateway(tmp_path / "gw", clock)
    needs_counters(gateway)
    uid = str(uuid.uuid4())
    gateway.present(spec(uid, "47100-47109", 47119, idle_timeout="60s"))
    record = gateway.store.load(uid)
    config_path = os.path.join(gateway.store.run_dir(uid), "haproxy.cfg")
    assert gateway.expire() == []  # first count: idle from now
    for dummy in range(4):  # 4 x 40 s of fake time, bytes through the listener in each: never idle
        send_through(record.ports[0], 47119)
        clock.now += 40
        assert gateway.expire() == [], gateway.sessions()
    busy = gateway.store.load(uid)
    assert busy.idle_since == clock.now and busy.idle_bytes > 4 * 256 * 1024
    assert gateway.sessions()[0]["expires_in"] == 60 and gateway.sessions()[0]["expires_reason"] == "idle"
    clock.now += 59
    assert gateway.expire() == []
    clock.now += 1
    [released] = gateway.expire()
    assert released["reason"] == "idle" and released["deadline"] == clock.now
    assert_left_nothing(gateway, record, config_path)


def test_a_deadline_survives_a_gateway_made_again_from_disk(tmp_path):
    state_dir = tmp_path / "gw"
    uid = str(uuid.uuid4())
    make_gateway(state_dir, Clock()).present(spec(uid, "47200-47209", 47219, lifetime="2h"))
    again = make_gateway(state_dir, Clock(T0 + 3600))
    [info] = again.sessions()
    assert info["expires_at"] == T0 + 7200 and info["expires_in"] == 3600 and info["running"]
    record = again.store.load(uid)
    assert again.expire() == []
    third = make_gateway(state_dir, Clock(T0 + 7200))
    assert [r["uid"] for r in third.expire()] == [uid]
    assert_left_nothing(third, record, os.path.join(third.store.run_dir(uid), "haproxy.cfg"))


def test_the_control_server_loop_releases_a_short_lifetime_session(servers):
    from s2cs_real import sessions  # pylint: disable=import-outside-toplevel
    pytest.importorskip("grpc")
    server = servers("gw", 47300, "47310-47319",
                     extra=["--session_lifetime", "3s", "--expire_interval", "1", "--max_session_lifetime", "1h"])
    uid = str(uuid.uuid4())
    with server.client() as client:
        listeners, dummy, created = client.request(uid, "PROD", 2)
        assert created and [int(l.rsplit(":", 1)[1]) for l in listeners] == [47310, 47311]
        client.update(uid, ["127.0.0.1:47329"])  # the proxy starts; the update renews the session
        [info] = sessions(server.state_dir)
        assert info["lifetime"] == 3 and 0 <= info["expires_in"] <= 3
        assert {47310, 47311} <= listening_ports("tcp")
        assert wait_until(lambda: not sessions(server.state_dir), 20), sessions(server.state_dir)
        assert wait_until(lambda: not {47310, 47311} & listening_ports("tcp"), 10)
        assert client.release(uid, missing_ok=True) is None
    [line] = [line for line in server.log().splitlines() if "session %s of " % uid in line]
    assert line.endswith("expired (lifetime): released, ports 47310,47311 freed"), line
