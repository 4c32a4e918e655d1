# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The control server's kernel caps (s2cs/guard.py): the nftables commands, checked by the real libnftables in
dry-run mode where it is here, and the server's refusal to start without them. The caps against real connections:
tests/integration/test_s2cs_hostile.py."""

from __future__ import annotations

import contextlib
import io
import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs import guard as guard_module
from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.guard import GUARD_TABLE, ConnectionGuard, GuardError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import nft

server = pytest.importorskip("ansible_collections.scistream.gateway.plugins.module_utils.s2cs.server")


class FakeContext:
    """A libnftables context that records each document and answers ``rc``."""

    def __init__(self, rc=0, error="", listing=()):
        self.documents, self.rc, self.error, self.listing = [], rc, error, list(listing)

    def set_handle_output(self, value):
        pass

    def set_dry_run(self, value):
        pass

    def json_cmd(self, document):
        self.documents.append(document["nftables"])
        if list(document["nftables"][0]) == ["list"]:
            return 0, {"nftables": self.listing}, ""
        return self.rc, None, self.error


def rules(commands):
    return [c["add"]["rule"] for c in commands if "rule" in c.get("add", {})]


def test_the_guard_caps_per_address_and_in_all_on_its_port():
    commands = ConnectionGuard("/var/lib/scistream/s2cs-main", 5000, 64, 4096).commands()
    assert commands[0] == {"add": {"table": {"family": "inet", "name": GUARD_TABLE}}}
    chain = next(c["add"]["chain"] for c in commands if "chain" in c.get("add", {}))
    assert (chain["hook"], chain["policy"], chain["prio"]) == ("input", "accept", -5)
    per_v4, per_v6, total = rules(commands)
    for rule in (per_v4, per_v6, total):
        assert rule["expr"][0]["match"]["right"] == 5000 and rule["expr"][-1] == {"reject": {"type": "tcp reset"}}
        assert {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}} in rule["expr"]
    assert per_v4["expr"][2]["set"]["stmt"] == [{"ct count": {"val": 64, "inv": True}}]
    per_64 = {"&": [{"payload": {"protocol": "ip6", "field": "saddr"}}, "ffff:ffff:ffff:ffff::"]}
    assert per_v6["expr"][2]["set"]["elem"] == per_64, "IPv6 is counted per /64"
    assert total["expr"][2] == {"ct count": {"val": 4096, "inv": True}}


def test_a_specific_address_is_matched_and_a_name_caps_the_port_on_every_address():
    v6 = ConnectionGuard("/s", 5000, 8, 100, address="2001:db8::1")
    assert v6.protocols == ("ip6",) and len(rules(v6.commands())) == 2
    assert {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "2001:db8::1"}} \
        in rules(v6.commands())[0]["expr"]
    assert ConnectionGuard("/s", 5000, 8, 100, address="gw.example.org").protocols == ("ip", "ip6")


def test_each_state_dir_has_its_own_chain_and_sets_and_a_predecessors_are_replaced():
    one, two = ConnectionGuard("/a", 5000, 8, 100), ConnectionGuard("/b", 5000, 8, 100)
    assert one.chain != two.chain and set(one.sets.values()).isdisjoint(two.sets.values())
    present = {one.chain, one.sets["ip"], "s2cs-other"}
    removal = one.removal(present)
    assert removal == [{"delete": {"chain": {"family": "inet", "table": GUARD_TABLE, "name": one.chain}}},
                       {"delete": {"set": {"family": "inet", "table": GUARD_TABLE, "name": one.sets["ip"]}}}]
    assert one.commands(present)[1:3] == removal, "what a killed server left goes first, in the same transaction"
    assert one.removal(set()) == []


def test_install_reports_libnftables_errors_and_remove_is_quiet():
    context = FakeContext(rc=1, error="Error: Could not process rule:\n Operation not permitted\n")
    guard = ConnectionGuard("/s", 5000, 8, 100, context=context)
    with pytest.raises(GuardError, match="Could not process rule: Operation not permitted"):
        guard.install()
    guard.remove()  # nothing present: nothing run, nothing raised
    context.listing = [{"chain": {"family": "inet", "table": GUARD_TABLE, "name": guard.chain}}]
    guard.remove()
    assert context.documents[-1] == guard.removal({guard.chain})


def test_refused_counts_come_from_the_rules_counters():
    guard = ConnectionGuard("/s", 5000, 8, 100, context=FakeContext())
    guard.install()
    listing = [{"rule": dict(rule, chain=guard.chain, expr=rule["expr"][:-2] + [{"counter": {"packets": n, "bytes": 60 * n}}])}
               for rule, n in zip(rules(guard.commands()), (3, 1, 2))]
    guard._nft.context.listing = listing + [{"rule": {"chain": "s2cs-other", "expr": [{"counter": {"packets": 9}}]}}]
    assert guard.refused() == {"per_peer": 4, "total": 2}


@pytest.mark.skipif(not nft.HAS_NFTABLES or os.geteuid() != 0, reason="libnftables and root (a dry run checks with the kernel)")
@settings(max_examples=25, deadline=None)
@given(port=st.integers(1, 65535), per_peer=st.integers(1, 2 ** 31 - 1), total=st.integers(1, 2 ** 31 - 1),
       address=st.sampled_from(["0.0.0.0", "::", "127.0.0.1", "2001:db8::7", "gw.example.org"]),
       state_dir=st.text(min_size=1, max_size=80))
def test_every_guard_is_a_ruleset_libnftables_takes(port, per_peer, total, address, state_dir):
    guard = ConnectionGuard(state_dir, port, per_peer, total, address=address)
    rc, dummy, error = nft.Nft().run(guard.commands(), dry_run=True)
    assert rc == 0, error
    assert guard.chain.startswith("s2cs-") and len(guard.chain) == 17


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=12))
@example("@\x00")  # as its own word, "@..." would name a file of options (the role's @file): one word here
def test_the_option_takes_a_count_or_names_itself(text):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = server.parse_args(["--max_connections_per_peer=" + text])
    except SystemExit:
        assert "--max_connections_per_peer" in err.getvalue()
        return
    assert isinstance(args.max_connections_per_peer, int) and args.max_connections_per_peer >= 0


def test_a_server_that_cannot_have_its_caps_does_not_start(monkeypatch, tmp_path):
    def refuse(self):
        raise GuardError("Operation not permitted")
    monkeypatch.setattr(guard_module.ConnectionGuard, "install", refuse)
    args = server.parse_args(["--state_dir", str(tmp_path)])
    assert args.max_connections_per_peer == server.MAX_CONNECTIONS_PER_PEER == 64
    with pytest.raises(SystemExit, match=r"--max_connections_per_peer 64: the kernel caps cannot be put in place "
                                         r"\(Operation not permitted\).*--max_connections_per_peer 0"):
        server.connection_guard(args, "0.0.0.0", 5000, 4096)
    assert server.connection_guard(server.parse_args(["--max_connections_per_peer", "0"]), "0.0.0.0", 5000, 4096) is None
