# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The kernel data path: one session's nftables ruleset, in libnftables' JSON schema.

What the proxy templates are to HAProxy or NGINX, this is to the kernel: the
whole "config" of a session of backend ``nftables``. It is built as data, not
rendered text, and is handed to libnftables as one atomic transaction.

Everything lives in the table ``inet scistream`` (IPv4 and IPv6), shared by
every session of the host. Its base chains are shared too and hold only one
jump rule per session, tagged with the session's key (``session_key(uid)``: the uid itself for a UUID) as comment::

    prerouting   nat    hook prerouting  -100   -> dnat-<uid>   (traffic from elsewhere)
    output       nat    hook output      -100   -> dnat-<uid>   (locally originated)
    postrouting  nat    hook postrouting  100   -> snat-<uid>   (not to lo; replies come back here)
    count-in     filter hook prerouting     0   -> count-<uid>  (not from lo)
    count-out    filter hook output         0   -> count-<uid>

Per listener ``i``: DNAT of ``listener_ip:port`` (TCP and UDP) to
``targets[i mod n]``, masquerade toward the target, and two counters (the connection's original
and reply direction) that see every packet of the listener's connections
exactly once.
NAT chains see only the first packet of a connection; the counting chains see
all of them.
"""

from __future__ import annotations

import ipaddress

from ..names import session_key
from ..nft import FAMILY, FORWARD_TABLE as TABLE
#: (name, type, hook, priority) of the shared base chains.
BASE_CHAINS = (
    ("prerouting", "nat", "prerouting", -100),
    ("output", "nat", "output", -100),
    ("postrouting", "nat", "postrouting", 100),
    ("count-in", "filter", "prerouting", 0),
    ("count-out", "filter", "output", 0),
)
#: The session chain each base chain jumps to, by prefix.
JUMPS = (("prerouting", "dnat"), ("output", "dnat"), ("postrouting", "snat"), ("count-in", "count"),
         ("count-out", "count"))
SESSION_PREFIXES = ("dnat", "snat", "count")
ANY_ADDRESS = ("0.0.0.0", "::")


def session_chain(prefix, uid):
    """The session's own chain: ``<prefix>-<session_key(uid)>``."""
    return "%s-%s" % (prefix, session_key(uid))


def session_comment(uid):
    """The comment that tags the session's jump rules in the shared base chains."""
    return session_key(uid)


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def _ct(key):
    return {"ct": {"key": key, "dir": "original"}}


def _rule(chain, expr, comment=None):
    rule = {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr}
    if comment:
        rule["comment"] = comment
    return {"add": {"rule": rule}}


def _chain(name, kind=None, hook=None, prio=None):
    chain = {"family": FAMILY, "table": TABLE, "name": name}
    if kind:
        chain.update(type=kind, hook=hook, prio=prio, policy="accept")
    return chain


def listener_plan(record):
    """[(port, target_ip, target_port, nfproto)] for the session's listeners, in order."""
    plan = []
    for i, port in enumerate(record.ports):
        host, dummy, target_port = record.targets[i % len(record.targets)].rpartition(":")
        address = ipaddress.ip_address(host.strip("[]"))
        plan.append((port, str(address), int(target_port), "ipv%d" % address.version))
    return plan


def ruleset(record):
    """The commands that put ``record``'s rules in place (idempotent: they replace the session's chains).

    Loaded as they are at boot (``nft -j -f``); at run time the runtime first
    deletes the session's jump rules in the same transaction.
    """
    uid = record.uid
    commands = [{"metainfo": {"json_schema_version": 1}},
                {"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    for name, kind, hook, prio in BASE_CHAINS:
        commands.append({"add": {"chain": _chain(name, kind, hook, prio)}})
    for prefix in SESSION_PREFIXES:
        commands.append({"add": {"chain": _chain(session_chain(prefix, uid))}})
        commands.append({"flush": {"chain": _chain(session_chain(prefix, uid))}})
    specific = record.listener_ip not in ANY_ADDRESS
    l4 = _match({"meta": {"key": "l4proto"}}, {"set": ["tcp", "udp"]})
    for port, target_ip, target_port, nfproto in listener_plan(record):
        ip = "ip" if nfproto == "ipv4" else "ip6"
        if specific:
            to_me = _match({"payload": {"protocol": ip, "field": "daddr"}}, record.listener_ip)
        else:
            to_me = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
        commands.append(_rule(session_chain("dnat", uid), [
            _match({"meta": {"key": "nfproto"}}, nfproto), to_me, l4,
            _match({"payload": {"protocol": "th", "field": "dport"}}, port),
            {"dnat": {"family": ip, "addr": target_ip, "port": target_port}},
        ]))
        for proto in ("tcp", "udp"):
            # One rule per protocol: the protocol gives ct proto-dst its type (a port).
            this = [_match({"meta": {"key": "nfproto"}}, nfproto), _match({"meta": {"key": "l4proto"}}, proto),
                    _match(_ct("proto-dst"), port)]
            commands.append(_rule(session_chain("snat", uid), this + [
                _match({"payload": {"protocol": ip, "field": "daddr"}}, target_ip),
                _match({"payload": {"protocol": "th", "field": "dport"}}, target_port),
                {"masquerade": None},
            ]))
            for direction in ("original", "reply"):
                # Original: what the client sent to the listener ("in"); reply: what went back ("out").
                commands.append(_rule(session_chain("count", uid), this + [
                    _match({"ct": {"key": "status"}}, "dnat", op="in"),
                    _match({"ct": {"key": "direction"}}, direction),
                    {"counter": None},
                ]))
    for base, prefix in JUMPS:
        expr = []
        if base == "count-in":
            # Looped-back packets were counted on their way out already.
            expr.append(_match({"meta": {"key": "iifname"}}, "lo", op="!="))
        elif base == "postrouting":
            # Connections within the host need no source NAT (and masquerade on lo would drop them).
            expr.append(_match({"meta": {"key": "oifname"}}, "lo", op="!="))
        expr.append({"jump": {"target": session_chain(prefix, uid)}})
        commands.append(_rule(base, expr, comment=session_comment(uid)))
    return {"nftables": commands}
