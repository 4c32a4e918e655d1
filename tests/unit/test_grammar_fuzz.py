# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuzzing the grammar (session.py) and the renderers' backstop, in pure Python (many examples).

Whatever text arrives, the grammar either gives a typed value whose text form
parses back to the same value, or refuses with an S2DSError that names the
field; never another exception. Every accepted value renders into every
proxy's config with no character the proxy would read as syntax. The real
checkers (haproxy -c, nginx -t, stunnel) run in tests/integration/test_render_fuzz.py.
"""

from __future__ import annotations

import ipaddress
import re
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import BACKENDS, render_config, safe_value
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import (
    MAX_DURATION, MAX_RATE, MIN_RATE, RATE_UNITS, SessionRecord, Target, format_duration, format_rate, parse_duration,
    parse_devices, parse_hostname, parse_ip, parse_port_range, parse_rate, parse_target, parse_uid, session_key)

SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that looks like what the grammar reads, with the characters attackers use mixed in.
ALPHABET = string.ascii_letters + string.digits + ".:-[]%_ \t\n\r\x00#;{}\"'$\\=/()," + "\u00b2\u0665\u00e9\uff10"
near_text = st.text(alphabet=ALPHABET, max_size=80)
any_text = st.one_of(near_text, st.text(max_size=80))

LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
hostnames = st.lists(LABEL, min_size=1, max_size=4).map(".".join).filter(
    lambda name: not name.rpartition(".")[2].isdigit())
hosts = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), hostnames)
ports = st.integers(1, 65535)
targets = st.builds(Target, hosts, ports).map(lambda t: parse_target(_text_of(t)))
uids = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
PAYLOADS = ["[fe80::1%x\nprogram p\n  command /bin/sh]:80", "[fe80::1%eth0]:80", "name\n:80", "h;server x 1.2.3.4:1;:80",
            "10.0.0.1:80\n", "10.0.0.1:\u00b2", "a b:80"]


def _text_of(target):
    host = target.host
    return "[%s]:%d" % (host, target.port) if ":" in host else "%s:%d" % (host, target.port)


def _refused_naming(field, call, value):
    """``call(value)`` returns a value, or raises an S2DSError naming ``field``; nothing else."""
    try:
        return call(value)
    except S2DSError as exc:
        assert exc.field == field and "\n" not in str(exc), str(exc)
        return None


@SETTINGS
@given(any_text)
@example(PAYLOADS[0])
@example(PAYLOADS[2])
def test_any_text_is_a_target_or_refused(text):
    target = _refused_naming("remote_listeners", lambda v: parse_target(v, field="remote_listeners"), text)
    if target is not None:
        assert isinstance(target.port, int) and 1 <= target.port <= 65535
        assert parse_target(str(target)) == target  # the canonical text round-trips
        assert re.fullmatch(r"[A-Za-z0-9.:-]+", target.host)


@SETTINGS
@given(any_text)
def test_any_text_is_an_ip_or_refused(text):
    address = _refused_naming("listener_ip", lambda v: parse_ip("listener_ip", v), text)
    if address is not None:
        assert parse_ip("listener_ip", address) == address == str(ipaddress.ip_address(address))
        assert "%" not in address


@SETTINGS
@given(any_text)
def test_any_text_is_a_uid_or_refused(text):
    uid = _refused_naming("uid", parse_uid, text)
    if uid is not None:
        key = session_key(uid)
        assert parse_uid(uid) == uid and session_key(uid) == key
        assert re.fullmatch(r"[0-9a-f-]{36}|s-[0-9a-f]{32}", key) and key not in (".", "..")


@SETTINGS
@given(any_text)
def test_any_text_is_a_port_range_or_refused(text):
    parsed = _refused_naming("port_range", parse_port_range, text)
    if parsed is not None:
        assert 1 <= parsed[0] <= parsed[1] <= 65535 and parse_port_range("%d-%d" % parsed) == parsed


DURATION_TEXT = st.one_of(
    any_text, st.from_regex(r"[0-9+ -]{0,4}[0-9]{1,9}[smhdSMHD\u00b2 ]{0,2}", fullmatch=True),
    st.integers(-10, 2 * MAX_DURATION), st.booleans(), st.none(), st.floats(0, 100))


@SETTINGS
@given(DURATION_TEXT)
@example("\u0665s")
@example("01h")
@example("+5m")
@example("5 m")
@example("31d")
@example("5m\n")
def test_any_text_is_a_duration_or_refused(text):
    seconds = _refused_naming("lifetime", lambda value: parse_duration("lifetime", value), text)
    if seconds is not None:
        assert isinstance(seconds, int) and not isinstance(seconds, bool) and 0 <= seconds <= MAX_DURATION
        assert parse_duration("lifetime", format_duration(seconds)) == seconds
        # Only ASCII digits and one unit letter got through.
        assert isinstance(text, int) or re.fullmatch(r"(0|[1-9][0-9]*)[smhd]?", text)


RATE_TEXT = st.one_of(
    any_text, st.from_regex(r"[0-9+ -]{0,3}[0-9]{1,14}(%s|kbit|mbit|B|bps|/s| ){0,2}" % "|".join(
        re.escape(unit) for unit in RATE_UNITS), fullmatch=True),
    st.builds(lambda n, unit: "%d%s" % (n, unit), st.integers(0, 10 ** 12), st.sampled_from(sorted(RATE_UNITS))),
    st.integers(-10, 10 ** 10), st.booleans(), st.none(), st.floats(0, 100))


@SETTINGS
@given(RATE_TEXT)
@example("\u0665Mbit")
@example("01Gbit")
@example("+5Mbit")
@example("5 Mbit")
@example("1.5Gbit")
@example("5Mbit\n")
@example("100")
@example("100mbit")
@example("33Gbit")
@example("7999bit")
@example("0")
@example("00")
def test_any_text_is_a_rate_or_refused(text):
    bits = _refused_naming("rate", lambda value: parse_rate("rate", value), text)
    if bits is not None:
        assert isinstance(bits, int) and not isinstance(bits, bool)
        assert bits == 0 or MIN_RATE <= bits <= MAX_RATE
        assert parse_rate("rate", format_rate(bits)) == bits
        # Only ASCII digits and one of the units got through.
        assert text == "0" or re.fullmatch(r"(0|[1-9][0-9]*)(%s)" % "|".join(re.escape(unit) for unit in RATE_UNITS),
                                           text)


@SETTINGS
@given(st.one_of(any_text, st.lists(any_text, max_size=3), st.none(), st.integers()))
@example("eth0,eth1")
@example(["../x"])
@example(["a" * 16])
def test_any_text_is_a_device_list_or_refused(value):
    names = _refused_naming("rate_devices", lambda v: parse_devices("rate_devices", v), value)
    if names is not None:
        assert parse_devices("rate_devices", names) == names
        assert all(re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", name) and name not in (".", "..") for name in names)


@SETTINGS
@given(st.one_of(any_text, hostnames))
def test_any_text_is_a_host_name_or_refused(text):
    name = _refused_naming("targets", lambda v: parse_hostname("targets", v), text)
    if name is not None:
        assert len(name.rstrip(".")) <= 253 and all(1 <= len(label) <= 63 for label in name.rstrip(".").split("."))


@settings(max_examples=300, deadline=None)
@given(st.lists(uids, min_size=2, max_size=6, unique=True))
def test_two_uids_never_share_a_name(many):
    canonical = {parse_uid(uid) for uid in many}
    assert len({session_key(uid) for uid in canonical}) == len(canonical)


@SETTINGS
@given(st.sampled_from(sorted(BACKENDS)), st.text(max_size=30))
def test_the_backstop_passes_only_inert_text(name, text):
    backend = BACKENDS[name]
    try:
        out = safe_value(name, backend.unsafe_characters, text)
    except S2DSError as exc:
        assert exc.field == "config" and "\n" not in str(exc)
        return
    assert out == text and all("!" <= c <= "~" and c not in backend.unsafe_characters for c in out)


@pytest.mark.parametrize("name,payload", [
    (name, payload) for name in ("haproxy", "nginx", "stunnel")
    for payload in ("fe80::1%x\nprogram p", "a b", "x;y", "x#y", "x\"y", "x{y", "x\\y", "x=y\n[s]", "x\u00e9")
    if any(c in BACKENDS[name].unsafe_characters or not "!" <= c <= "~" for c in payload)])
def test_the_backstop_refuses_a_record_that_skipped_the_grammar(tmp_path, name, payload):
    """A record read from disk (or built by a caller in error) is checked again where it renders."""
    record = SessionRecord(uid="4f6c1b7e-2a3d-4c5e-9f00-1234567890ab", role="CONS", backend=name, runtime="process",
                           listener_ip="127.0.0.1", ports=[40001], targets=["[%s]:80" % payload])
    paths = {"run_dir": str(tmp_path), "pid_file": str(tmp_path / "pid"), "log_file": str(tmp_path / "log"),
             "psk_file": str(tmp_path / "psk.txt"), "foreground": False}
    with pytest.raises(S2DSError) as err:
        render_config(BACKENDS[name], record, paths, "PSK-AES128-GCM-SHA256")
    assert err.value.field == "config"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["haproxy", "nginx", "stunnel"]), st.sampled_from(["PROD", "CONS"]),
       st.ip_addresses().map(str), st.lists(targets, min_size=1, max_size=3), uids)
def test_every_accepted_value_renders_inertly(tmp_path_factory, name, role, listener_ip, wanted, uid):
    """No value the grammar accepts trips the backstop, and each lands whole on its own line."""
    tmp = tmp_path_factory.getbasetemp()
    paths = {"run_dir": str(tmp), "pid_file": str(tmp / "pid"), "log_file": str(tmp / "log"),
             "psk_file": str(tmp / "psk.txt"), "foreground": False}
    record = SessionRecord(uid=parse_uid(uid), role=role, backend=name, runtime="process",
                           listener_ip=parse_ip("listener_ip", listener_ip), ports=[40001, 40002],
                           targets=[str(t) for t in wanted])
    text = render_config(BACKENDS[name], record, paths, "PSK-AES128-GCM-SHA256")
    backend = BACKENDS[name]
    for i, port in enumerate(record.ports):
        target = wanted[i % len(wanted)]
        assert backend.address(record.listener_ip, port) in text
        assert backend.address(target.host, target.port) in text
