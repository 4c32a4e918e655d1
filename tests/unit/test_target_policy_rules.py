# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The target policy (s2ds/policy.py) and its rule grammar (session.py's parse_target_rule).

Properties: every rule's text form parses back to the same rule; any text is a rule or an S2DSError
naming the field; no address of a refused class passes the default policy in any spelling (dotted,
IPv4-mapped, IPv4-compatible, NAT64, 6to4, upper-case, expanded); a broad rule never opens a class;
protected ports stay refused whatever the rules. Then the wiring: Gateway, ControlService, open_stream.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway_fakes import FakeRuntime

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError, TargetRefused
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import (
    DEFAULT_PROTECTED_PORTS, WITH_LOOPBACK, TargetPolicy, checked_forms, own_addresses)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import (
    SessionSpec, Target, TargetRule, parse_target, parse_target_rule, parse_target_rules)

SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALPHABET = "0123456789abcdefABCDEF.:/-[] %\n\t\u00b2\u0665x,"
ports = st.integers(1, 65535)
OWN = ("192.0.2.77", "2001:db8:77::1")


def policy(**kwargs):
    kwargs.setdefault("addresses", OWN)
    return TargetPolicy(**kwargs)


# -- the grammar --------------------------------------------------------------------------------------------
@st.composite
def rules(draw):
    version = draw(st.sampled_from([4, 6]))
    address = draw(st.ip_addresses(v=version))
    length = draw(st.integers(0, 32 if version == 4 else 128))
    network = ipaddress.ip_network("%s/%d" % (address, length), strict=False)
    low = draw(ports)
    high = draw(st.integers(low, 65535))
    return TargetRule(network, draw(st.sampled_from([(1, 65535), (low, high), (low, low)])))


@SETTINGS
@given(rules())
def test_a_rule_reads_back_from_its_text(rule):
    assert parse_target_rule(str(rule)) == rule
    assert str(parse_target_rule(str(rule))) == str(rule)


@SETTINGS
@given(st.one_of(st.text(alphabet=ALPHABET, max_size=60), st.text(max_size=40)))
@example("10.0.3.10/24")
@example("[10.0.0.1]:5")
@example("[::1]:")
@example("10.0.0.1/33")
@example("10.0.0.1/08")
@example("fe80::1%eth0/64")
@example("10.0.0.1:5-4")
@example("10.0.0.1:\u00b2")
def test_any_text_is_a_rule_or_refused_naming_the_field(text):
    try:
        rule = parse_target_rule(text)
    except S2DSError as exc:
        assert exc.field == "allowed_targets" and "\n" not in str(exc), str(exc)
        return
    assert text.isascii() and "\n" not in text and " " not in text
    assert parse_target_rule(str(rule)) == rule


def test_rule_forms_and_errors():
    assert str(parse_target_rule("10.0.3.10")) == "10.0.3.10/32"
    assert str(parse_target_rule("10.0.3.10/32:5074-5075")) == "10.0.3.10/32:5074-5075"
    assert str(parse_target_rule("[2001:db8::/32]:5000")) == "[2001:db8::/32]:5000"
    assert str(parse_target_rule("2001:db8::/32")) == "2001:db8::/32"
    assert parse_target_rules("10.0.0.0/8,::1") == (parse_target_rule("10.0.0.0/8"), parse_target_rule("::1/128"))
    with pytest.raises(S2DSError, match="did you mean 10.0.3.0/24"):
        parse_target_rule("10.0.3.10/24")
    assert str(parse_target_rule("2001:db8::1:5000")) == "2001:db8::1:5000/128"  # an address, not a port
    with pytest.raises(S2DSError, match="needs brackets"):
        parse_target_rule("2001:db8::/32:5000")
    with pytest.raises(S2DSError, match="protected_ports"):
        TargetPolicy(protected_ports=["0"])


# -- the check ----------------------------------------------------------------------------------------------
REFUSED_CLASSES = {
    "loopback": ["127.0.0.0/8"],
    "unspecified": ["0.0.0.0/8"],
    "link-local": ["169.254.0.0/16"],
    "multicast": ["224.0.0.0/4"],
    "reserved or broadcast": ["240.0.0.0/4"],
    "own": ["192.0.2.77/32"],
}


def spellings(v4):
    """Every way a target can carry the IPv4 address ``v4``: as itself and in the IPv6 transition forms."""
    n = int(v4)
    forms = ["%s" % v4, "[::ffff:%s]" % v4, "[::ffff:%x:%x]" % (n >> 16, n & 0xFFFF), "[::%s]" % v4 if n > 1 else None,
             "[64:ff9b::%s]" % v4, "[2002:%x:%x::1]" % (n >> 16, n & 0xFFFF),
             "[0:0:0:0:0:FFFF:%X:%X]" % (n >> 16, n & 0xFFFF)]
    return [f for f in forms if f]


