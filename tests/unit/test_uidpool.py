# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""One uid per session: the proxy_uid_range grammar and the host-wide allocation."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import uidpool
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.uidpool import UidPool, UidsExhausted, parse_uid_range

# A range no account of a Debian host has (checked in the fixture), outside the collection's default proxy uids
# (7400-8399): gateways running beside the tests (Molecule's containers share the kernel) hold some of those.
RANGE = "59400-59409"


@pytest.fixture
def pool(tmp_path):
    for uid in range(59400, 59410):
        with pytest.raises(KeyError):
            pwd.getpwuid(uid)
    return UidPool(RANGE, registry=str(tmp_path / "registry" / "proxy-uids.json"))


def test_the_default_range_parses():
    assert parse_uid_range(uidpool.DEFAULT_PROXY_UID_RANGE) == (7400, 8399)


@pytest.mark.parametrize("value", ["", "7400", "7400-", "-8399", " 7400-8399", "7400 - 8399", "7400-8399\n", "07400-8399",
                                   "+7400-8399", "7400-8399-9000", "\u0667400-8399", "0-100", "8399-7400", "1-70000",
                                   "60000-62000", "65534-65534", "65535-65600", "2147483647-2147483647", "10-99999999",
                                   7400, None, True, ["7400-8399"]])
def test_a_bad_range_is_refused_naming_the_field(value):
    with pytest.raises(S2DSError) as caught:
        parse_uid_range(value)
    assert caught.value.field == "proxy_uid_range" and str(caught.value).startswith("proxy_uid_range ")
    assert "\n" not in str(caught.value)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=25), st.from_regex(r"[0-9]{1,11}-[0-9]{1,11}", fullmatch=True)))
