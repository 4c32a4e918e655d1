# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Session lifetimes and idle expiry (Gateway.expire) with a fake clock, a fake runtime and fake counters."""

from __future__ import annotations

import json
import os

import pytest

from conftest import CLOCK_T0, Clock
from gateway_fakes import UID, FakeRuntime, spec
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.counting import CountersUnavailable
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import format_duration, parse_duration
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.store import BrokenRecord

OTHER = "0b7a3c52-9d1e-4f6a-8b2c-3d4e5f607182"
T0 = CLOCK_T0


class FakeCounter:
    """The kernel's counts per session, set by the test; remembers what was removed."""

    available = True

    def __init__(self):
        self.bytes = {}
        self.removed = []

    def read(self, record):
        if record.uid not in self.bytes:
            raise CountersUnavailable("not counted", field="uid", value=record.uid)
        # As the counting table gives them: each direction apart (the first listener carries it all).
        total = self.bytes[record.uid]
        return [{"port": port, "bytes_in": total - total // 10 if i == 0 else 0, "bytes_out": total // 10 if i == 0 else 0}
                for i, port in enumerate(record.ports)]

    def counts(self, record):
        return True

    def remove(self, uid, role=None, ports=()):
        self.removed.append(uid)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def fake():
    return FakeRuntime()


@pytest.fixture
def counter():
    return FakeCounter()


def make_gateway(tmp_path, fake, counter, clock):
    return Gateway(str(tmp_path / "state"), {"process": lambda session: fake}, counter=counter,
                   policy=TargetPolicy(allow=WITH_LOOPBACK), clock=clock)


@pytest.fixture
def gateway(tmp_path, fake, counter, clock):
    return make_gateway(tmp_path, fake, counter, clock)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("30d", 2592000),
                                           ("3600", 3600), (3600, 3600), ("0", 0), ("0h", 0), (None, None)])
def test_durations_parse(text, seconds):
    assert parse_duration("lifetime", text) == seconds


@pytest.mark.parametrize("text", ["", "1.5h", "-5m", "+5m", "05m", " 5m", "5m ", "5 m", "5M", "5w", "31d", "\u0665m",
                                  "5m\n", True, 1.5, -1, [], "h", "99999999999s"])
def test_bad_durations_name_the_field_and_value(text):
    with pytest.raises(S2DSError) as caught:
        parse_duration("idle_timeout", text)
    assert caught.value.field == "idle_timeout" and repr(text)[:20] in str(caught.value)


def test_format_duration_reads_back():
    assert [format_duration(s) for s in (90, 1800, 43200, 604800, 61)] == ["90s", "30m", "12h", "7d", "61s"]


def test_a_session_gets_its_deadline_on_disk(gateway, tmp_path):
    out = gateway.present(spec(lifetime="1h", idle_timeout="10m"))
    assert out.session["expires_at"] == T0 + 3600 and out.session["expires_in"] == 600
    assert out.session["expires_reason"] == "idle"
    data = json.load(open(gateway.store.record_path(UID)))
    assert (data["lifetime"], data["idle_timeout"], data["expires_at"], data["idle_since"]) == (3600, 600, T0 + 3600, T0)


def test_same_options_again_change_nothing_and_do_not_renew(gateway, clock):
    gateway.present(spec(lifetime="1h"))
    clock.now += 100
    again = gateway.present(spec(lifetime="1h"))
    assert not again.changed and again.session["expires_at"] == T0 + 3600
    changed = gateway.present(spec(lifetime="2h"))
    assert changed.actions == ["update"] and changed.session["expires_at"] == T0 + 100 + 7200


def test_check_mode_predicts_the_renewal_and_writes_nothing(gateway, clock):
    gateway.present(spec(lifetime="1h"))
    clock.now += 100
    predicted = gateway.present(spec(lifetime="2h"), check_mode=True)
    assert predicted.changed and predicted.session["expires_at"] == T0 + 100 + 7200
    assert gateway.store.load(UID).expires_at == T0 + 3600


def test_past_its_lifetime_a_session_is_released_as_absent_would(gateway, fake, counter, clock):
    gateway.present(spec(lifetime="1h", targets=["127.0.0.1:9000"]))
    gateway.present(spec(uid=OTHER))  # no lifetime: never expires
    assert gateway.expire(T0 + 3599) == []
    assert UID in fake.running
    released = gateway.expire(T0 + 3600)
    assert released == [{"uid": UID, "owner": None, "reason": "lifetime", "deadline": T0 + 3600, "ports": [47100, 47101]}]
    assert UID not in fake.running and ("stop", UID) in fake.calls and counter.removed == [UID]
    assert gateway.store.load(UID) is None and not os.path.exists(gateway.store.run_dir(UID))
    assert [r.uid for r in gateway.store.all()] == [OTHER]
    # Its ports are free for the next session.
    assert gateway.present(spec(uid=UID)).session["ports"] == [47100, 47101]


def test_renew_starts_the_lifetime_again_for_the_owner_only(gateway, clock):
    gateway.present(spec(lifetime="1h"), owner="token-sha256:" + "a" * 64)
    clock.now += 3000
    assert gateway.renew(UID, owner="token-sha256:" + "b" * 64) is None
    assert gateway.renew(UID, owner="token-sha256:" + "a" * 64).expires_at == T0 + 3000 + 3600
    assert gateway.expire(T0 + 3600) == []
    assert gateway.expire(T0 + 6600)[0]["reason"] == "lifetime"
    assert gateway.renew(UID) is None


