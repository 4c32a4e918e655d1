# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Many sessions in one call (Gateway.apply) and broken session records, with a fake runtime."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from conftest import files_under
from gateway_fakes import FakeRuntime, spec
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway, Release
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.store import BrokenRecord, SessionStore

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)


class OrphanAwareRuntime(FakeRuntime):
    def release_orphan(self, store, uid):
        self.calls.append(("release_orphan", uid))
        self.running.discard(uid)
        return ["fake proxy of %s" % uid]


@pytest.fixture
def fake():
    return OrphanAwareRuntime()


@pytest.fixture
def gateway(tmp_path, fake):
    return Gateway(str(tmp_path / "state"), {"process": lambda session: fake}, policy=LOOPBACK_POLICY)


def uids(count):
    return [str(uuid.UUID(int=0xba7c4 << 96 | i)) for i in range(count)]


def test_batch_applies_each_session_as_alone(gateway, fake, monkeypatch):
    ids = uids(5)
    scans = []
    original = SessionStore._scan  # pylint: disable=protected-access
    monkeypatch.setattr(SessionStore, "_scan", lambda self: scans.append(1) or original(self))

    # The 4th asks for more ports than the range has left: it alone fails, the others go through.
    requests = [spec(uid=u, num_conn=1, port_range="47100-47103", targets=["127.0.0.1:9"]) for u in ids[:3]]
    requests += [spec(uid=ids[3], num_conn=2, port_range="47100-47103", targets=["127.0.0.1:9"]),
                 spec(uid=ids[4], num_conn=1, port_range="47100-47103", targets=["127.0.0.1:9"])]
    outcomes = gateway.apply(requests)
    assert scans == [1]  # the records were read once for the whole batch
    assert [o.actions for o in outcomes] == [["reserve", "write_config", "start"]] * 3 + [[]] + \
        [["reserve", "write_config", "start"]]
    assert isinstance(outcomes[3].error, S2DSError) and "num_conn" in str(outcomes[3].error)
    assert [o.session["ports"] for o in outcomes if o.error is None] == [[47100], [47101], [47102], [47103]]
    assert not os.path.exists(gateway.store.record_path(ids[3]))
    assert fake.running == {ids[0], ids[1], ids[2], ids[4]}

    # Unchanged: nothing to do for any; check mode changes nothing.
    again = gateway.apply([r for i, r in enumerate(requests) if i != 3])
    assert not any(o.changed for o in again)
    before = files_under(gateway.store.state_dir)
    calls = list(fake.calls)
    planned = gateway.apply([Release(u) for u in ids], check_mode=True)
    assert [o.changed for o in planned] == [True, True, True, False, True]
    assert files_under(gateway.store.state_dir) == before and fake.calls == calls

    released = gateway.apply([Release(u) for u in ids])
    assert [o.actions for o in released] == [["stop", "release"]] * 3 + [[]] + [["stop", "release"]]
    assert files_under(gateway.store.state_dir) == [] and fake.running == set()


def test_batch_diff_per_session(gateway):
    ids = uids(2)
    first = gateway.apply([spec(uid=u, targets=["127.0.0.1:9000"]) for u in ids])
    changed = gateway.apply([spec(uid=ids[0], targets=["127.0.0.1:9000"]), spec(uid=ids[1], targets=["127.0.0.1:9001"])])
    assert all(o.diff for o in first)
    assert changed[0].diff == {} and "127.0.0.1:9001" in changed[1].diff["after"]


@pytest.mark.parametrize("damage", ['{"uid": "trunc', "", "[1, 2]", '{"uid": "%s", "role": "PROD"}'])
def test_broken_record_does_not_stop_the_others_and_can_be_released(gateway, fake, damage):
    broken, good, new = uids(3)
    gateway.apply([spec(uid=u, targets=["127.0.0.1:9000"]) for u in (broken, good)])
    path = gateway.store.record_path(broken)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(damage.replace("%s", broken))

    # Other sessions: listed, changed, created as usual.
    assert gateway.present(spec(uid=good, targets=["127.0.0.1:9001"])).actions[-1] == "reload"
    assert gateway.present(spec(uid=new, targets=["127.0.0.1:9000"])).changed
    listed = {s["uid"]: s for s in gateway.sessions()}
    assert listed[good]["healthy"] is not None and "broken" not in listed[good]
    assert listed[broken]["broken"] and not listed[broken]["healthy"] and path in listed[broken]["error"]

    # The broken one itself: an error that names the file.
    with pytest.raises(S2DSError, match=path.replace(".", r"\.")):
        gateway.present(spec(uid=broken, targets=["127.0.0.1:9000"]))
    assert gateway.apply([spec(uid=broken, targets=["127.0.0.1:9000"])])[0].error is not None

    # Release frees what can be found by its uid: the proxy, run dir and record.
    out = gateway.absent(broken)
    assert out.changed and out.session["broken"] and ("release_orphan", broken) in fake.calls
    assert not os.path.exists(path) and not os.path.exists(gateway.store.run_dir(broken))
    assert broken not in fake.running and good in fake.running
    assert broken not in {s["uid"] for s in gateway.sessions()}
    assert not gateway.absent(broken).changed


def test_an_os_error_is_that_sessions_error_only(gateway, fake):
    ids = uids(2)
    start = fake.start

    def start_or_refuse(backend, store, record):
        if record.uid == ids[1]:
            raise PermissionError(13, "Permission denied", "/etc/systemd/system/x.service")
        start(backend, store, record)

    fake.start = start_or_refuse
    outcomes = gateway.apply([spec(uid=u, targets=["127.0.0.1:9"]) for u in ids])
    assert outcomes[0].error is None and outcomes[0].changed
    assert "Permission denied" in str(outcomes[1].error) and ids[1] in str(outcomes[1].error)
    assert not os.path.exists(gateway.store.record_path(ids[1]))


def test_a_record_with_a_bad_owner_is_broken(tmp_path):
    """The owner field is read back from disk like every other: a newline or a non-string makes the record broken."""
    store = SessionStore(str(tmp_path))
    good = {"uid": "4f6c1b7e-2a3d-4c5e-9f00-1234567890ab", "role": "PROD", "backend": "haproxy", "runtime": "process",
            "listener_ip": "127.0.0.1", "ports": [5100], "targets": ["127.0.0.1:6000"], "owner": "token-sha256:" + "a" * 64}
    os.makedirs(store.sessions_dir, exist_ok=True)
    for owner, broken in (("token-sha256:" + "a" * 64, False), ("peer:127.0.0.1", False), (None, False),
                          ("x\nfrontend evil", True), (7, True), ("", True)):
        with open(store.record_path(good["uid"]), "w", encoding="utf-8") as handle:
            json.dump(dict(good, owner=owner), handle)
        assert isinstance(store.load_entry(good["uid"]), BrokenRecord) is broken, owner
