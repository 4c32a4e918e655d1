# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``stream_sessions`` filter: one gateway's side of the inventory's streams, as s2ds_sessions items.

playbooks/stream.yml used to build these lists in two long Jinja
expressions that repeated each other; here they are built once, and every
stream entry is checked by the core's grammar (session.py) first, so a bad
inventory value fails naming the stream and the field.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError, quoted
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import (
    parse_count, parse_duration, parse_rate, parse_target, parse_uid)

#: Stream options handed to the session as they are (None: the module's default).
PASSED_ON = ("num_conn", "backend", "runtime", "psk", "encryption", "tls_version", "lifetime", "idle_timeout", "rate")
#: Where the pki role puts each TLS file, by session option.
TLS_FILES = (("tls_cert", "gateway.crt"), ("tls_key", "gateway.key"), ("tls_ca", "ca.crt"))
DEFAULT_PKI_DIR = "/etc/scistream/pki"


def _stream_name(index, stream):
    name = stream.get("name") if isinstance(stream, Mapping) else None
    return "stream %s (scistream_streams[%d])" % (quoted(name), index) if name else "scistream_streams[%d]" % index


def check_stream(index, stream):
    """``stream`` (an inventory entry) with its uid canonical and its producer targets checked.

    Raises AnsibleFilterError naming the stream and the field.
    """
    where = _stream_name(index, stream)
    if not isinstance(stream, Mapping):
        raise AnsibleFilterError("%s: must be a mapping, not %s" % (where, type(stream).__name__))
    for field in ("uid", "producer_gateway", "consumer_gateway", "producer_targets"):
        if stream.get(field) in (None, "", []):
            raise AnsibleFilterError("%s: %s is required" % (where, field))
    targets = stream["producer_targets"]
    if isinstance(targets, str) or not isinstance(targets, (list, tuple)):
        raise AnsibleFilterError("%s: producer_targets %s: must be a list of host:port" % (where, quoted(targets)))
    try:
        checked = dict(stream, uid=parse_uid(stream["uid"]),
                       producer_targets=[str(parse_target(t, field="producer_targets")) for t in targets])
        if stream.get("num_conn") is not None:
            checked["num_conn"] = parse_count("num_conn", stream["num_conn"], 1, 1024)
        for field in ("lifetime", "idle_timeout"):  # the same durations on both gateways of the stream
            parse_duration(field, stream.get(field))
        parse_rate("rate", stream.get("rate"))  # the same rate on both gateways of the stream
    except S2DSError as exc:
        raise AnsibleFilterError("%s: %s" % (where, exc)) from None
    return checked


def check_streams(streams):
    """Every stream checked, each uid once."""
    if not isinstance(streams, (list, tuple)):
        raise AnsibleFilterError("scistream_streams: must be a list of streams, not %s" % type(streams).__name__)
    checked, seen = [], {}
    for index, stream in enumerate(streams):
        entry = check_stream(index, stream)
        if entry["uid"] in seen:
            raise AnsibleFilterError("%s: uid %s is also the uid of scistream_streams[%d]" % (
                _stream_name(index, stream), quoted(entry["uid"]), seen[entry["uid"]]))
        seen[entry["uid"]] = index
        checked.append(entry)
    return checked


def _image(stream, images):
    """The stream's own image, else the gateway's image for its backend, else None (the module's default)."""
    if stream.get("image") is not None:
        return stream["image"]
    if images:
        return images.get(stream.get("backend") or "haproxy")
    return None


def _session(stream, role, settings, targets):
    settings = settings or {}
    session = {"uid": stream["uid"], "role": role, "targets": targets,
               "listener_ip": settings.get("listener_ip"), "port_range": settings.get("port_range"),
               "image": _image(stream, settings.get("images"))}
    for option in PASSED_ON:
        session[option] = stream.get(option)
    if session["runtime"] is None:
        session["runtime"] = settings.get("runtime")
    tls = (stream.get("encryption") or "none") == "tls"
    pki_dir = settings.get("pki_dir") or DEFAULT_PKI_DIR
    for option, name in TLS_FILES:
        session[option] = "%s/%s" % (pki_dir, name) if tls else None
    return session


