# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The control server's connection caps in the kernel: nftables ``ct count`` per client address and in all.

grpcio caps the connections a server holds in all
(``grpc.max_allowed_incoming_connections``) but has no cap per address, and
it applies its cap after ``accept``: one address could hold every connection
the server takes. So the server, which runs as root with ``CAP_NET_ADMIN``
already (it counts its sessions' listeners in nftables), puts a chain of its
own in table ``inet scistream-guard`` before it listens:

* a new TCP connection to its port from an IPv4 address that holds
  ``per_peer`` of them already, or from an IPv6 /64 that does, is reset;
* so is one beyond ``total`` in all.

The kernel counts connections (conntrack), so a refused one never reaches
grpcio and costs the server nothing; a connection that ends frees its place.
The chain and its two sets are named by the server's state dir (one running
server per state dir, so two servers never touch each other's caps), and the
server removes them when it stops; a killed server's are replaced by the next
start with that state dir. Everything goes through the one nftables adapter
(:mod:`..s2ds.nft`), as JSON, in one transaction.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading

from ..s2ds import nft

__all__ = ["GUARD_TABLE", "ConnectionGuard", "GuardError"]

#: The control servers' table: one chain and two sets per server.
GUARD_TABLE = "scistream-guard"
#: Addresses (or /64s) one server's sets track at once; a new address beyond that is not capped per address
#: (the total cap still holds).
SET_SIZE = 65535
#: Above the proxies' counting chains (priority filter, 0): a refused connection is never counted as a stream's.
PRIORITY = -5
IPV6_PREFIX = "ffff:ffff:ffff:ffff::"


class GuardError(Exception):
    """The caps could not be put in place (no binding, no CAP_NET_ADMIN, a kernel without connlimit)."""


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol, field):
    return {"payload": {"protocol": protocol, "field": field}}


class ConnectionGuard:
    """The caps of one control server: ``port`` on ``address`` (any when it is a wildcard), keyed by ``state_dir``."""

    def __init__(self, state_dir, port, per_peer, total, address="0.0.0.0", context=None):
        self.port = int(port)
        self.per_peer = int(per_peer)
        self.total = int(total)
        try:
            self.address = None if address in (None, "", "0.0.0.0", "::") else ipaddress.ip_address(address)
        except ValueError:  # a host name: its port on every address
            self.address = None
        key = hashlib.sha256(str(state_dir).encode("utf-8", "surrogateescape")).hexdigest()[:12]
        self.chain = "s2cs-%s" % key
        self.sets = {"ip": "s2cs-%s-v4" % key, "ip6": "s2cs-%s-v6" % key}
        #: The address families capped per address: both on a wildcard address, else the address's own.
        self.protocols = ("ip", "ip6") if self.address is None else ("ip" if self.address.version == 4 else "ip6",)
        self._context = context
        self._nft = None
        #: One libnftables context, used by the server's thread and the metrics thread (refused): one at a time.
        self._lock = threading.Lock()

    # -- the commands ----------------------------------------------------------------------------------------------

    def _object(self, kind, name, **fields):
        return {kind: dict(nft.table_ref(GUARD_TABLE), name=name, **fields)}

    def _head(self):
        """The matches every rule starts with: this server's port (and address), a new connection."""
        head = [_match(_payload("tcp", "dport"), self.port)]
        if self.address is not None:  # one protocol: the address's own
            head.append(_match(_payload(self.protocols[0], "daddr"), str(self.address)))
        return head + [_match({"ct": {"key": "state"}}, "new", op="in")]

    def _rule(self, exprs):
        return {"rule": dict(nft.table_ref(GUARD_TABLE), chain=self.chain,
                             expr=self._head() + exprs + [{"counter": None}, {"reject": {"type": "tcp reset"}}])}

    def _per_peer(self, protocol):
        elem = _payload(protocol, "saddr")
        if protocol == "ip6":
            elem = {"&": [elem, IPV6_PREFIX]}
        return self._rule([{"set": {"op": "add", "elem": elem, "set": "@" + self.sets[protocol],
                                    "stmt": [{"ct count": {"val": self.per_peer, "inv": True}}]}}])

    def removal(self, present):
        """Commands that remove this server's chain and sets, of those in ``present`` (names in the table).

        (libnftables 1.0.6 has no ``destroy``, and the kernel adds flags to a set that an ``add`` then ``delete``
        would have to repeat: so what is there is listed first. Only the server holding the state dir writes them.)
        """
        commands = [{"delete": self._object("chain", self.chain)}] if self.chain in present else []
        return commands + [{"delete": self._object("set", name)} for name in sorted(self.sets.values())
                           if name in present]

    def commands(self, present=()):
        """The whole guard, replacing what a server with this state dir left (``present``): one transaction."""
        commands = [{"add": {"table": {"family": nft.FAMILY, "name": GUARD_TABLE}}}] + self.removal(present)
        for protocol in self.protocols:
            commands.append({"add": self._object("set", self.sets[protocol],
                                                 type="ipv4_addr" if protocol == "ip" else "ipv6_addr", size=SET_SIZE)})
        commands.append({"add": self._object("chain", self.chain, type="filter", hook="input", prio=PRIORITY,
                                             policy="accept")})
        commands += [{"add": self._per_peer(protocol)} for protocol in self.protocols]
        commands.append({"add": self._rule([{"ct count": {"val": self.total, "inv": True}}])})
        return commands

    # -- in the kernel ---------------------------------------------------------------------------------------------

    def _connect(self):
        if self._nft is None:
            if self._context is None and not nft.HAS_NFTABLES:
                raise GuardError("no nftables: %s" % nft.MISSING_BINDING)
            self._nft = nft.Nft(self._context)
        return self._nft

    def _present(self):
        """Names of the objects in the guard table (none when it does not exist)."""
        return {next(iter(entry.values())).get("name") for entry in self._connect().list_table(GUARD_TABLE)
                if "chain" in entry or "set" in entry}

    def _run(self, commands):
        if not commands:
            return
        rc, dummy, error = self._connect().run(commands)
        if rc != 0:
            raise GuardError(" ".join(error.split())[:300] or "libnftables failed (rc %d)" % rc)

    def install(self):
        """Put the caps in place (replacing a killed predecessor's); GuardError says why not."""
        with self._lock:
            self._run(self.commands(self._present()))

    def remove(self):
        """Take this server's chain and sets away (the table stays for the others); quiet when they are gone."""
        with self._lock:
            try:
                self._run(self.removal(self._present()))
            except GuardError:
                pass

    def refused(self):
        """``{"per_peer": n, "total": n}``: connections refused so far (each rule's counter), or {} when unknown."""
        if self._nft is None:
            return {}
        with self._lock:
            listing = self._nft.list_table(GUARD_TABLE)
        rules = [entry["rule"] for entry in listing if "rule" in entry and entry["rule"].get("chain") == self.chain]
        counts = {"per_peer": 0, "total": 0}
        for rule in rules:
            counter = nft.counter_of(rule) or {}
            per_peer = any("set" in expr for expr in rule.get("expr", []) if isinstance(expr, dict))
            counts["per_peer" if per_peer else "total"] += int(counter.get("packets", 0))
        return counts
