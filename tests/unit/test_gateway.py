# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway's decisions (actions, check mode, rollback, state on disk) with a fake runtime."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from conftest import files_under
from gateway_fakes import UID, FakeRuntime, spec
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

OTHER = "0b7a3c52-9d1e-4f6a-8b2c-3d4e5f607182"


@pytest.fixture
def fake():
    return FakeRuntime()


@pytest.fixture
def gateway(tmp_path, fake):
    return Gateway(str(tmp_path / "state"), {"process": lambda session: fake}, policy=LOOPBACK_POLICY)


def test_reserve_then_same_ports_again(gateway):
    first = gateway.present(spec())
    assert first.changed and first.actions == ["reserve"] and first.session["ports"] == [47100, 47101]
    again = gateway.present(spec())
    assert not again.changed and again.session["ports"] == [47100, 47101]
    other = gateway.present(spec(uid=OTHER))
    assert other.session["ports"] == [47102, 47103]


def test_targets_start_then_reload_on_change(gateway, fake):
    assert gateway.present(spec(targets=["127.0.0.1:9000"])).actions == ["reserve", "write_config", "start"]
    assert gateway.present(spec(targets=["127.0.0.1:9000"])).actions == []
    changed = gateway.present(spec(targets=["127.0.0.1:9001"]), )
    assert changed.actions == ["update", "write_config", "reload"]
    assert "127.0.0.1:9001" in changed.diff["after"] and "127.0.0.1:9000" in changed.diff["before"]
    fake.running.clear()  # the proxy died
    assert gateway.present(spec(targets=["127.0.0.1:9001"])).actions == ["start"]


def test_stunnel_restarts_and_keeps_its_key_out_of_the_config(gateway, tmp_path):
    s = spec(backend="stunnel", targets=["127.0.0.1:9000"], psk="k" * 32)
    out = gateway.present(s)
    assert out.warnings == []
    run = os.path.join(str(tmp_path / "state"), "run", UID)
    config = open(os.path.join(run, "stunnel.conf")).read()
    assert "k" * 32 not in config and "PSKsecrets" in config
    assert oct(os.stat(os.path.join(run, "psk.txt")).st_mode & 0o777) == "0o600"
    record = open(os.path.join(str(tmp_path / "state"), "sessions", UID + ".json")).read()
    assert "k" * 32 not in record
    new_key = gateway.present(spec(backend="stunnel", targets=["127.0.0.1:9000"], psk="m" * 32))
    assert new_key.actions == ["update", "write_config", "restart"] and new_key.diff == {}


def test_derived_psk_warns(gateway):
    assert "only as secret as the uid" in gateway.present(spec(backend="stunnel", targets=["127.0.0.1:9"])).warnings[0]


def test_check_mode_changes_nothing(gateway, fake, tmp_path):
    out = gateway.present(spec(targets=["127.0.0.1:9000"]), check_mode=True)
    assert out.changed and out.actions == ["reserve", "write_config", "start"] and "127.0.0.1:9000" in out.diff["after"]
    assert not os.path.exists(str(tmp_path / "state")) and fake.calls == []
    gateway.present(spec(targets=["127.0.0.1:9000"]))
    before = files_under(str(tmp_path / "state"))
    assert gateway.absent(UID, check_mode=True).changed
    assert files_under(str(tmp_path / "state")) == before and fake.running == {UID}


def test_role_backend_or_runtime_cannot_change(gateway):
    gateway.present(spec())
    for kwargs, field in [({"role": "CONS"}, "role"), ({"backend": "nginx"}, "backend")]:
        with pytest.raises(S2DSError) as err:
            gateway.present(spec(**kwargs))
        assert err.value.field == field and "release it first" in str(err.value)


def test_failed_start_leaves_nothing(tmp_path):
    failing = FakeRuntime(fail_start=True)
    gateway = Gateway(str(tmp_path / "state"), {"process": lambda session: failing}, policy=LOOPBACK_POLICY)
    with pytest.raises(S2DSError):
        gateway.present(spec(targets=["127.0.0.1:9000"]))
    assert files_under(str(tmp_path / "state")) == []
    assert ("stop", UID) in failing.calls


def test_release_frees_ports_and_files(gateway, fake, tmp_path):
    gateway.present(spec(targets=["127.0.0.1:9000"]))
    out = gateway.absent(UID)
    assert out.changed and fake.running == set()
    assert files_under(str(tmp_path / "state")) == []
    assert not gateway.absent(UID).changed
    assert gateway.present(spec(uid=OTHER)).session["ports"] == [47100, 47101]


def test_num_conn_grows_and_shrinks_keeping_ports(gateway):
    gateway.present(spec(num_conn=2))
    assert gateway.present(spec(num_conn=4)).session["ports"] == [47100, 47101, 47102, 47103]
    assert gateway.present(spec(num_conn=1)).session["ports"] == [47100]


def test_sessions_survive_a_new_gateway_object(gateway, tmp_path, fake):
    gateway.present(spec(targets=["127.0.0.1:9000"]))
    again = Gateway(str(tmp_path / "state"), {"process": lambda session: fake}, policy=LOOPBACK_POLICY)
    [info] = again.sessions()
    assert info["uid"] == UID and info["ports"] == [47100, 47101] and info["healthy"]


def _reserve_many(state_dir, worker, count, queue):
    import uuid
    gateway = Gateway(state_dir, {"process": lambda session: FakeRuntime()}, policy=LOOPBACK_POLICY)
    ports = []
    for i in range(count):
        uid = str(uuid.uuid5(uuid.NAMESPACE_OID, "%d-%d" % (worker, i)))
        ports += gateway.present(spec(uid=uid, num_conn=2, port_range="47100-47299")).session["ports"]
    queue.put(ports)


def test_parallel_processes_never_share_a_port(tmp_path):
    state_dir = str(tmp_path / "state")
    queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_reserve_many, args=(state_dir, w, 10, queue)) for w in range(6)]
    for w in workers:
        w.start()
    ports = [p for dummy in workers for p in queue.get(timeout=60)]
    for w in workers:
        w.join(10)
    assert len(ports) == 120 and len(set(ports)) == 120
    records = [json.load(open(os.path.join(state_dir, "sessions", f))) for f in os.listdir(os.path.join(state_dir, "sessions"))]
    assert len(records) == 60