def _producer_listeners(index, stream, hostvars):
    """``wan_address:port`` of each listener of the stream's PROD session on its producer gateway."""
    where = _stream_name(index, stream)
    gateway = hostvars.get(stream["producer_gateway"]) if hostvars is not None else None
    if gateway is None:
        raise AnsibleFilterError("%s: producer_gateway %s is not a host of the inventory" % (
            where, quoted(stream["producer_gateway"])))
    result = gateway.get("scistream_prod_sessions") or {}
    ports = {s.get("uid"): s.get("ports") for s in result.get("sessions") or ()}.get(stream["uid"])
    if not ports:
        raise AnsibleFilterError("%s: producer_gateway %s has no PROD session for uid %s (did its PROD play run?)" % (
            where, quoted(stream["producer_gateway"]), quoted(stream["uid"])))
    wan = str(gateway.get("scistream_wan_address"))
    host = "[%s]" % wan if ":" in wan else wan  # an IPv6 address
    try:
        return [str(parse_target("%s:%s" % (host, port), field="scistream_wan_address")) for port in ports]
    except S2DSError as exc:
        raise AnsibleFilterError("%s: %s of %s" % (where, exc, stream["producer_gateway"])) from None


def stream_sessions(streams, role, gateway, settings=None, hostvars=None):
    """The s2ds_sessions items of ``gateway``'s side ``role`` (PROD or CONS) of ``streams``.

    PROD sessions forward to each stream's ``producer_targets``; CONS sessions
    to the listeners of the stream's PROD session (``hostvars`` of the
    producer gateway: ``scistream_prod_sessions`` and ``scistream_wan_address``).
    """
    if role not in ("PROD", "CONS"):
        raise AnsibleFilterError("stream_sessions: role %s must be PROD or CONS" % quoted(role))
    side = "producer_gateway" if role == "PROD" else "consumer_gateway"
    items = []
    for index, stream in enumerate(check_streams(streams)):
        if stream[side] != gateway:
            continue
        if role == "PROD":
            targets = stream["producer_targets"]
        else:
            targets = _producer_listeners(index, stream, hostvars)
        items.append(_session(stream, role, settings, targets))
    return items


#: What a host name (no rule can name it) adds to an allow-list: the default rules (special addresses stay refused).
ANY_ORDINARY = ["0.0.0.0/0", "::/0"]


def _exact_rule(target):
    """The rule ``address/32:port`` (``[address/128]:port``) of one Target, or None for a host name."""
    if ":" in target.host:
        return "[%s/128]:%d" % (target.host, target.port)
    if target.host.replace(".", "").isdigit():
        return "%s/32:%d" % (target.host, target.port)
    return None


def stream_allowed_targets(streams, role, gateway, hostvars=None):
    """The default ``allowed_targets`` of ``gateway``'s side ``role`` of ``streams``.

    PROD: exactly the ``producer_targets`` of its streams (the inventory says so in so many words).
    CONS: each producer gateway's ``scistream_wan_address`` with that gateway's ``scistream_gateway_port_range``
    (default 5100-5200), whatever ports its PROD session answered. A host name adds 0.0.0.0/0 and ::/0 instead
    (it is resolved by the module; loopback and the other special addresses stay refused).
    """
    if role not in ("PROD", "CONS"):
        raise AnsibleFilterError("stream_allowed_targets: role %s must be PROD or CONS" % quoted(role))
    side = "producer_gateway" if role == "PROD" else "consumer_gateway"
    rules = []
    for index, stream in enumerate(check_streams(streams)):
        if stream[side] != gateway:
            continue
        if role == "PROD":
            found = [_exact_rule(parse_target(t)) for t in stream["producer_targets"]]
        else:
            producer = (hostvars or {}).get(stream["producer_gateway"]) or {}
            wan = str(producer.get("scistream_wan_address", stream["producer_gateway"]))
            ports = str(producer.get("scistream_gateway_port_range") or "5100-5200").replace(" ", "")
            try:
                target = parse_target("[%s]:1" % wan if ":" in wan else "%s:1" % wan, field="scistream_wan_address")
            except S2DSError as exc:
                raise AnsibleFilterError("%s: %s of %s" % (_stream_name(index, stream), exc,
                                                           stream["producer_gateway"])) from None
            exact = _exact_rule(target)
            found = [exact.rsplit(":", 1)[0] + ":" + ports if exact else None]
        for rule in found:
            for item in ([rule] if rule else ANY_ORDINARY):
                if item not in rules:
                    rules.append(item)
    return rules


class FilterModule:
    """scistream.gateway filters."""

    def filters(self):
        return {"stream_sessions": stream_sessions, "stream_allowed_targets": stream_allowed_targets}