def test_max_lifetime_bounds_every_renewal(gateway, clock):
    gateway.present(spec(lifetime="1h", max_lifetime="90m"))
    clock.now += 3000
    assert gateway.renew(UID).expires_at == T0 + 5400
    assert gateway.expire(T0 + 5400)[0]["reason"] == "lifetime"


def test_a_busy_session_is_never_idle_and_an_idle_one_expires(gateway, counter, clock):
    gateway.present(spec(idle_timeout="10m", targets=["127.0.0.1:9000"]))
    counter.bytes[UID] = 0
    for minute in range(0, 60, 5):  # bytes move every 5 minutes, for an hour
        counter.bytes[UID] += 1000
        assert gateway.expire(T0 + minute * 60) == []
    last = T0 + 55 * 60
    assert gateway.store.load(UID).idle_since == last and gateway.store.load(UID).idle_bytes == 12000
    assert gateway.expire(last + 599) == []
    assert gateway.expire(last + 600)[0]["reason"] == "idle"
    assert gateway.store.load(UID) is None


def test_counters_that_restart_from_zero_count_as_traffic(gateway, counter):
    gateway.present(spec(idle_timeout="10m", targets=["127.0.0.1:9000"]))
    counter.bytes[UID] = 5000
    gateway.expire(T0 + 100)
    counter.bytes[UID] = 10  # reinstalled at boot: lower, but it moved
    assert gateway.expire(T0 + 650) == [] and gateway.store.load(UID).idle_since == T0 + 650


def test_a_session_whose_bytes_cannot_be_counted_is_never_idle(gateway, counter):
    gateway.present(spec(idle_timeout="10m", lifetime="2h", targets=["127.0.0.1:9000"]))  # not in counter.bytes
    assert gateway.expire(T0 + 3600) == []
    assert gateway.expire(T0 + 7200)[0]["reason"] == "lifetime"


def test_deadlines_survive_a_new_gateway(tmp_path, fake, counter, clock):
    make_gateway(tmp_path, fake, counter, clock).present(spec(lifetime="1h", idle_timeout="10m",
                                                              targets=["127.0.0.1:9000"]))
    counter.bytes[UID] = 100
    make_gateway(tmp_path, fake, counter, clock).expire(T0 + 300)  # counted: idle from T0 + 300
    again = make_gateway(tmp_path, fake, counter, Clock(T0 + 400))
    assert again.sessions()[0]["expires_in"] == 500 and again.sessions()[0]["expires_reason"] == "idle"
    assert again.expire(T0 + 899) == [] and again.expire(T0 + 900)[0]["reason"] == "idle"


def test_a_failed_release_is_reported_and_tried_again(gateway, fake, clock):
    gateway.present(spec(lifetime="1h", targets=["127.0.0.1:9000"]))

    def broken_stop(backend, store, record):
        raise S2DSError("cannot stop")
    fake.stop = broken_stop
    first = gateway.expire(T0 + 3600)
    assert first[0]["reason"] == "lifetime" and "cannot stop" in first[0]["error"]


def test_old_records_without_the_fields_stay_valid_and_never_expire(gateway):
    gateway.present(spec())
    path = gateway.store.record_path(UID)
    data = json.load(open(path))
    for field in ("lifetime", "idle_timeout", "expires_at", "max_expires_at", "idle_bytes", "idle_since"):
        data.pop(field)
    with open(path, "w") as handle:
        json.dump(data, handle)
    assert not isinstance(gateway.store.load_entry(UID), BrokenRecord)
    assert gateway.expire(T0 + 10 ** 8) == [] and gateway.sessions()[0]["expires_in"] is None


@pytest.mark.parametrize("field, value", [("lifetime", 0), ("lifetime", "1h"), ("lifetime", True), ("idle_timeout", 10 ** 9),
                                          ("expires_at", -1), ("expires_at", 1.5), ("idle_bytes", -1), ("idle_since", "now"),
                                          ("max_expires_at", 2 ** 41)])
def test_bad_lifetime_fields_make_a_broken_record(gateway, field, value):
    gateway.present(spec())
    path = gateway.store.record_path(UID)
    data = dict(json.load(open(path)), **{field: value})
    with open(path, "w") as handle:
        json.dump(data, handle)
    entry = gateway.store.load_entry(UID)
    assert isinstance(entry, BrokenRecord) and field in entry.reason


def test_no_state_dir_nothing_to_expire(tmp_path, fake, counter, clock):
    gateway = Gateway(str(tmp_path / "none"), {"process": lambda session: fake}, counter=counter, clock=clock)
    assert gateway.expire() == [] and not os.path.exists(str(tmp_path / "none"))


def test_module_options_reach_the_spec():
    from ansible_collections.scistream.gateway.plugins.module_utils.ansible_s2ds import SESSION_OPTIONS, request_from_params
    params = {name: option.get("default") for name, option in SESSION_OPTIONS.items()}
    params.update(uid=UID, role="PROD", lifetime="12h", idle_timeout="1800")
    request = request_from_params(params)
    assert (request.lifetime, request.idle_timeout) == (43200, 1800)
    with pytest.raises(S2DSError, match="lifetime '12 h'"):
        request_from_params(dict(params, lifetime="12 h"))
