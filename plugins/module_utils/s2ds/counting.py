# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Kernel counters on every session's listener ports, the same for every proxy and runtime.

The proxies (HAProxy, NGINX, stunnel; host processes or host-network
containers) all receive on the session's listener ports in this host's
network stack, so one nftables table of the collection's own counts them
all alike, while a stream runs, without asking the proxy anything::

    table inet scistream-count
      map in-ports   { inet_service : verdict }   port -> jump in-<role>-<instance>-<key>
      map out-ports  { inet_service : verdict }   port -> jump out-<role>-<instance>-<key>
      chain in   filter hook input  -150:  meta l4proto {tcp, udp} th dport vmap @in-ports
      chain out  filter hook output -150:  meta l4proto {tcp, udp} th sport vmap @out-ports
      chain in-<role>-<instance>-<key>:   per port P: bytes (th dport P), syn (connection attempts), rst (resets received)
      chain out-<role>-<instance>-<key>:  per port P: bytes (th sport P), synack (connections accepted), rst (resets sent)

``<key>`` is the session's names.session_key; ``<instance>`` names the
gateway (:func:`instance_id`, from its state dir), so two gateways on one
host with the same uid never touch each other's counters. Sessions counted
by an older version (chains ``in-<role>-<uid>``) are still read, and their
chains removed when they are counted anew or released.

A packet to a listener is delivered locally exactly once (the input hook),
a packet from it leaves exactly once (the output hook), loopback included,
so ``in`` is what clients sent to the listener and ``out`` what it sent
back. The maps make the cost per packet one lookup, whatever the number of
sessions. Counters are byte counts of whole IP packets (headers included).

The table is separate from the nftables backend's ``inet scistream``: that
one forwards, this one only counts, and neither touches the other.
Everything goes through libnftables' JSON interface, through the one
nftables adapter (:mod:`.nft`, which finds Debian's ``python3-nftables`` for
whatever Python runs the module); without it counting is off and reads say why.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading

from . import nft
from .errors import S2DSError
from .names import session_key

HAS_NFTABLES = nft.HAS_NFTABLES
FAMILY = nft.FAMILY
TABLE = nft.COUNT_TABLE
#: In each counted session's run dir: its part of the table, for the boot-time restore.
RESTORE_FILE = "counting.json"
_TABLE_REF = {"family": FAMILY, "table": TABLE}
#: (direction, hook, port field, map) of the two base chains.
DIRECTIONS = (("in", "input", "dport"), ("out", "output", "sport"))
PRIORITY = -150
#: The connection-level counters of each direction, by rule comment kind: (tcp flags mask, value).
FLAG_COUNTERS = {
    "in": (("syn", ["syn", "ack"], "syn"), ("rst", "rst", "rst")),
    "out": (("synack", ["syn", "ack"], ["syn", "ack"]), ("rst", "rst", "rst")),
}


class CountersUnavailable(S2DSError):
    """The kernel counters cannot be read here (no binding, no permission); per session, not fatal."""


ROLES = ("PROD", "CONS")


def instance_id(state_dir):
    """A short name for the gateway kept under ``state_dir`` (its real path): the counters' chains carry it."""
    return hashlib.sha256(os.path.realpath(str(state_dir)).encode("utf-8", "surrogateescape")).hexdigest()[:8]


def session_chain(direction, key):
    """The chain of one session: ``key`` is ``(role, uid, instance)`` (a PROD and a CONS gateway on one host
    may share a uid, and so may two gateways), or an older version's ``(role, uid)``."""
    if len(key) == 2:
        role, uid = key
        return "%s-%s-%s" % (direction, role.lower(), uid)
    role, uid, instance = key
    return "%s-%s-%s-%s" % (direction, role.lower(), instance, session_key(uid))


def chain_key(record, instance=None):
    """The key of a session's chains (:func:`session_chain`); without ``instance`` an older version's."""
    return (record.role, record.uid) if instance is None else (record.role, record.uid, instance)


def port_map(direction):
    return "%s-ports" % direction


def _match(left, right):
    return {"match": {"op": "==", "left": left, "right": right}}


def _port_rule(chain, expr, comment):
    return {"add": {"rule": dict(_TABLE_REF, chain=chain, expr=expr + [{"counter": None}], comment=comment)}}