def test_parse_uid_range_gives_only_ranges_it_can_print_back(value):
    """Fuzz: a range parses only from its canonical text, within bounds and off every reserved number."""
    try:
        start, end = parse_uid_range(value)
    except S2DSError as exc:
        assert exc.field == "proxy_uid_range"
        return
    assert value == "%d-%d" % (start, end)
    assert 1 <= start <= end <= uidpool.MAX_POOL_UID and end - start < uidpool.MAX_POOL_SIZE
    assert all(uidpool.is_pool_uid(uid) for uid in (start, end, (start + end) // 2))


def test_two_state_dirs_never_share_a_uid(pool, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    first = pool.claim(a, "s1")
    second = pool.claim(b, "s1")  # the same session key in another state dir is another session
    third = pool.claim(a, "s2")
    assert len({first, second, third}) == 3 and all(59400 <= uid <= 59409 for uid in (first, second, third))
    assert pool.claim(a, "s1") == first  # asked again: the same uid
    assert pool.claim(a, "s1", keep=first) == first
    pool.release(a, "s1")
    assert first not in pool.holders()
    assert pool.claim(b, "s9") == first  # given back, handed out again
    with open(pool.registry, encoding="utf-8") as handle:
        assert set(json.load(handle)["uids"]) == {str(second), str(third), str(first)}
    assert oct(os.stat(pool.registry).st_mode & 0o777) == "0o600"


def test_a_record_keeps_its_uid_when_the_registry_was_lost(pool, tmp_path):
    uid = pool.claim(str(tmp_path / "a"), "s1")
    os.unlink(pool.registry)
    assert pool.claim(str(tmp_path / "a"), "s1", keep=uid) == uid
    # but not when another session holds it now
    os.unlink(pool.registry)
    other = pool.claim(str(tmp_path / "b"), "t1")
    assert other == uid and pool.claim(str(tmp_path / "a"), "s1", keep=uid) != uid


def test_a_stale_entry_is_reclaimed(pool, tmp_path, monkeypatch):
    state = tmp_path / "a"
    (state / "sessions").mkdir(parents=True)
    kept = pool.claim(str(state), "alive")
    (state / "sessions" / "alive.json").write_text("{}")
    gone = pool.claim(str(state), "gone")  # no record was ever written
    monkeypatch.setattr(uidpool, "CLAIM_GRACE", -1)  # as if long ago
    for dummy in range(8):
        pool.claim(str(tmp_path / "b"), "filler-%d" % dummy)
    assert pool.holders()[kept] == (str(state), "alive")
    assert pool.holders()[gone] != (str(state), "gone")


def test_a_uid_a_process_runs_as_is_skipped(pool, tmp_path):
    sleeper = subprocess.Popen(["/bin/sleep", "30"], user=59400, group=59400, extra_groups=[], cwd="/")
    try:
        deadline = time.monotonic() + 5
        while 59400 not in uidpool.uids_in_use() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.claim(str(tmp_path / "a"), "s1") == 59401
    finally:
        sleeper.kill()
        sleeper.wait()


def test_uids_of_accounts_and_groups_are_never_handed_out(tmp_path):
    # 1-3 are daemon, bin and sys on Debian: every uid is taken.
    pool = UidPool((1, 3), registry=str(tmp_path / "r.json"))
    with pytest.raises(UidsExhausted) as caught:
        pool.claim(str(tmp_path / "a"), "s1")
    assert caught.value.field == "proxy_uid_range" and "1-3" in str(caught.value)


def test_the_pool_runs_out_clearly(pool, tmp_path, monkeypatch):
    # No process of this host holds a pool uid here: on a shared machine (Molecule's gateway containers run
    # their proxies as pool uids too) the live /proc would take uids of this 10-uid range away.
    monkeypatch.setattr(uidpool, "uids_in_use", set)
    for index in range(10):
        pool.claim(str(tmp_path / "a"), "s%d" % index)
    with pytest.raises(UidsExhausted):
        pool.claim(str(tmp_path / "a"), "one-too-many")
    assert pool.claim(str(tmp_path / "a"), "s3") in range(59400, 59410)  # those it has still work


def test_pending_uids_of_a_batch_are_not_given_twice(pool, tmp_path):
    first = pool.claim(str(tmp_path / "a"), "s1")
    assert pool.claim(str(tmp_path / "a"), "s1", pending=[first]) != first


def test_a_garbled_registry_is_a_clear_error(pool, tmp_path):
    os.makedirs(os.path.dirname(pool.registry), exist_ok=True)
    with open(pool.registry, "w", encoding="utf-8") as handle:
        handle.write("{not json")
    with pytest.raises(S2DSError) as caught:
        pool.claim(str(tmp_path / "a"), "s1")
    assert pool.registry in str(caught.value)


@pytest.mark.parametrize("value,ok", [(None, True), (7400, True), (0, False), (True, False), ("7400", False),
                                      (65534, False), (62000, False), (2 ** 31, False), (-5, False), (7400.0, False)])
def test_a_record_value_is_a_pool_uid_or_none(value, ok):
    assert uidpool.is_pool_uid(value) is ok


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["claim", "release"]), st.sampled_from(["a", "b"]),
                          st.sampled_from(["s1", "s2", "s3", "s4"])), max_size=25))
def test_no_uid_is_ever_held_by_two_sessions(tmp_path_factory, operations):
    """Property: whatever claims and releases two state dirs make, each uid has one holder and each
    session one uid, inside the range."""
    base = tmp_path_factory.mktemp("pool")
    pool = UidPool("59400-59409", registry=str(base / "r.json"))
    given_out = {}
    for operation, state, key in operations:
        owner = (str(base / state), key)
        if operation == "claim":
            uid = pool.claim(owner[0], key, keep=given_out.get(owner))
            assert 59400 <= uid <= 59409
            assert given_out.get(owner) in (None, uid)  # a session keeps its uid
            given_out[owner] = uid
        else:
            pool.release(owner[0], key)
            given_out.pop(owner, None)
        holders = pool.holders()
        assert len(set(given_out.values())) == len(given_out)
        assert {holders[uid]: uid for uid in holders} == given_out
