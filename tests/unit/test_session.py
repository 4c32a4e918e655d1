# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Input validation: every bad value is an S2DSError naming the field and value."""

from __future__ import annotations

import re

import pytest

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError, quoted
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import (
    SessionSpec, Target, derived_psk, parse_ip, parse_port_range, parse_target, parse_uid, session_key)

UID = "4f6c1b7e-2a3d-4c5e-9f00-1234567890ab"


def test_uid_is_canonicalised():
    assert parse_uid(UID.upper()) == UID


@pytest.mark.parametrize("bad", ["../x", "", None, UID + "/..", "{%s}" % UID, "urn:uuid:" + UID, "x" * 65,
                                 UID + "\n", " " + UID, "a b", "a\x00", "caf\u00e9", "\u00b2", 5.0, ["x"]])
def test_uid_refuses_what_no_name_can_hold(bad):
    with pytest.raises(S2DSError) as err:
        parse_uid(bad)
    assert err.value.field == "uid"
    assert "uid %r" % (bad,) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("uid", ["x", ".", "..", "-x", ".hidden", UID.replace("-", ""), UID[:-1] + "g", "A" * 64,
                                 "scistream_session.1"])
def test_any_upstream_uid_is_accepted_and_named_safely(uid):
    assert parse_uid(uid) == uid
    key = session_key(uid)
    assert re.fullmatch(r"s-[0-9a-f]{32}", key) and key == session_key(uid)


def test_uuid_keys_are_the_names_sessions_always_had():
    assert session_key(parse_uid(UID.upper())) == UID
    assert session_key("A") != session_key("a") and parse_uid("A") == "A"


@pytest.mark.parametrize("text,expected", [("5100-5200", (5100, 5200)), (" 1 - 65535 ", (1, 65535)), ("7-7", (7, 7))])
def test_port_range(text, expected):
    assert parse_port_range(text) == expected


@pytest.mark.parametrize("bad,why", [("5200-5100", "greater"), ("0-10", "between"), ("5100-70000", "between"),
                                     ("5100", "look like"), ("a-b", "look like"), ("-1-5", "look like")])
def test_port_range_rejects(bad, why):
    with pytest.raises(S2DSError) as err:
        parse_port_range(bad)
    assert err.value.field == "port_range" and why in str(err.value) and repr(bad) in str(err.value)


@pytest.mark.parametrize("text,host,port,shown", [
    ("10.0.0.1:5000", "10.0.0.1", 5000, "10.0.0.1:5000"),
    ("[2001:db8::1]:5000", "2001:db8::1", 5000, "[2001:db8::1]:5000"),
    ("[2001:DB8:0::1]:5000", "2001:db8::1", 5000, "[2001:db8::1]:5000"),
    ("producer.example.org:7000", "producer.example.org", 7000, "producer.example.org:7000"),
    ("localhost:1", "localhost", 1, "localhost:1"),
])
def test_targets(text, host, port, shown):
    target = parse_target(text)
    assert target == Target(host, port) and str(target) == shown


@pytest.mark.parametrize("bad", ["10.0.0.1", "10.0.0.1:", ":5000", "10.0.0.1:70000", "2001:db8::1:5000",
                                 "[10.0.0.1]:5000", "[2001:db8::1]5000", "bad host:5000", "host:port",
                                 "999.1.1.1:5000", "-x.org:5000"])
def test_targets_reject_malformed(bad):
    with pytest.raises(S2DSError) as err:
        parse_target(bad)
    assert err.value.field == "targets" and repr(bad) in str(err.value)


