# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Rates enforced in the kernel, the same for every proxy, runtime and the nftables backend.

A stream's data leaves a gateway from the session's listener ports: the
proxies (host processes or host-network containers) answer their clients
from them, and the nftables backend's replies are translated back to them.
Both pass the host's postrouting hook with ``th sport`` a listener port and
conntrack direction ``reply`` (the client opened the connection), so one
rule classifies them all::

    table inet scistream-rate
      map classes  { inet_service : classid }     listener port -> 5353:<minor>
      chain shape  filter hook postrouting 200:  meta l4proto {tcp, udp} ct direction reply
                                                 meta priority set th sport map @classes

Priority 200 is after NAT (100), so the nftables backend's replies carry the
listener port already. The output hook (the counting table's ``out-`` chains)
would see the proxies' packets only: forwarded packets never pass it.

Shaping is HTB (tc.py) on the egress devices the operator names
(``rate_devices``; by default the devices of the default routes: the WAN
side of a gateway), one class per rated session, ``5353:<first listener
port>`` (ports are the host's own, so minors never clash, and nothing needs
allocating or remembering). HTB takes a packet whose priority is
``5353:<minor>`` straight to that class; any other packet, with no default
class, is sent unshaped. A session's elements and classes are made with it,
removed with it, and put back at boot from its ``rate.json``.
"""

from __future__ import annotations

import os

from . import nft, tc
from .errors import S2DSError

TABLE = nft.RATE_TABLE
FAMILY = nft.FAMILY
CLASS_MAP = "classes"
CHAIN = "shape"
PRIORITY = 200
#: In each rated session's run dir: its part of the table and its classes, for the boot-time restore.
RESTORE_FILE = "rate.json"
_TABLE_REF = nft.table_ref(TABLE)


class ShapingUnavailable(S2DSError):
    """A rate cannot be enforced here (no binding, not root, a device that cannot be shaped)."""


def minor_of(record):
    """The session's class minor: its first listener port."""
    return record.ports[0]


def bytes_per_second(bits):
    """HTB's rate unit (bytes per second) from bits per second, rounded down (never faster than asked)."""
    return max(1, bits // 8)


def base_commands():
    """The table, its map, its chain and the chain's one rule (``add`` leaves existing ones as they are; the rule
    is added only by :func:`rule_commands`)."""
    return [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
            {"add": {"map": dict(_TABLE_REF, name=CLASS_MAP, type="inet_service", map="classid")}},
            {"add": {"chain": dict(_TABLE_REF, name=CHAIN, type="filter", hook="postrouting", prio=PRIORITY,
                                   policy="accept")}}]


def rule_commands():
    return [{"add": {"rule": dict(_TABLE_REF, chain=CHAIN, expr=[
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp"]}}},
        {"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "reply"}},
        {"mangle": {"key": {"meta": {"key": "priority"}}, "value": {"map": {
            "key": {"payload": {"protocol": "th", "field": "sport"}}, "data": "@" + CLASS_MAP}}}}])}}]


def element_commands(ports, minor):
    return [{"add": {"element": dict(_TABLE_REF, name=CLASS_MAP, elem=[[port, tc.class_text(minor)] for port in ports])}}]


def restore_document(record, devices):
    """What the boot-time restore loads for this session: the table's base, the session's map elements and its
    class on each device."""
    return {"base": base_commands() + rule_commands(), "session": element_commands(record.ports, minor_of(record)),
            "classes": [{"device": device, "minor": minor_of(record), "bytes_per_second": bytes_per_second(record.rate)}
                        for device in devices]}


class Shaper:
    """Enforces sessions' rates on this host's egress ``devices`` (None: the default routes' devices).

    ``available`` is False (with ``reason``) where it cannot: no nftables binding, no pyroute2, not root. A
    session asking for a rate is then refused, never run unshaped.
    """

    def __init__(self, devices=None, context=None, control=None):
        self.wanted_devices = list(devices) if devices else None
        self.reason = None
        if not nft.HAS_NFTABLES:
            self.reason = "rates need " + nft.MISSING_BINDING
        elif not tc.HAS_PYROUTE2 and control is None:
            self.reason = "rates need " + tc.MISSING_PYROUTE2
        elif os.geteuid() != 0:
            self.reason = "rates need root (CAP_NET_ADMIN)"
        self._nft = context
        self._tc = control

    @property
    def available(self):
        return self.reason is None

    @property
    def nft(self):
        if self._nft is None:
            self._nft = nft.Nft()
        return self._nft

    @property
    def tc(self):
        if self._tc is None:
            self._tc = tc.TrafficControl()
        return self._tc

    def _require(self, uid):
        if not self.available:
            raise ShapingUnavailable("rate of session %s: %s" % (uid, self.reason), field="rate", value=uid)

    def devices(self, uid=None):
        """The devices rates are enforced on: the ones given, else the default routes'."""
        if self.wanted_devices:
            return self.wanted_devices
        found = self.tc.default_route_devices()
        if not found:
            raise ShapingUnavailable("rate of session %s: this host has no default route, so no device to shape; "
                                     "name them in rate_devices" % uid, field="rate_devices", value=None)
        return found

    def _table(self):
        """``({port: classid text} of the map, whether the chain has its rule)``, from one listing of the table
        (``({}, False)`` when the table is not there)."""
        elements, has_rule = None, False
        for entry in self.nft.list_table(TABLE, FAMILY):
            if elements is None and "map" in entry and entry["map"]["name"] == CLASS_MAP:
                elements = {key: value for key, value in entry["map"].get("elem", []) if isinstance(key, int)}
            elif "rule" in entry and entry["rule"]["chain"] == CHAIN:
                has_rule = True
        return elements or {}, has_rule

    def shapes(self, record):
        """True when the session's ports are classified to its class and the class has its rate on every device."""
        if not self.available or not record.rate:
            return False
        try:
            devices = self.devices(record.uid)
            elements, has_rule = self._table()
            if not has_rule or any(elements.get(port) != tc.class_text(minor_of(record)) for port in record.ports):
                return False
            for device in devices:
                index = self.tc.index(device)
                if self.tc.classes(index).get(minor_of(record)) != bytes_per_second(record.rate):
                    return False
        except tc.ShapingError:
            return False
        return True

    def install(self, record):
        """Classify the session's ports and give it its class on every device, in this order: the classes first
        (a device that cannot be shaped refuses before anything is classified)."""
        self._require(record.uid)
        devices = self.devices(record.uid)
        for device in devices:
            try:
                self.tc.set_class(device, minor_of(record), bytes_per_second(record.rate))
            except tc.ShapingError as exc:
                raise ShapingUnavailable("rate of session %s: %s" % (record.uid, exc), field="rate_devices",
                                         value=device) from None
        elements, has_rule = self._table()
        commands = base_commands() + ([] if has_rule else rule_commands())
        stale = [port for port in record.ports if port in elements]
        if stale:
            commands.append({"delete": {"element": dict(_TABLE_REF, name=CLASS_MAP, elem=stale)}})
        rc, dummy, error = self.nft.run(commands + element_commands(record.ports, minor_of(record)))
        if rc != 0:
            raise ShapingUnavailable("rate of session %s: classifying its listeners failed: %s" % (
                record.uid, error.strip()[-1000:]), field="rate", value=record.uid)
        return devices

    def remove(self, record):
        """Stop shaping the session: its map elements (those still pointing at its class) and its class on
        every device that has our root qdisc go; the root qdiscs stay."""
        if not self.available or not record.ports:
            return
        minor = minor_of(record)
        ours = [port for port, value in self._table()[0].items() if port in record.ports and value == tc.class_text(minor)]
        if ours:
            rc, dummy, error = self.nft.run([{"delete": {"element": dict(_TABLE_REF, name=CLASS_MAP, elem=ours)}}])
            if rc != 0:
                raise ShapingUnavailable("rate of session %s: removing its classification failed: %s" % (
                    record.uid, error.strip()[-1000:]), field="rate", value=record.uid)
        try:
            for index in self.tc.shaped_devices().values():
                if minor in self.tc.classes(index):
                    self.tc.delete_class(index, minor)
        except tc.ShapingError as exc:
            raise ShapingUnavailable("rate of session %s: %s" % (record.uid, exc), field="rate", value=record.uid) from None