@st.composite
def refused_v4(draw):
    network = ipaddress.ip_network(draw(st.sampled_from([n for nets in REFUSED_CLASSES.values() for n in nets])))
    return ipaddress.IPv4Address(int(network.network_address) + draw(st.integers(0, network.num_addresses - 1)))


@SETTINGS
@given(refused_v4(), ports, st.data())
@example(ipaddress.ip_address("127.0.0.1"), 22, None)
@example(ipaddress.ip_address("0.0.0.0"), 80, None)
def test_no_refused_address_passes_the_default_in_any_spelling(v4, port, data):
    chosen = spellings(v4) if data is None else [data.draw(st.sampled_from(spellings(v4)))]
    for text in chosen:
        target = parse_target("%s:%d" % (text, port))
        with pytest.raises(TargetRefused) as caught:
            policy().check([target])
        assert caught.value.field == "targets" and str(target) in str(caught.value)
        # A broad rule is no narrow one: 0.0.0.0/0 and ::/0 open none of the classes.
        with pytest.raises(TargetRefused):
            policy(allow=["0.0.0.0/0", "::/0"]).check([target])


@SETTINGS
@given(st.sampled_from(["::1", "::", "fe80::1", "fe80::abcd:1", "ff02::1", "64:ff9b:1::1", "2001:db8:77::1"]), ports)
def test_ipv6_classes_are_refused(text, port):
    with pytest.raises(TargetRefused):
        policy().check([parse_target("[%s]:%d" % (text, port))])


@SETTINGS
@given(st.ip_addresses(v=4), ports)
def test_an_ordinary_address_passes_the_default(address, port):
    if any(a in ipaddress.ip_network(n) for a in checked_forms(address) for nets in REFUSED_CLASSES.values() for n in nets):
        return
    assert policy().check([Target(str(address), port)]) == (Target(str(address), port),)


def test_loopback_opens_by_a_rule_inside_it_and_protected_ports_never():
    loop = policy(allow=["127.0.0.0/8"])
    assert loop.check([parse_target("127.0.0.1:22")]) == (Target("127.0.0.1", 22),)
    assert loop.check([parse_target("[::ffff:127.0.0.1]:22")])  # checked as 127.0.0.1
    with pytest.raises(TargetRefused, match="matches no rule"):
        loop.check([parse_target("10.0.0.1:22")])  # the rules given replace the default ones
    narrow = policy(allow=["127.0.0.1/32:7001"])
    assert narrow.check([parse_target("127.0.0.1:7001")])
    with pytest.raises(TargetRefused, match="127.0.0.1/32:7001"):
        narrow.check([parse_target("127.0.0.1:7002")])
    for port in [p for pair in DEFAULT_PROTECTED_PORTS for p in pair]:
        for text in ("127.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0", "192.0.2.77"):
            with pytest.raises(TargetRefused, match="protected port"):
                policy(allow=["127.0.0.0/8", "0.0.0.0/8", "192.0.2.77/32"]).check([parse_target("%s:%d" % (text, port))])
    extra = policy(allow=WITH_LOOPBACK)
    extra.add_protected(41000)
    with pytest.raises(TargetRefused, match="protected port"):
        extra.check([parse_target("127.0.0.1:41000")])


def test_own_address_needs_its_own_rule():
    with pytest.raises(TargetRefused, match="own address"):
        policy(allow=["192.0.2.0/24"]).check([parse_target("192.0.2.77:80")])
    assert policy(allow=["192.0.2.77/32"]).check([parse_target("192.0.2.77:80")])
    assert policy(allow=["192.0.2.0/24"]).check([parse_target("192.0.2.78:80")])


def test_per_role_rules():
    both = policy(allow=["10.1.0.0/16"], cons_allow=["10.2.0.0/16:5100-5200"], field="--allowed_targets")
    assert both.check([parse_target("10.1.0.1:80")], "PROD")
    with pytest.raises(TargetRefused, match="--allowed_cons_targets"):
        both.check([parse_target("10.1.0.1:80")], "CONS")
    assert both.check([parse_target("10.2.0.1:5100")], "CONS")
    assert "CONS targets 10.2.0.0/16:5100-5200" in both.describe()


def test_a_name_is_resolved_once_and_every_address_checked():
    asked = []

    def resolver(host):
        asked.append(host)
        return {"data.example.org": [ipaddress.ip_address("10.0.3.11"), ipaddress.ip_address("10.0.3.10")],
                "sneaky.example.org": [ipaddress.ip_address("10.0.3.10"), ipaddress.ip_address("127.0.0.1")]}[host]

    checking = policy(resolver=resolver)
    assert checking.check([parse_target("data.example.org:5074")]) == (Target("10.0.3.10", 5074, "data.example.org"),)
    assert asked == ["data.example.org"]
    with pytest.raises(TargetRefused, match="sneaky.example.org:5074.*127.0.0.1 is loopback"):
        checking.check([parse_target("sneaky.example.org:5074")])
    with pytest.raises(TargetRefused, match="not accepted here"):
        policy(resolver=None).check([parse_target("data.example.org:5074")])

    def slow(host):
        raise TimeoutError("no answer within 5s")

    with pytest.raises(TargetRefused, match="cannot be resolved"):
        policy(resolver=slow).check([parse_target("data.example.org:5074")])


