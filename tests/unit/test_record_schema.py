# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A record read back from disk is checked field by field (session.py's grammar) before it is used."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.store import BrokenRecord, SessionStore

UID = "5e55e55e-0000-4000-8000-000000000001"
GOOD = {"uid": UID, "role": "PROD", "backend": "haproxy", "runtime": "process", "listener_ip": "127.0.0.1",
        "ports": [5100, 5101], "targets": ["127.0.0.1:7000", "[2001:db8::1]:7001", "data.example.org:7002"],
        "config_sha256": "a" * 64, "runtime_state": {"pid": 10, "pid_start": 20}, "encryption": "none"}

BAD = [
    ("backend", "evil"), ("backend", None), ("role", "ROOT"), ("runtime", "bogus"), ("runtime", "kernel"),
    ("ports", ["5100"]), ("ports", [True]), ("ports", [0]), ("ports", [70000]), ("ports", [5100, 5100]),
    ("ports", "5100"), ("targets", ["127.0.0.1:7000\n    program x"]), ("targets", ["10.0.0.1:0"]),
    ("targets", ["010.0.0.1:80"]), ("targets", "127.0.0.1:7000"), ("targets", [7000]),
    ("listener_ip", "127.0.0.1 "), ("listener_ip", "::FFFF:1"), ("listener_ip", "any"),
    ("uid", "5E55E55E-0000-4000-8000-000000000001"), ("uid", "00000000-0000-4000-8000-000000000000"),
    ("config_sha256", "../../etc/passwd"), ("runtime_state", ["x"]), ("encryption", "rot13"),
    ("proxy_uid", 0), ("proxy_uid", "7400"), ("proxy_uid", True), ("proxy_uid", 65534), ("proxy_uid", -1),
    ("proxy_uid", 2 ** 31), ("proxy_uid", 7400.5),
    ("rate", 0), ("rate", "500Mbit"), ("rate", True), ("rate", 7999), ("rate", 32 * 10 ** 9 + 1), ("rate", 1e8),
]


def store_with(tmp_path, data, uid=UID):
    store = SessionStore(str(tmp_path / "state"))
    store.ensure_dirs()
    with open(store.record_path(uid), "w", encoding="utf-8") as handle:
        handle.write(data if isinstance(data, str) else json.dumps(data))
    return store


def test_a_good_record_loads(tmp_path):
    record = store_with(tmp_path, GOOD).load(UID)
    assert record.ports == [5100, 5101] and record.runtime_state["pid"] == 10


def test_a_rated_record_loads_and_one_without_a_rate_keeps_working(tmp_path):
    assert store_with(tmp_path / "old", GOOD).load(UID).rate is None  # written before rates
    assert store_with(tmp_path / "new", dict(GOOD, rate=500_000_000)).load(UID).rate == 500_000_000


def test_a_record_with_a_pool_uid_loads_and_one_without_keeps_working(tmp_path):
    assert store_with(tmp_path / "old", GOOD).load(UID).proxy_uid is None  # written before the pool
    assert store_with(tmp_path / "new", dict(GOOD, proxy_uid=7400)).load(UID).proxy_uid == 7400


@pytest.mark.parametrize("field,value", BAD, ids=["%s=%r" % bad for bad in BAD])
def test_a_record_failing_the_schema_is_broken(tmp_path, field, value):
    store = store_with(tmp_path, dict(GOOD, **{field: value}))
    entry = store.load_entry(UID)
    assert isinstance(entry, BrokenRecord), (field, value)
    assert "\n" not in str(entry.error())  # values are quoted (repr), never raw
    assert store.all() == [] and [e.uid for e in store.entries()] == [UID]


@pytest.mark.parametrize("text", ["[]", "null", "\"x\"", "{", "{\"uid\": 1}"])
def test_json_that_is_no_record_is_broken(tmp_path, text):
    assert isinstance(store_with(tmp_path, text).load_entry(UID), BrokenRecord)


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(sorted(GOOD) + ["proxy_uid", "rate"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40),
                       st.lists(st.one_of(st.integers(), st.text(max_size=20)), max_size=3),
                       st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)))
def test_any_field_value_loads_only_as_it_was_written_or_is_broken(tmp_path_factory, field, value):
    """Fuzz: a record loads only with a value the gateway itself could have written there, or is broken;
    reading never raises."""
    store = store_with(tmp_path_factory.mktemp("fuzz"), dict(GOOD, **{field: value}))
    entry = store.load_entry(UID)
    if not isinstance(entry, BrokenRecord):
        assert getattr(entry, field) == value
        assert isinstance(entry.ports, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in entry.ports)
        assert entry.backend in ("haproxy", "nginx", "stunnel", "nftables")
