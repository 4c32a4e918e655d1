# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway's decisions about rates with a fake runtime and a fake shaper: idempotence by comparison, changes,
release, refusal where a rate cannot be enforced; the shaping module's documents."""

from __future__ import annotations

import json
import os

import pytest

from gateway_fakes import UID, FakeRuntime, spec
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import shaping
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord, protocol_rate


class LocalRuntime(FakeRuntime):
    """The fake runtime, with the stream leaving from this host (as the proxies' process runtime)."""

    egress_here = True


class FakeShaper:
    """What the kernel would hold: {first port: bits per second}; ``reason`` makes it unavailable."""

    def __init__(self, reason=None):
        self.reason = reason
        self.shaped = {}
        self.calls = []

    @property
    def available(self):
        return self.reason is None

    def shapes(self, record):
        return self.shaped.get(record.ports[0]) == record.rate

    def install(self, record):
        self.calls.append(("install", record.uid, record.rate))
        self.shaped[record.ports[0]] = record.rate
        return ["wan0"]

    def remove(self, record):
        self.calls.append(("remove", record.uid))
        self.shaped.pop(record.ports[0], None)


@pytest.fixture
def shaper():
    return FakeShaper()


@pytest.fixture
def gateway(tmp_path, shaper):
    fake = LocalRuntime()
    return Gateway(str(tmp_path / "state"), {"process": lambda session: fake}, counter=None,
                   policy=TargetPolicy(allow=WITH_LOOPBACK), shaper=shaper)


def test_a_rate_is_shaped_once_and_compared(gateway, shaper, tmp_path):
    first = gateway.present(spec(targets=["127.0.0.1:9000"], rate="500Mbit"))
    assert first.actions == ["reserve", "write_config", "start", "shape"] and first.session["rate"] == 500_000_000
    restore = json.load(open(os.path.join(str(tmp_path / "state"), "run", UID, shaping.RESTORE_FILE)))
    assert restore["classes"] == [{"device": "wan0", "minor": first.session["ports"][0], "bytes_per_second": 62_500_000}]
    assert oct(os.stat(os.path.join(str(tmp_path / "state"), "run", UID, shaping.RESTORE_FILE)).st_mode)[-3:] == "600"
    again = gateway.present(spec(targets=["127.0.0.1:9000"], rate="62500KB/s"))  # the same rate, other units
    assert not again.changed and again.actions == []
    changed = gateway.present(spec(targets=["127.0.0.1:9000"], rate="1Gbit"))
    assert changed.actions == ["update", "shape"]
    assert shaper.calls[-1] == ("install", UID, 10 ** 9)  # changed in place (same class)
    shaper.shaped.clear()  # the kernel lost it (a reboot without the restore)
    assert gateway.present(spec(targets=["127.0.0.1:9000"], rate="1Gbit")).actions == ["shape"]
    none = gateway.present(spec(targets=["127.0.0.1:9000"]))
    assert none.actions == ["update", "unshape"] and none.session["rate"] is None and not shaper.shaped
    assert not os.path.exists(os.path.join(str(tmp_path / "state"), "run", UID, shaping.RESTORE_FILE))


def test_release_and_check_mode(gateway, shaper):
    predicted = gateway.present(spec(targets=["127.0.0.1:9000"], rate="20MB/s"), check_mode=True)
    assert "shape" in predicted.actions and not shaper.calls
    gateway.present(spec(targets=["127.0.0.1:9000"], rate="20MB/s"))
    assert shaper.shaped == {47100: 160_000_000}
    assert gateway.absent(UID).changed
    assert shaper.calls[-1] == ("remove", UID) and not shaper.shaped


def test_a_rate_that_cannot_be_enforced_is_refused(tmp_path):
    fake = LocalRuntime()
    gateway = Gateway(str(tmp_path / "state"), {"process": lambda session: fake}, counter=None,
                      policy=TargetPolicy(allow=WITH_LOOPBACK), shaper=FakeShaper("rates need root (CAP_NET_ADMIN)"))
    with pytest.raises(S2DSError, match="rate '500Mbit': cannot be enforced here: rates need root") as raised:
        gateway.present(spec(targets=["127.0.0.1:9000"], rate="500Mbit"))
    assert raised.value.field == "rate"
    assert gateway.store.load(UID) is None
    assert not gateway.present(spec()).error  # without a rate all is well


def test_the_protocol_rate_is_kilobytes_per_second():
    assert protocol_rate(20000) == 160_000_000  # upstream's quickstart: --rate=20000  # 20 MB/s
    assert protocol_rate(10000) == 80_000_000
    assert protocol_rate(0) is None and protocol_rate(-5) is None
    with pytest.raises(S2DSError):
        protocol_rate("10000")


def test_the_restore_document_classifies_every_listener():
    record = SessionRecord(uid=UID, role="PROD", backend="haproxy", runtime="process", listener_ip="0.0.0.0",
                           ports=[5100, 5101], rate=80_000_000)
    document = shaping.restore_document(record, ["eth1"])
    elements = document["session"][0]["add"]["element"]["elem"]
    assert elements == [[5100, "5353:13ec"], [5101, "5353:13ec"]]
    assert document["classes"] == [{"device": "eth1", "minor": 5100, "bytes_per_second": 10_000_000}]
    chain = document["base"][2]["add"]["chain"]
    assert chain["hook"] == "postrouting" and chain["prio"] == shaping.PRIORITY > 100  # after NAT


def test_module_options_reach_the_spec_and_the_gateway(tmp_path):
    from ansible_collections.scistream.gateway.plugins.module_utils.ansible_s2ds import (
        ALL_GATEWAY_OPTIONS, SESSION_OPTIONS, request_from_params)
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.registry import make_gateway
    params = {name: option.get("default") for name, option in SESSION_OPTIONS.items()}
    params.update(uid=UID, role="PROD", rate="20MB/s")
    assert request_from_params(params).rate == 160_000_000
    assert request_from_params(dict(params, rate="0Mbit")).rate is None
    with pytest.raises(S2DSError, match="rate '1.5Gbit'") as raised:
        request_from_params(dict(params, rate="1.5Gbit"))
    assert raised.value.field == "rate"
    assert ALL_GATEWAY_OPTIONS["rate_devices"] == {"type": "list", "elements": "str"}
    gateway = make_gateway(str(tmp_path), rate_devices=["eth1"])
    assert gateway.shaper.wanted_devices == ["eth1"]


def test_the_rate_a_client_sends():
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import rate_for_protocol
    assert rate_for_protocol(160_000_000) == 20000 and protocol_rate(20000) == 160_000_000
    assert rate_for_protocol(None) == 0 and rate_for_protocol(0) == 0
    assert rate_for_protocol(8_000) == 1 and rate_for_protocol(12_000) == 1  # rounded down, never 0
