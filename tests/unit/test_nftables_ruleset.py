# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Backend nftables without a kernel: the ruleset it builds and the input it refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import nft
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend, render_config
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord, SessionSpec
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.templates import nftables

UID = "4f6c1b7e-2a3d-4c5e-9f00-1234567890ab"


def record(listener_ip="10.0.2.2", targets=("10.0.3.10:5074", "10.0.3.10:5075"), ports=(5100, 5101, 5102)):
    return SessionRecord(uid=UID, role="PROD", backend="nftables", runtime="kernel", listener_ip=listener_ip,
                         ports=list(ports), targets=list(targets))


def rules_of(commands, chain):
    return [c["add"]["rule"] for c in commands if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain]


def test_ruleset_translates_each_listener_to_its_target_in_the_collections_table():
    text = render_config(get_backend("nftables"), record(), {}, None)
    commands = json.loads(text)["nftables"]
    assert commands[0] == {"metainfo": {"json_schema_version": 1}}
    assert {c["add"]["table"]["name"] for c in commands if "table" in c.get("add", {})} == {"scistream"}
    assert all(c[verb][kind]["table"] == "scistream" for c in commands[1:] for verb in c for kind in c[verb]
               if kind != "table")
    dnat = rules_of(commands, "dnat-" + UID)
    assert [r["expr"][-1]["dnat"] for r in dnat] == [
        {"family": "ip", "addr": "10.0.3.10", "port": 5074}, {"family": "ip", "addr": "10.0.3.10", "port": 5075},
        {"family": "ip", "addr": "10.0.3.10", "port": 5074}]  # targets[i mod n]
    assert all({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.0.2.2"}}
               in r["expr"] for r in dnat)
    assert len(rules_of(commands, "snat-" + UID)) == 6  # tcp and udp
    count = rules_of(commands, "count-" + UID)
    assert len(count) == 12  # tcp and udp, each direction of the connection
    assert sorted(r["expr"][-2]["match"]["right"] for r in count) == ["original"] * 6 + ["reply"] * 6
    jumps = [r for c in commands for r in [c.get("add", {}).get("rule")] if r and r.get("comment") == UID]
    assert sorted(r["chain"] for r in jumps) == sorted(base[0] for base in nftables.BASE_CHAINS)
    # The session's chains are flushed before its rules are added: loading the file twice changes nothing.
    assert {"flush": {"chain": {"family": "inet", "table": "scistream", "name": "dnat-" + UID}}} in commands


def test_any_address_matches_local_addresses_of_the_targets_family():
    commands = nftables.ruleset(record("0.0.0.0", targets=["[2001:db8::10]:5074"], ports=[5100]))["nftables"]
    expr = rules_of(commands, "dnat-" + UID)[0]["expr"]
    assert {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}} in expr
    assert expr[0]["match"]["right"] == "ipv6" and expr[-1]["dnat"]["family"] == "ip6"


def test_runtime_defaults_to_kernel_and_nothing_else_runs_it():
    spec = SessionSpec.build(uid=UID, role="PROD", backend="nftables", targets=["10.0.3.10:5074"])
    assert spec.runtime == "kernel"
    assert SessionSpec.build(uid=UID, role="PROD").runtime == "process"
    for runtime in ("docker", "janus", "process"):
        with pytest.raises(S2DSError) as err:
            SessionSpec.build(uid=UID, role="PROD", backend="nftables", runtime=runtime)
        assert err.value.field == "runtime" and repr(runtime) in str(err.value) and "kernel" in str(err.value)
    with pytest.raises(S2DSError) as err:
        SessionSpec.build(uid=UID, role="PROD", backend="haproxy", runtime="kernel")
    assert err.value.field == "runtime" and "'kernel'" in str(err.value)


@pytest.mark.parametrize("options,field", [
    (dict(psk="0123456789abcdef0123"), "psk"),
    (dict(targets=["producer.example.org:5074"]), "targets"),
    (dict(listener_ip="10.0.2.2", targets=["[2001:db8::1]:5074"]), "targets"),
])
def test_refused_options_name_field_and_value(options, field):
    with pytest.raises(S2DSError) as err:
        SessionSpec.build(uid=UID, role="PROD", backend="nftables", **options)
    assert err.value.field == field
    assert "0123456789abcdef" not in str(err.value)


