# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where a gateway may forward: the target policy (the gateway is no open proxy).

A target passes when an allow rule (``allowed_targets``, session.py's
``parse_target_rule``) matches its address and port. With no rules given the
rules are ``0.0.0.0/0`` and ``::/0``, every port, but whatever the rules,

* an address of a special class -- loopback, unspecified (``0.0.0.0/8``, ``::``),
  link-local, multicast, reserved and broadcast (``240.0.0.0/4``), local NAT64
  (``64:ff9b:1::/48``), and each of the gateway's own addresses -- passes only
  a rule that lies inside that class (``127.0.0.0/8`` or ``127.0.0.1/32`` opens
  loopback; ``0.0.0.0/0`` does not; an own address needs its ``/32`` or ``/128``);
* an IPv4-mapped or IPv4-compatible IPv6 address is checked as the IPv4 address it
  carries (a dual-stack socket connects there); a NAT64 (``64:ff9b::/96``), 6to4
  (``2002::/16``) or Teredo (``2001::/32``) address is checked as itself AND as the
  IPv4 addresses it carries;
* the gateway's protected ports (its control server, metrics and exporter ports) on a
  loopback, unspecified or own address are refused, whatever a rule says.

A host name is resolved once, here, within a bounded time; every address it
has must pass, and the session's target becomes the (first, in a stable
order) address, so the proxy never looks the name up again.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
import time

from .errors import TargetRefused, invalid
from .session import Target, TargetRule, parse_port, parse_target_rules

#: What applies when no rule is given: every address and port, less the special classes.
DEFAULT_RULES = (TargetRule(ipaddress.ip_network("0.0.0.0/0")), TargetRule(ipaddress.ip_network("::/0")))
#: Rules that open loopback as well as the default's addresses: what the demo and the tests on one host allow.
WITH_LOOPBACK = ("127.0.0.0/8", "::1/128", "0.0.0.0/0", "::/0")
#: Ports protected on local addresses when nobody says otherwise: the S2CS's and the exporter's defaults.
DEFAULT_PROTECTED_PORTS = ((5000, 5000), (9787, 9787))
#: Seconds a host name may take to resolve.
RESOLVE_TIMEOUT = 5.0

# (class name, networks): an address in one passes only a rule inside that network.
SPECIAL_CLASSES = (
    ("loopback", ("127.0.0.0/8", "::1/128")),
    ("unspecified", ("0.0.0.0/8", "::/128")),
    ("link-local", ("169.254.0.0/16", "fe80::/10")),
    ("multicast", ("224.0.0.0/4", "ff00::/8")),
    ("reserved or broadcast", ("240.0.0.0/4",)),
    ("local NAT64", ("64:ff9b:1::/48",)),
)
_CLASSES = tuple((name, tuple(ipaddress.ip_network(n) for n in nets)) for name, nets in SPECIAL_CLASSES)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPAT = ipaddress.ip_network("::/96")
_LOCAL_CLASSES = ("loopback", "unspecified")


