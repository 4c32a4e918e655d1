# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""session_key: every name a session has on the host comes from it; UUIDs keep the names they had."""

from __future__ import annotations

import os

import pytest

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.janus import JanusRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord, parse_uid, session_key
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.store import BrokenRecord, SessionStore
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.templates import nftables

UID = "4f6c1b7e-2a3d-4c5e-9f00-1234567890ab"
UPSTREAM = ["..", ".", "-rf", "A", "a", "4f6c1b7e2a3d4c5e9f001234567890ab", "x" * 64]


def record(uid, ports=(40400,)):
    return SessionRecord(uid=uid, role="PROD", backend="haproxy", runtime="process", listener_ip="127.0.0.1",
                         ports=list(ports), targets=["127.0.0.1:40401"])


def test_store_keeps_each_uid_apart(tmp_path):
    store = SessionStore(str(tmp_path))
    for index, uid in enumerate(UPSTREAM + [UID]):
        store.save(record(uid, ports=[40400 + index]))
    names = sorted(os.listdir(tmp_path / "sessions"))
    assert len(names) == len(UPSTREAM) + 1 and UID + ".json" in names
    assert all(name == UID + ".json" or (name.startswith("s-") and len(name) == 39) for name in names)
    assert {r.uid for r in store.all()} == set(UPSTREAM) | {UID}
    assert store.load("A").ports != store.load("a").ports
    assert store.run_dir("..") == os.path.join(str(tmp_path), "run", session_key(".."))
    with store.cached():
        assert store.load("..").uid == ".." and store.load_entry("-rf").uid == "-rf"
    store.delete("..")
    assert store.load("..") is None and store.load(".") is not None


def test_a_broken_record_of_a_hashed_uid_is_listed_under_its_key(tmp_path):
    store = SessionStore(str(tmp_path))
    store.save(record("upstream-uid"))
    with open(store.record_path("upstream-uid"), "w", encoding="utf-8") as handle:
        handle.write("{not json")
    [entry] = store.entries()
    assert isinstance(entry, BrokenRecord) and entry.uid == session_key("upstream-uid")
    assert isinstance(store.load_entry("upstream-uid"), BrokenRecord)


def test_a_record_moved_under_another_key_is_broken(tmp_path):
    store = SessionStore(str(tmp_path))
    store.save(record("one"))
    os.rename(store.record_path("one"), store.record_path("two"))
    [entry] = store.entries()
    assert isinstance(entry, BrokenRecord) and entry.uid == session_key("two")


@pytest.mark.parametrize("uid", UPSTREAM + [UID])
def test_unit_container_chain_and_janus_names(uid):
    key = session_key(parse_uid(uid))
    rec = record(parse_uid(uid))
    haproxy = get_backend("haproxy")
    assert ProcessRuntime.unit_name(haproxy, rec) == "scistream-haproxy-prod-%s.service" % key
    assert DockerRuntime.container_name(haproxy, rec) == "scistream-haproxy-prod-%s" % key
    janus = JanusRuntime(url="https://janus.invalid", node="n", profile="p", image="i")
    request = janus.request(haproxy, rec)
    # Janus names containers itself; the session's name carries the key, and the container sees only its own run dir.
    assert request["name"] == "scistream-%s" % key and key not in request["arguments"]
    commands = nftables.ruleset(dict_record(rec))["nftables"]
    chains = {c["add"]["chain"]["name"] for c in commands if "add" in c and "chain" in c["add"]}
    assert {"dnat-" + key, "snat-" + key, "count-" + key} <= chains
    comments = {c["add"]["rule"].get("comment") for c in commands if "add" in c and "rule" in c["add"]}
    assert comments == {None, key}
    if uid == UID:
        assert key == UID  # the names sessions always had


def dict_record(rec):
    return SessionRecord.from_dict(dict(rec.to_dict(), backend="nftables", runtime="kernel"))
