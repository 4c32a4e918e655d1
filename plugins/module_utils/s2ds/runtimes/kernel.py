# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The kernel data path: backend ``nftables`` as rules in the host's netfilter.

Every call to the kernel goes through libnftables' JSON interface, through
the one nftables adapter (:mod:`..nft`: the binding, Debian ``python3-nftables``,
found for whatever Python runs the module). Nothing parses ``nft`` text.

* The session's ruleset (:mod:`..templates.nftables`) is the file
  ``nftables.json`` in its run dir. It is checked by a dry run before it is
  written, applied as ONE transaction that also drops the session's old jump
  rules (so it replaces them atomically), and can be loaded as it is at boot
  with ``nft -j -f`` (the gateway role installs a unit that does).
* Right after applying, the session's part of the kernel's ruleset is read
  back, without handles and counter values, and kept as
  ``nftables.applied.json``. The session "runs" while the kernel still holds
  exactly that: rules lost to ``nft flush ruleset`` or a reboot, or changed
  by hand, make the next ``present`` run apply them again.
* Release deletes the session's jump rules and chains, nothing else.
"""

from __future__ import annotations

import json
import os

from .. import nft
from ..errors import S2DSError
from ..store import read_text, write_file_atomic
from ..templates import nftables as rules
from .base import Runtime

HAS_NFTABLES = nft.HAS_NFTABLES
APPLIED_FILE = "nftables.applied.json"


class KernelRuntime(Runtime):
    """Sessions of backend nftables: NAT rules, no process.

    ``local_network`` is False: nothing listens on the listener ports, so
    the gateway does not look for sockets; :meth:`is_running` compares the
    rules in the kernel instead.
    """

    name = "kernel"
    local_network = False
    #: The kernel forwards the stream itself: it leaves from this host.
    egress_here = True

    def __init__(self):
        if not HAS_NFTABLES:
            raise S2DSError("runtime kernel needs %s (Debian: apt install python3-nftables)" % nft.MISSING_BINDING,
                            field="runtime", value="kernel")
        self.nft = nft.Nft()

    # -- libnftables ---------------------------------------------------------
    def _run(self, commands, what, uid=None, dry_run=False):
        rc, output, error = self.nft.run(commands, dry_run=dry_run)
        if rc != 0:
            hint = " (managing nftables needs root or CAP_NET_ADMIN)" if "not permitted" in error else ""
            raise S2DSError("nftables: %s failed: %s%s" % (what, error.strip()[-2000:], hint),
                            field="uid" if uid else "backend", value=uid or "nftables")
        return output

    def _table(self):
        """The entries of the collection's table (chains and rules), or [] when it does not exist."""
        return self.nft.list_table(rules.TABLE, rules.FAMILY)

    @staticmethod
    def _owned(entries, uid):
        """The session's chains and its rules (in its chains, and its jump rules in the base chains)."""
        chains = {rules.session_chain(prefix, uid) for prefix in rules.SESSION_PREFIXES}
        own_chains = [e["chain"] for e in entries if "chain" in e and e["chain"]["name"] in chains]
        own_rules = [e["rule"] for e in entries if "rule" in e
                     and (e["rule"]["chain"] in chains or e["rule"].get("comment") == rules.session_comment(uid))]
        return own_chains, own_rules

    def _view(self, entries, uid):
        """The session's part of the ruleset without handles and counter values, for comparison."""
        bases = {name for name, dummy, dummy2, dummy3 in rules.BASE_CHAINS}
        view = [_without(e["chain"], "handle") for e in entries if "chain" in e and e["chain"]["name"] in bases]
        own_chains, own_rules = self._owned(entries, uid)
        view += [_without(c, "handle") for c in own_chains]
        view += [dict(_without(r, "handle"), expr=[_zero_counter(x) for x in r.get("expr", [])]) for r in own_rules]
        return view

    # -- Runtime interface ---------------------------------------------------
    def paths(self, store, record):
        run_dir = store.run_dir(record.uid)
        return {"run_dir": run_dir, "pid_file": None, "log_file": None, "psk_file": None, "foreground": False}

    def check_config(self, backend, store, record, config_name):
        text = store.read_run_file(record.uid, config_name)
        self._run(json.loads(text), "checking the ruleset of session %s" % record.uid, record.uid, dry_run=True)

    def is_running(self, backend, store, record):
        applied = read_text(os.path.join(store.run_dir(record.uid), APPLIED_FILE))
        if not applied:
            return False
        view = self._view(self._table(), record.uid)
        return bool(view) and json.loads(applied) == json.loads(json.dumps(view))

    def start(self, backend, store, record):
        """Put the session's rules in place in one transaction, replacing whatever it had."""
        text = store.read_run_file(record.uid, backend.config_name)
        commands = nft.without_metainfo(json.loads(text)["nftables"])
        dummy, own_rules = self._owned(self._table(), record.uid)
        drops = [{"delete": {"rule": _rule_ref(r)}} for r in own_rules if r.get("comment") == rules.session_comment(record.uid)]
        self._run({"nftables": drops + commands}, "applying the rules of session %s" % record.uid, record.uid)
        view = self._view(self._table(), record.uid)
        write_file_atomic(os.path.join(store.run_dir(record.uid), APPLIED_FILE), json.dumps(view, indent=1) + "\n",
                          mode=0o644)

    def reload(self, backend, store, record):
        self.start(backend, store, record)

    def restart(self, backend, store, record):
        self.start(backend, store, record)

    def stop(self, backend, store, record):
        """Delete the session's jump rules and chains in one transaction; nothing else is touched."""
        self.release_orphan(store, record.uid)
        store.remove_run_file(record.uid, APPLIED_FILE)

    def warnings_for(self, record):
        """A forward hook that drops by default (Docker's ``ip filter FORWARD``) drops this session's stream too:
        nftables gives each base chain its say, and an accept in this collection's table overrides none of them."""
        versions = sorted({6 if target.startswith("[") else 4 for target in record.targets})
        if not versions:
            return []
        chains = self.nft.list_chains()
        found = sorted({name for version in versions for name in nft.dropping_forward_chains(chains, version)})
        return ["session %s: the base chain '%s' drops forwarded packets that no rule of its accepts (policy drop; "
                "Docker sets it on ip filter FORWARD), and this session's stream is forwarded: add a rule there that "
                "accepts it, such as, for Docker, 'iptables -I DOCKER-USER -m conntrack --ctstate DNAT "
                "--ctorigdstport PORT -j ACCEPT' for each listener port (README: Kernel data path)" % (record.uid, name)
                for name in found]

    def release_orphan(self, store, uid):
        """A session whose record is broken: its chains and jump rules are found by uid alone."""
        own_chains, own_rules = self._owned(self._table(), uid)
        if not own_chains and not own_rules:
            return []
        commands = [{"delete": {"rule": _rule_ref(r)}} for r in own_rules if r.get("comment") == rules.session_comment(uid)]
        for chain in own_chains:
            ref = {"family": chain["family"], "table": chain["table"], "name": chain["name"]}
            commands += [{"flush": {"chain": ref}}, {"delete": {"chain": ref}}]
        self._run({"nftables": commands}, "removing the rules of session %s" % uid, uid)
        return ["the nftables rules of session %s" % uid]

    def traffic(self, backend, store, record, counter=None):
        """Per listener, from the session's counters: bytes and packets in (client to listener, the
        connections' original direction) and out (their replies), TCP and UDP, and the totals."""
        counts = {port: {"listener": listener, "port": port, "bytes": 0, "packets": 0, "bytes_in": 0,
                         "bytes_out": 0, "packets_in": 0, "packets_out": 0}
                  for port, listener in zip(record.ports, record.listeners)}
        count_chain = rules.session_chain("count", record.uid)
        for entry in self._table():
            rule = entry.get("rule")
            if not rule or rule["chain"] != count_chain:
                continue
            port = _ct_original_port(rule["expr"])
            counter = nft.counter_of(rule)
            if port in counts and counter:
                side = "out" if _ct_direction(rule["expr"]) == "reply" else "in"
                for unit in ("bytes", "packets"):
                    counts[port][unit] += counter.get(unit, 0)
                    counts[port]["%s_%s" % (unit, side)] += counter.get(unit, 0)
        return [counts[port] for port in record.ports]


def _without(data, key):
    return {k: v for k, v in data.items() if k != key}


def _zero_counter(expr):
    return {"counter": None} if isinstance(expr, dict) and "counter" in expr else expr


def _rule_ref(rule):
    return {"family": rule["family"], "table": rule["table"], "chain": rule["chain"], "handle": rule["handle"]}


def _ct_match(expr, key):
    """What a rule matches conntrack's ``key`` against (``ct <key> == value``), or None."""
    for item in expr:
        match = item.get("match") if isinstance(item, dict) else None
        left = (match or {}).get("left", {})
        if isinstance(left, dict) and left.get("ct", {}).get("key") == key:
            return match["right"]
    return None


def _ct_original_port(expr):
    return _ct_match(expr, "proto-dst")


def _ct_direction(expr):
    return _ct_match(expr, "direction")