def base_commands():
    """The table, its two maps and base chains (``add`` leaves existing ones as they are)."""
    commands = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    l4 = _match({"meta": {"key": "l4proto"}}, {"set": ["tcp", "udp"]})
    for direction, hook, field in DIRECTIONS:
        commands.append({"add": {"map": dict(_TABLE_REF, name=port_map(direction), type="inet_service",
                                             map="verdict")}})
        commands.append({"add": {"chain": dict(_TABLE_REF, name=direction, type="filter", hook=hook,
                                               prio=PRIORITY, policy="accept")}})
    return commands, l4


def session_commands(key, ports):
    """Commands that (re)build the two chains of session ``key`` (role, uid) and point its ports at them.

    The caller deletes the session's old map elements first (:func:`drop_elements`).
    """
    commands = []
    for direction, dummy, field in DIRECTIONS:
        chain = session_chain(direction, key)
        commands.append({"add": {"chain": dict(_TABLE_REF, name=chain)}})
        commands.append({"flush": {"chain": dict(_TABLE_REF, name=chain)}})
        for port in ports:
            commands.append(_port_rule(chain, [_match({"payload": {"protocol": "th", "field": field}}, port)],
                                       "bytes %d" % port))
            for kind, mask, value in FLAG_COUNTERS[direction]:
                flags = {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, {"|": mask} if isinstance(mask, list)
                               else mask]}
                commands.append(_port_rule(chain, [
                    _match({"payload": {"protocol": "tcp", "field": field}}, port),
                    _match(flags, {"|": value} if isinstance(value, list) else value)], "%s %d" % (kind, port)))
        commands.append({"add": {"element": dict(_TABLE_REF, name=port_map(direction), elem=[
            [port, {"jump": {"target": chain}}] for port in ports])}})
    return commands


def dispatch_commands(directions=("in", "out")):
    """The base chains' one rule each: look the port up in the map, jump to its session's chain."""
    dummy, l4 = base_commands()
    return [{"add": {"rule": dict(_TABLE_REF, chain=direction, expr=[l4, {"vmap": {
        "key": {"payload": {"protocol": "th", "field": field}}, "data": "@" + port_map(direction)}}])}}
        for direction, dummy2, field in DIRECTIONS if direction in directions]


def _dispatch_rules(listing):
    """The base chains' vmap rules, when missing from ``listing``."""
    present = {entry["rule"]["chain"] for entry in listing.entries if "rule" in entry
               and entry["rule"]["chain"] in ("in", "out")}
    return dispatch_commands([d for d, dummy, dummy2 in DIRECTIONS if d not in present])


def restore_document(record, instance=None):
    """What the boot-time restore (the gateway role's scistream-nft-restore) loads for this session:
    ``{"base": table, maps, base chains and their rules, "session": its chains and map elements}``."""
    base, dummy = base_commands()
    return {"base": base + dispatch_commands(), "session": session_commands(chain_key(record, instance), record.ports)}