def _carried(address):
    """(checked as itself?, [IPv4 addresses it carries]) for an IPv6 address of a transition form."""
    if address.version != 6:
        return True, []
    if address.ipv4_mapped is not None:
        return False, [address.ipv4_mapped]
    if address in _COMPAT and int(address) > 1:
        return False, [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address in _NAT64:
        return True, [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return True, [address.sixtofour]
    if address.teredo is not None:
        return True, list(address.teredo)
    return True, []


def checked_forms(address):
    """Every address ``address`` must be checked as (itself and / or the IPv4 it carries)."""
    itself, carried = _carried(address)
    return ([address] if itself else []) + carried


def own_addresses():
    """The addresses of this host's interfaces (psutil, else ``ip -j addr``, else the host name's)."""
    found = set()
    try:
        import psutil  # pylint: disable=import-outside-toplevel
        for entries in psutil.net_if_addrs().values():
            for entry in entries:
                if entry.family in (socket.AF_INET, socket.AF_INET6):
                    found.add(entry.address.split("%", 1)[0])
    except ImportError:
        try:
            out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, timeout=5, check=True).stdout
            for link in json.loads(out.decode("utf-8")):
                for entry in link.get("addr_info", ()):
                    if entry.get("family") in ("inet", "inet6") and isinstance(entry.get("local"), str):
                        found.add(entry["local"])
        except (OSError, ValueError, subprocess.SubprocessError, AttributeError, TypeError):
            try:
                found.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
            except OSError:
                pass
    addresses = set()
    for text in found:
        try:
            addresses.add(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            continue
    return frozenset(addresses)


def resolve(host, timeout=RESOLVE_TIMEOUT):
    """The addresses of ``host`` (getaddrinfo, in a thread of its own, at most ``timeout`` seconds)."""
    result = {}

    def lookup():
        try:
            result["infos"] = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            result["error"] = exc

    worker = threading.Thread(target=lookup, name="scistream-resolve", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError("no answer within %gs" % timeout)
    if "error" in result:
        raise result["error"]
    addresses = []
    for info in result["infos"]:
        try:
            address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        except ValueError:
            continue
        if address not in addresses:
            addresses.append(address)
    return addresses


def parse_protected_ports(values, field="protected_ports"):
    """Ports (``5000``) and ranges (``9000-9010``), a list or a comma-separated text, as (low, high) pairs."""
    if values is None:
        return DEFAULT_PROTECTED_PORTS
    if isinstance(values, str):
        values = [v for v in values.split(",") if v]
    pairs = []
    for value in values:
        if isinstance(value, (tuple, list)) and len(value) == 2:
            pairs.append((parse_port(field, value[0]), parse_port(field, value[1])))
        elif isinstance(value, str) and "-" in value:
            low, dummy, high = value.partition("-")
            pair = (parse_port(field, low, whole=value), parse_port(field, high, whole=value))
            if pair[0] > pair[1]:
                raise invalid(field, value, "start is greater than end")
            pairs.append(pair)
        else:
            port = parse_port(field, value)
            pairs.append((port, port))
    return tuple(pairs)


class TargetPolicy:
    """Which targets a gateway's sessions may forward to (see the module's docstring).

    ``allow`` are rules (TargetRule, or their text): None or empty is the default
    (everything less the special classes). ``prod_allow`` and ``cons_allow``, when given, replace
    ``allow`` for the sessions of that role. ``protected_ports`` are (low, high) pairs or their text.
    ``addresses`` are this gateway's own addresses (default: its interfaces', read when first needed and
    again after ``refresh`` seconds); ``resolver(host)`` gives a name's addresses (None: names are refused).
    """

    def __init__(self, allow=None, prod_allow=None, cons_allow=None, protected_ports=None, addresses=None,
                 resolver=resolve, refresh=60.0, field="allowed_targets"):
        self.field = field
        self.allow = parse_target_rules(allow, field) or None
        dashes = "--" if field.startswith("--") else ""
        self.role_fields = {role: "%sallowed_%s_targets" % (dashes, role.lower()) for role in ("PROD", "CONS")}
        self.by_role = {"PROD": parse_target_rules(prod_allow, self.role_fields["PROD"]) or None,
                        "CONS": parse_target_rules(cons_allow, self.role_fields["CONS"]) or None}
        self.protected = parse_protected_ports(protected_ports)
        self._addresses = frozenset(ipaddress.ip_address(a) for a in addresses) if addresses is not None else None
        self._read_at = None
        self.refresh = refresh
        self.resolver = resolver

    def rules_for(self, role=None):
        """(rules, their option name) for a session of ``role``."""
        if role in self.by_role and self.by_role[role] is not None:
            return self.by_role[role], self.role_fields[role]
        return (self.allow, self.field) if self.allow is not None else (DEFAULT_RULES, "%s (default)" % self.field)

    def describe(self):
        """One line for a log: the rules of each role and the protected ports."""
        parts = []
        for role in ("PROD", "CONS"):
            rules, option = self.rules_for(role)
            parts.append("%s targets %s (%s)" % (role, _listed(rules), option))
        ports = ", ".join("%d" % low if low == high else "%d-%d" % (low, high) for low, high in self.protected)
        return "%s; special addresses only by a rule inside their class; protected ports %s" % ("; ".join(parts), ports)

    def own(self):
        if self._addresses is not None and self._read_at is None:
            return self._addresses
        now = time.monotonic()
        if self._addresses is None or now - self._read_at > self.refresh:
            self._addresses, self._read_at = own_addresses(), now
        return self._addresses

    def add_protected(self, *ports):
        """Protect more ports (a control server adds its own)."""
        self.protected = tuple(self.protected) + tuple((int(p), int(p)) for p in ports if p)

    def _class_of(self, address):
        """(class name, its networks) or None; an own address of a special class is of that class."""
        for name, networks in _CLASSES:
            if any(address.version == n.version and address in n for n in networks):
                return name, networks
        if address in self.own():
            return "the gateway's own address", (ipaddress.ip_network(address),)
        return None

    def _is_local(self, address, klass):
        return (klass is not None and klass[0] in _LOCAL_CLASSES) or address in self.own()

    def check_address(self, address, port, role=None):
        """The rule that allows ``address`` port ``port``, or a reason (text) why none does."""
        rules, option = self.rules_for(role)
        allowed_by = None
        for form in checked_forms(address):
            klass = self._class_of(form)
            shown = str(form) if form == address else "%s (which %s carries)" % (form, address)
            if self._is_local(form, klass) and any(low <= port <= high for low, high in self.protected):
                return None, "%s port %d is a protected port of this gateway (its control server, metrics or " \
                             "exporter), refused whatever %s says" % (shown, port, option)
            matching = [r for r in rules if r.allows(form, port)]
            if klass is not None:
                matching = [r for r in matching if any(r.network.version == n.version and r.network.subnet_of(n)
                                                       for n in klass[1])]
                if not matching:
                    return None, "%s is %s, which only a rule inside %s opens (%s: %s)" % (
                        shown, klass[0], " or ".join(map(str, klass[1])), option, _listed(rules))
            if not matching:
                return None, "%s port %d matches no rule of %s (%s)" % (shown, port, option, _listed(rules))
            allowed_by = allowed_by or matching[0]
        return allowed_by, None

    def check(self, targets, role=None, field="targets"):
        """``targets`` (Targets) with every host name replaced by its checked address, or TargetRefused.

        A name is resolved once; every address it has must pass, and the target keeps the first one
        (IPv4 before IPv6, then in numeric order) so that the config does not change between runs.
        """
        checked = []
        for target in targets:
            try:
                addresses = [ipaddress.ip_address(target.host)]
            except ValueError:
                addresses = self._resolve(target, field)
            for address in addresses:
                dummy, why = self.check_address(address, target.port, role)
                if why:
                    raise TargetRefused("%s %r: refused by the target policy: %s" % (field, str(target), why),
                                        field=field, value=str(target))
            first = sorted(addresses, key=lambda a: (a.version, int(a)))[0]
            checked.append(target if str(first) == target.host else Target(str(first), target.port, name=target.host))
        return tuple(checked)

    def _resolve(self, target, field):
        if self.resolver is None:
            raise TargetRefused("%s %r: refused by the target policy: a host name is not accepted here, only an "
                                "address" % (field, str(target)), field=field, value=str(target))
        try:
            addresses = self.resolver(target.host)
        except (OSError, UnicodeError) as exc:
            raise TargetRefused("%s %r: host %s cannot be resolved: %s" % (
                field, str(target), target.host, getattr(exc, "strerror", None) or exc), field=field,
                value=str(target)) from None
        if not addresses:
            raise TargetRefused("%s %r: host %s has no address" % (field, str(target), target.host), field=field,
                                value=str(target))
        return addresses


def _listed(rules):
    return ", ".join(map(str, rules)) if rules != DEFAULT_RULES else "0.0.0.0/0, ::/0"
