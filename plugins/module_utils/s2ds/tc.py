# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one traffic-control adapter: the HTB root qdisc and classes that shape rated sessions, through pyroute2.

Used by shaping.py and by the gateway role's boot-time restore (which the
role installs with this file beside it), so this module imports nothing but
the standard library and pyroute2 (Debian ``python3-pyroute2``; PyPI
``pyroute2``). Netlink, not ``tc`` output: pyroute2 speaks rtnetlink itself.

The collection's root qdisc is ``htb`` with handle :data:`MAJOR` and no
default class (``default 0``): a packet whose ``skb->priority`` names none of
its leaf classes is sent directly, unshaped (HTB's "direct" queue), so
traffic of sessions without a rate, and of everything else on the device,
is never slowed. A root qdisc that is not ours is never replaced.
"""

from __future__ import annotations

import errno
import importlib.util

# pyroute2 is imported when a device is shaped, not with this module: it costs 150-250 ms of CPU, and every module
# run and daemon of the collection imports this file, mostly for sessions without a rate.
HAS_PYROUTE2 = importlib.util.find_spec("pyroute2") is not None

MISSING_PYROUTE2 = "pyroute2 (Debian: python3-pyroute2; PyPI: pyroute2)"
#: The major number of the collection's HTB root qdisc (``5353:``, "SS"); a class is ``5353:<minor>``.
MAJOR = 0x5353
ROOT_HANDLE = MAJOR << 16
#: The root qdisc's parent (TC_H_ROOT).
TC_H_ROOT = 0xFFFFFFFF
#: HTB's 32-bit rate field is bytes per second.
MAX_BYTES_PER_SECOND = 2 ** 32 - 1


def _netlink_error():
    """pyroute2's NetlinkError (an OSError: what a fake rtnetlink socket raises without pyroute2)."""
    try:
        from pyroute2.netlink.exceptions import NetlinkError  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - depends on the host
        return OSError
    return NetlinkError


class ShapingError(Exception):
    """A device cannot be shaped (not found, a root qdisc of someone else's, a netlink error)."""


def classid(minor):
    return ROOT_HANDLE | minor


def class_text(minor):
    """``5353:<minor hex>``: how tc and nftables write a class id."""
    return "%x:%x" % (MAJOR, minor)


class TrafficControl:
    """One rtnetlink socket (in the calling process's network namespace)."""

    def __init__(self, ipr=None):
        if ipr is None:
            from pyroute2 import IPRoute  # pylint: disable=import-outside-toplevel
            ipr = IPRoute()
        self.ipr = ipr

    def close(self):
        self.ipr.close()

    def index(self, device):
        found = self.ipr.link_lookup(ifname=device)
        if not found:
            raise ShapingError("device %s does not exist" % device)
        return found[0]

    def default_route_devices(self):
        """The devices of the main table's default routes (IPv4 and IPv6), sorted: the host's way out."""
        names = set()
        for family in (2, 10):  # AF_INET, AF_INET6
            try:
                routes = self.ipr.get_routes(family=family, table=254)
            except _netlink_error():
                continue
            for route in routes:
                if route["dst_len"] == 0 and route.get_attr("RTA_OIF"):
                    links = self.ipr.get_links(route.get_attr("RTA_OIF"))
                    if links:
                        names.add(links[0].get_attr("IFLA_IFNAME"))
        return sorted(names)

    def root_qdisc(self, index):
        """``(kind, handle)`` of the device's root qdisc, or None when it has none of its own (the default)."""
        for qdisc in self.ipr.get_qdiscs(index=index):
            if qdisc["parent"] == TC_H_ROOT:
                return qdisc.get_attr("TCA_KIND"), qdisc["handle"]
        return None

    def is_ours(self, index):
        return self.root_qdisc(index) == ("htb", ROOT_HANDLE)

    def ensure_root(self, device):
        """Our HTB root qdisc on ``device``: made when the device has the kernel's default, left alone when it is
        there; a root qdisc of anyone else's is refused (ShapingError), never replaced."""
        index = self.index(device)
        root = self.root_qdisc(index)
        if root == ("htb", ROOT_HANDLE):
            return index
        # The kernel's defaults (no qdisc configured): pfifo_fast, mq (multi-queue NICs), noqueue (veth, lo),
        # fq_codel (systemd's default_qdisc) all have handle 0.
        if root is not None and root[1] != 0:
            raise ShapingError("device %s has a root qdisc %s %x: of someone else's; the collection shapes only a "
                               "device with the kernel's default qdisc or its own htb %x: (remove yours, or name "
                               "another device in rate_devices)" % (device, root[0], root[1] >> 16, MAJOR))
        try:
            self.ipr.tc("add", "htb", index, ROOT_HANDLE, default=0)
        except _netlink_error() as exc:
            raise ShapingError("device %s: adding the htb root qdisc failed: %s" % (device, exc)) from None
        return index

    def classes(self, index):
        """``{minor: bytes per second}`` of our root qdisc's classes on the device."""
        found = {}
        if not self.is_ours(index):
            return found
        for entry in self.ipr.get_classes(index=index):
            handle = entry["handle"]
            if handle >> 16 == MAJOR and entry.get_attr("TCA_KIND") == "htb":
                params = entry.get_nested("TCA_OPTIONS", "TCA_HTB_PARMS") or {}
                found[handle & 0xFFFF] = params.get("rate")
        return found

    def set_class(self, device, minor, bytes_per_second):
        """Class ``5353:<minor>`` on ``device`` at ``bytes_per_second`` (rate and ceil), made or changed."""
        if not 1 <= bytes_per_second <= MAX_BYTES_PER_SECOND:
            raise ShapingError("%d bytes per second is beyond HTB's rate" % bytes_per_second)
        index = self.ensure_root(device)
        current = self.classes(index).get(minor)
        if current == bytes_per_second:
            return False
        # A burst of 10 ms at the rate (at least 64 KiB: one GSO segment), so that high rates are reached.
        burst = max(bytes_per_second // 100, 65536)
        command = "add-class" if current is None else "change-class"
        try:
            self.ipr.tc(command, "htb", index, classid(minor), parent=ROOT_HANDLE, rate=bytes_per_second,
                        ceil=bytes_per_second, burst=burst, cburst=burst)
        except _netlink_error() as exc:
            raise ShapingError("device %s: class %s: %s" % (device, class_text(minor), exc)) from None
        return True

    def delete_class(self, index, minor):
        try:
            self.ipr.tc("del-class", "htb", index, classid(minor), parent=ROOT_HANDLE)
        except _netlink_error() as exc:
            if exc.code not in (errno.ENOENT, errno.EINVAL):
                raise ShapingError("class %s: %s" % (class_text(minor), exc)) from None

    def shaped_devices(self):
        """``{device: index}`` of every device whose root qdisc is ours."""
        found = {}
        for link in self.ipr.get_links():
            if self.is_ours(link["index"]):
                found[link.get_attr("IFLA_IFNAME")] = link["index"]
        return found