class Listing:
    """One read of the counting table: its chains, rules and map elements."""

    def __init__(self, entries):
        self.entries = entries
        self.elements = {}  # (direction, port) -> target chain
        self.counters = {}  # chain -> {(kind, port): (packets, bytes)}
        for entry in entries:
            if "map" in entry:
                direction = entry["map"]["name"].split("-", 1)[0]
                for key, verdict in entry["map"].get("elem", []):
                    target = (verdict.get("jump") or {}).get("target") if isinstance(verdict, dict) else None
                    if isinstance(key, int) and target:
                        self.elements[(direction, key)] = target
            elif "rule" in entry:
                rule = entry["rule"]
                kind, dummy, port = str(rule.get("comment", "")).partition(" ")
                counter = nft.counter_of(rule)
                if counter is not None and port.isdigit():
                    self.counters.setdefault(rule["chain"], {})[(kind, int(port))] = (
                        counter.get("packets", 0), counter.get("bytes", 0))

    def counts(self, key, ports):
        """True when every port of the session is counted by its chains (what :func:`install` sets up)."""
        for direction, dummy, dummy2 in DIRECTIONS:
            chain = session_chain(direction, key)
            kinds = {"bytes"} | {kind for kind, dummy3, dummy4 in FLAG_COUNTERS[direction]}
            if set(self.counters.get(chain, {})) != {(kind, port) for kind in kinds for port in ports}:
                return False
            if any(self.elements.get((direction, port)) != chain for port in ports):
                return False
        return True

    def pointing_at(self, chain):
        """The map elements that jump to ``chain``: [(direction, port)]."""
        return [element for element, target in sorted(self.elements.items()) if target == chain]

    def owned_elements(self, key):
        """The map elements that point at session ``key``'s chains: [(direction, port)]."""
        return [(direction, port) for (direction, port), target in sorted(self.elements.items())
                if target == session_chain(direction, key)]

    def chains_of(self, key):
        names = {entry["chain"]["name"] for entry in self.entries if "chain" in entry}
        return [session_chain(d, key) for d, dummy, dummy2 in DIRECTIONS if session_chain(d, key) in names]

    def listener_counts(self, key, port):
        """``{bytes_in, bytes_out, packets_in, packets_out, connections, resets_in, resets_out}`` of one port."""
        inbound = self.counters.get(session_chain("in", key), {})
        outbound = self.counters.get(session_chain("out", key), {})
        if ("bytes", port) not in inbound or ("bytes", port) not in outbound:
            return None
        return {
            "bytes_in": inbound[("bytes", port)][1], "bytes_out": outbound[("bytes", port)][1],
            "packets_in": inbound[("bytes", port)][0], "packets_out": outbound[("bytes", port)][0],
            "connection_attempts": inbound.get(("syn", port), (0, 0))[0],
            "connections": outbound.get(("synack", port), (0, 0))[0],
            "resets_in": inbound.get(("rst", port), (0, 0))[0],
            "resets_out": outbound.get(("rst", port), (0, 0))[0],
        }


def drop_elements(listing, key, ports=()):
    """Delete the session's map elements, and any left on ``ports`` by a session that is gone."""
    stale = {(direction, port) for (direction, port) in listing.elements if port in ports}
    return [{"delete": {"element": dict(_TABLE_REF, name=port_map(direction), elem=[port])}}
            for direction, port in sorted(set(listing.owned_elements(key)) | stale)]


_CACHE = threading.local()


@contextlib.contextmanager
def one_listing():
    """Within this block every read of the counters uses one listing of the table (one kernel round trip).

    ``Gateway.sessions`` opens it, so listing 200 sessions reads the table once.
    """
    _CACHE.listing = None
    _CACHE.values = {}
    _CACHE.active = True
    try:
        yield
    finally:
        _CACHE.active = False
        _CACHE.listing = None
        _CACHE.values = {}


def per_listing(key, read):
    """``read()``, once per :func:`one_listing` block (every call outside one)."""
    if not getattr(_CACHE, "active", False):
        return read()
    if key not in _CACHE.values:
        _CACHE.values[key] = read()
    return _CACHE.values[key]