def test_kernel_view_ignores_handles_and_counter_values_and_traffic_sums_protocols():
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.kernel import KernelRuntime

    def listing(bytes_tcp, handle):
        rule = {"family": "inet", "table": "scistream", "chain": "count-" + UID, "handle": handle, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
            {"match": {"op": "==", "left": {"ct": {"key": "proto-dst", "dir": "original"}}, "right": 5100}},
            {"counter": {"packets": 10, "bytes": bytes_tcp}}]}
        udp = dict(rule, handle=handle + 1, expr=rule["expr"][:2] + [
            {"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "reply"}},
            {"counter": {"packets": 1, "bytes": 100}}])
        other = dict(rule, chain="count-" + "0" * 8 + UID[8:], handle=handle + 2)
        return [{"chain": {"family": "inet", "table": "scistream", "name": "count-" + UID, "handle": 3}},
                {"rule": rule}, {"rule": udp}, {"rule": other}]

    runtime = object.__new__(KernelRuntime)  # no libnftables needed for the pure parts
    assert runtime._view(listing(1000, 7), UID) == runtime._view(listing(5, 70), UID)
    assert len(runtime._view(listing(5, 7), UID)) == 3  # the other session's rule is not ours
    runtime._table = lambda: listing(1000, 7)
    rec = record(ports=[5100, 5101])
    assert runtime.traffic(None, None, rec) == [
        {"listener": "10.0.2.2:5100", "port": 5100, "bytes": 1100, "packets": 11, "bytes_in": 1000,
         "bytes_out": 100, "packets_in": 10, "packets_out": 1},
        {"listener": "10.0.2.2:5101", "port": 5101, "bytes": 0, "packets": 0, "bytes_in": 0, "bytes_out": 0,
         "packets_in": 0, "packets_out": 0}]


def chain(family, table, name, hook="forward", policy="drop"):
    return {"chain": {"family": family, "table": table, "name": name, "handle": 1, "type": "filter", "hook": hook,
                      "prio": 0, "policy": policy}}


def test_forward_chains_that_drop_are_found_by_the_targets_family():
    listing = [chain("ip", "filter", "FORWARD"), chain("ip6", "filter", "FORWARD"), chain("inet", "fw", "forward"),
               chain("ip", "filter", "INPUT", hook="input"), chain("ip", "mine", "fwd", policy="accept"),
               {"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER", "handle": 9}}, {"rule": {}}]
    assert nft.dropping_forward_chains(listing, 4) == ["inet fw forward", "ip filter FORWARD"]
    assert nft.dropping_forward_chains(listing, 6) == ["inet fw forward", "ip6 filter FORWARD"]
    assert nft.dropping_forward_chains(listing[3:], 4) == []


def test_the_kernel_runtime_names_a_dropping_chain_once_per_session_with_targets():
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.kernel import KernelRuntime

    runtime = object.__new__(KernelRuntime)
    runtime.nft = type("Listing", (), {"list_chains": staticmethod(lambda: [chain("ip", "filter", "FORWARD")])})()
    [warning] = runtime.warnings_for(record())
    assert UID in warning and "'ip filter FORWARD'" in warning and "DOCKER-USER" in warning
    assert runtime.warnings_for(record(listener_ip="::", targets=["[2001:db8::1]:5074"])) == []
    assert runtime.warnings_for(record(targets=[])) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({}, optional={
    "family": st.one_of(st.sampled_from(["ip", "ip6", "inet", "bridge"]), st.text(max_size=8), st.integers()),
    "table": st.one_of(st.text(max_size=80), st.integers(), st.none()),
    "name": st.one_of(st.text(max_size=80), st.lists(st.integers(), max_size=2)),
    "hook": st.sampled_from(["forward", "input", None]), "policy": st.sampled_from(["drop", "accept", 5])}).map(
        lambda c: {"chain": c}) | st.none() | st.integers(), max_size=6), st.sampled_from([4, 6]))
def test_any_listing_gives_only_plain_names(listing, version):
    """The kernel's ruleset is written by other programs too: what reaches a message is a plain name or '?'."""
    for found in nft.dropping_forward_chains(listing, version):
        assert all(part == "?" or nft._PLAIN_NAME.match(part) for part in found.split(" ")), found