def test_localhost_is_refused_by_the_real_resolver():
    with pytest.raises(TargetRefused, match="localhost:80"):
        TargetPolicy().check([parse_target("localhost:80")])


def test_own_addresses_are_read_from_the_interfaces():
    mine = own_addresses()
    assert ipaddress.ip_address("127.0.0.1") in mine


# -- the wiring ---------------------------------------------------------------------------------------------
def test_gateway_refuses_before_anything_and_keeps_the_checked_address(tmp_path):
    fake = FakeRuntime()
    state = str(tmp_path / "state")
    gateway = Gateway(state, {"process": lambda session: fake})  # no policy given: the strict default
    uid = str(uuid.uuid4())
    for bad in ("127.0.0.1:5074", "0.0.0.0:80", "[::ffff:127.0.0.1]:80", "localhost:80"):
        spec = SessionSpec.build(uid, "PROD", num_conn=1, listener_ip="127.0.0.1", port_range="46300-46309",
                                 targets=[bad])
        with pytest.raises(TargetRefused):
            gateway.present(spec)
        assert gateway.store.load(uid) is None and fake.calls == []
        assert not os.path.exists(gateway.store.run_dir(uid))

    named = Gateway(state, {"process": lambda session: fake},
                    policy=TargetPolicy(resolver=lambda host: [ipaddress.ip_address("10.0.3.10")]))
    spec = SessionSpec.build(uid, "PROD", num_conn=1, listener_ip="127.0.0.1", port_range="46300-46309",
                             targets=["daq.example.org:5074"])
    outcome = named.present(spec)
    assert outcome.session["targets"] == ["10.0.3.10:5074"]
    with open(outcome.session["config_path"], encoding="utf-8") as handle:
        config = handle.read()
    assert "10.0.3.10:5074" in config and "daq.example.org" not in config
    assert named.store.load(uid).target_names == ["daq.example.org"]  # for TLS's name check and SNI
    assert not named.present(spec).changed  # the same address: no change
    named.absent(uid)


def test_control_service_answers_permission_denied(tmp_path):
    pytest.importorskip("grpc")
    from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.control import ControlError, ControlService
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
    gateway = Gateway(str(tmp_path / "state"), {"process": lambda s: ProcessRuntime("daemon")})
    service = ControlService(gateway, listener_ip="127.0.0.1", port_range="46310-46319", hello_timeout=5, hello_grace=1)

    async def scenario():
        uid = str(uuid.uuid4())
        req = asyncio.ensure_future(service.req(uid, "PROD", 1))
        hello = asyncio.ensure_future(service.hello(uid, ["127.0.0.1:22"]))
        for call in (hello, req):
            with pytest.raises(ControlError) as caught:
                await call
            assert caught.value.code == "PERMISSION_DENIED" and "127.0.0.1:22" in caught.value.message
        assert gateway.store.load(uid) is None  # the reservation is gone
        uid = str(uuid.uuid4())
        req = asyncio.ensure_future(service.req(uid, "CONS", 1))
        await service.hello(uid, [])
        await req
        with pytest.raises(ControlError) as caught:
            await service.update(uid, ["[::ffff:127.0.0.1]:46311"])
        assert caught.value.code == "PERMISSION_DENIED" and "loopback" in caught.value.message
        assert not gateway.store.load(uid).targets
        await service.release(uid)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        service.close()


def test_open_stream_checks_prod_answers_before_cons_is_asked():
    pytest.importorskip("grpc")
    from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import RefusedAnswer, open_stream

    class Side:
        def __init__(self, server, listeners):
            self.server, self.listeners, self.calls = server, listeners, []

        def request(self, uid, role, num_conn, prod_listeners=(), rate=0):
            self.calls.append("request")
            return self.listeners, [], True

        def update(self, uid, targets, role=""):
            self.calls.append("update")
            return self.listeners, True

        def release(self, uid, missing_ok=False):
            self.calls.append("release")
            return []

    for answer in (["127.0.0.1:22"], ["[::ffff:127.0.0.1]:22"], ["0.0.0.0:5100"], ["169.254.169.254:80"]):
        prod, cons = Side("prod:5000", answer), Side("cons:5000", ["10.0.1.2:5100"])
        with pytest.raises(RefusedAnswer) as caught:
            open_stream(prod, cons, "u1", 1, ["10.0.3.10:5074"])
        assert caught.value.code == "PERMISSION_DENIED" and caught.value.field == "prod_listeners"
        assert cons.calls == [] and prod.calls[-1] == "release"