class SessionCounter:
    """Sets up and removes the counting of one gateway's sessions, and reads their counters.

    ``instance`` (:func:`instance_id` of the state dir) is in the name of every
    chain it makes; None makes an older version's names. ``available`` is
    False (with ``reason``) where the counters cannot be kept: no libnftables
    binding for this Python, or not root. The Gateway then leaves counting
    alone and every read raises CountersUnavailable.
    """

    def __init__(self, instance=None, context=None):
        self.instance = instance
        self.reason = None
        if not HAS_NFTABLES:
            self.reason = "the kernel counters need " + nft.MISSING_BINDING
        elif os.geteuid() != 0:
            self.reason = "the kernel counters need root (CAP_NET_ADMIN)"
        self.nft = None
        if self.reason is None:
            self.nft = context or nft.Nft()

    @property
    def available(self):
        return self.reason is None

    def _require(self, uid):
        if not self.available:
            raise CountersUnavailable("counters of session %s: %s" % (uid, self.reason), field="uid", value=uid)

    def _run(self, commands, what, uid):
        rc, dummy, error = self.nft.run(commands)
        if rc != 0:
            raise CountersUnavailable("counters of session %s: %s failed: %s" % (uid, what, error.strip()[-1000:]),
                                      field="uid", value=uid)

    def listing(self):
        """The counting table as it is now (cached inside :func:`one_listing`)."""
        if getattr(_CACHE, "active", False) and _CACHE.listing is not None:
            return _CACHE.listing
        listing = Listing(self.nft.list_table(TABLE, FAMILY))
        if getattr(_CACHE, "active", False):
            _CACHE.listing = listing
        return listing

    def _key_in_use(self, listing, record):
        """This gateway's key of the session, or an older version's where only that one counts its ports."""
        key, legacy = chain_key(record, self.instance), chain_key(record)
        if self.instance is not None and not listing.chains_of(key) and listing.chains_of(legacy) \
                and any(listing.elements.get(("in", port)) == session_chain("in", legacy) for port in record.ports):
            return legacy
        return key

    @staticmethod
    def _drop_legacy(listing, legacy, dropped):
        """Remove an older version's chains of the session when nothing but ``dropped`` elements jumps to them."""
        commands = []
        for chain in listing.chains_of(legacy):
            if set(listing.pointing_at(chain)) <= set(dropped):
                ref = dict(_TABLE_REF, name=chain)
                commands += [{"flush": {"chain": ref}}, {"delete": {"chain": ref}}]
        return commands

    def counts(self, record):
        """True when the session's listener ports are counted as they are now (by this gateway's chains)."""
        return self.available and self.listing().counts(chain_key(record, self.instance), record.ports)

    def install(self, record):
        """Count the session's ports, in one transaction; counters start at zero."""
        self._require(record.uid)
        listing = self.listing()
        commands, dummy = base_commands()
        key = chain_key(record, self.instance)
        drops = drop_elements(listing, key, record.ports)
        commands = commands + _dispatch_rules(listing) + drops
        if self.instance is not None:
            dropped = [(d["delete"]["element"]["name"].split("-", 1)[0], d["delete"]["element"]["elem"][0]) for d in drops]
            commands += self._drop_legacy(listing, chain_key(record), dropped)
        self._run(commands + session_commands(key, record.ports), "counting the listeners", record.uid)

    def remove(self, uid, role=None, ports=()):
        """Stop counting session ``uid`` (of ``role``; both roles for a broken record, whose role is
        unknown): its map elements and chains go; nothing else is touched. An older version's chains of
        the session go too, with their elements on ``ports`` (the session's)."""
        if not self.available:
            return
        listing = self.listing()
        commands = []
        for each in [role] if role else ROLES:
            keys = [(each, uid)] if self.instance is None else [(each, uid, self.instance)]
            for key in keys:
                commands += drop_elements(listing, key)
                for chain in listing.chains_of(key):
                    ref = dict(_TABLE_REF, name=chain)
                    commands += [{"flush": {"chain": ref}}, {"delete": {"chain": ref}}]
            if self.instance is not None:
                legacy = (each, uid)
                ours = [(d, p) for d, p in listing.owned_elements(legacy) if p in ports]
                commands += [{"delete": {"element": dict(_TABLE_REF, name=port_map(d), elem=[p])}} for d, p in ours]
                commands += self._drop_legacy(listing, legacy, ours)
        if commands:
            self._run(commands, "removing the counters", uid)

    def read(self, record):
        """Per listener, in order: the kernel's counts, or CountersUnavailable when the session is not counted."""
        self._require(record.uid)
        listing = self.listing()
        key = self._key_in_use(listing, record)
        result = []
        for port, listener in zip(record.ports, record.listeners):
            counts = listing.listener_counts(key, port)
            if counts is None:
                raise CountersUnavailable("counters of session %s: port %d is not counted (the next present run "
                                          "sets it up)" % (record.uid, port), field="uid", value=record.uid)
            result.append(dict(listener=listener, port=port, **counts))
        return result


_SHARED = {}


def shared_counter(state_dir=None):
    """The SessionCounter of the gateway under ``state_dir`` (None: an older version's chain names); all of a
    process's counters share one libnftables context."""
    instance = None if state_dir is None else instance_id(state_dir)
    if instance not in _SHARED:
        first = next(iter(_SHARED.values()), None)
        _SHARED[instance] = SessionCounter(instance, context=first.nft if first is not None else None)
    return _SHARED[instance]