def test_spec_build_validates_every_field():
    spec = SessionSpec.build(UID, "PROD", num_conn="3", targets="10.0.0.1:1,10.0.0.2:2", port_range="6000-6010")
    assert spec.num_conn == 3 and spec.port_range == (6000, 6010)
    assert [str(t) for t in spec.targets] == ["10.0.0.1:1", "10.0.0.2:2"]
    for field, kwargs in [("role", {"role": "BOTH"}), ("backend", {"backend": "envoy"}),
                          ("runtime", {"runtime": "k8s"}), ("num_conn", {"num_conn": 0}),
                          ("num_conn", {"num_conn": "many"}), ("listener_ip", {"listener_ip": "example.org"}),
                          ("psk_cipher", {"psk_cipher": "AES128-SHA"})]:
        args = dict(uid=UID, role="PROD")
        args.update(kwargs)
        with pytest.raises(S2DSError) as err:
            SessionSpec.build(**args)
        assert err.value.field == field, (field, str(err.value))


def test_psk_is_never_echoed():
    with pytest.raises(S2DSError) as err:
        SessionSpec.build(UID, "PROD", psk="short:secret")
    assert "short" not in str(err.value) and err.value.field == "psk"


def test_derived_psk_is_stable_and_warned_about():
    spec = SessionSpec.build(UID, "CONS", backend="stunnel")
    assert spec.psk_is_derived and spec.effective_psk == derived_psk(UID) and len(spec.effective_psk) == 64
    assert not SessionSpec.build(UID, "CONS", psk="x" * 16).psk_is_derived


def test_template_must_be_readable(tmp_path):
    with pytest.raises(S2DSError) as err:
        SessionSpec.build(UID, "PROD", template=str(tmp_path / "missing.j2"))
    assert err.value.field == "template"


@pytest.mark.parametrize("bad,why", [
    ("[fe80::1%eth0]:80", "zone id"),
    ("[fe80::1%x\nprogram p\n  command sh]:80", "zone id"),
    ("name\n:80", "host"),
    ("name:80\n", "port"),
    ("10.0.0.1:\u00b2", "port"),
    ("10.0.0.1:\u0665", "port"),
    ("10.0.0.1:+80", "port"),
    ("10.0.0.1:080", "port"),
    ("10.0.0.1: 80", "port"),
    ("010.0.0.1:80", "host"),
    ("1.2.3:80", "host"),
    ("a..b:80", "host"),
    ("%s.org:80" % ("a" * 64), "host"),
    (".".join(["a" * 63] * 4) + ".org:80", "host"),
    ("h\u00e9.org:80", "host"),
    ("[::1] :80", "look like"),
    (" 10.0.0.1:80", "host"),
])
def test_targets_refuse_injection(bad, why):
    with pytest.raises(S2DSError) as err:
        parse_target(bad, field="remote_listeners")
    message = str(err.value)
    assert err.value.field == "remote_listeners" and why in message and quoted(bad) in message
    assert "\n" not in message


@pytest.mark.parametrize("text,host", [("[::ffff:10.0.0.1]:80", "::ffff:a00:1"), ("a-1.b2.example.org.:9", "a-1.b2.example.org."),
                                       ("%s:1" % ".".join(["a" * 63] * 3 + ["a" * 61]), ".".join(["a" * 63] * 3 + ["a" * 61]))])
def test_targets_at_the_limits(text, host):
    assert parse_target(text).host == host


@pytest.mark.parametrize("bad", ["fe80::1%eth0", "10.0.0.1\n", "010.0.0.1", "::1 ", "example.org", "\u0661.1.1.1"])
def test_listener_ip_is_an_address_without_zone(bad):
    with pytest.raises(S2DSError) as err:
        SessionSpec.build(UID, "PROD", listener_ip=bad)
    assert err.value.field == "listener_ip" and repr(bad) in str(err.value)
    assert parse_ip("listener_ip", "0:0::1") == "::1"


@pytest.mark.parametrize("bad", ["\u0665", "5\n", "+5", "1e3", True, 2.5])
def test_num_conn_is_ascii_digits(bad):
    with pytest.raises(S2DSError) as err:
        SessionSpec.build(UID, "PROD", num_conn=bad)
    assert err.value.field == "num_conn"


def test_long_values_are_quoted_bounded():
    with pytest.raises(S2DSError) as err:
        parse_target("x" * 100000 + ":80")
    assert len(str(err.value)) < 400 and "100005 characters" in str(err.value)
