# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The traffic-control adapter (s2ds/tc.py) against a fake rtnetlink socket: our root qdisc made only over the
kernel's default, never over someone else's; classes made, changed in place, left alone when right.
(The real kernel: tests/integration/test_rates.py.)"""

from __future__ import annotations

import pytest

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import tc


class Message(dict):
    def __init__(self, attrs, **fields):
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name):
        return self.attrs.get(name)

    def get_nested(self, *names):
        value = self.attrs
        for name in names:
            value = value.get(name) if isinstance(value, dict) else None
        return value


class FakeIPRoute:
    """One device ``wan0`` (index 2) with a root qdisc ``root`` ((kind, handle) or None) and HTB classes."""

    def __init__(self, root=("noqueue", 0)):
        self.root = root
        self.classes = {}
        self.calls = []

    def link_lookup(self, ifname):
        return [2] if ifname == "wan0" else []

    def get_qdiscs(self, index):
        if self.root is None:
            return []
        return [Message({"TCA_KIND": self.root[0]}, parent=tc.TC_H_ROOT, handle=self.root[1])]

    def get_classes(self, index):
        return [Message({"TCA_KIND": "htb", "TCA_OPTIONS": {"TCA_HTB_PARMS": {"rate": rate}}}, handle=handle)
                for handle, rate in self.classes.items()]

    def tc(self, command, kind, index, handle, **kwargs):
        self.calls.append((command, kind, handle, kwargs.get("rate")))
        if command == "add":
            self.root = (kind, handle)
        elif command in ("add-class", "change-class"):
            self.classes[handle] = kwargs["rate"]
        elif command == "del-class":
            self.classes.pop(handle, None)


def test_our_root_is_made_over_the_kernel_default_and_classes_follow():
    fake = FakeIPRoute()
    control = tc.TrafficControl(fake)
    assert control.set_class("wan0", 5100, 12_500_000)
    assert fake.root == ("htb", 0x53530000)
    assert fake.calls == [("add", "htb", 0x53530000, None), ("add-class", "htb", 0x535313EC, 12_500_000)]
    assert not control.set_class("wan0", 5100, 12_500_000)  # right already: nothing done
    assert control.set_class("wan0", 5100, 25_000_000)
    assert fake.calls[-1] == ("change-class", "htb", 0x535313EC, 25_000_000)  # in place
    assert control.classes(2) == {5100: 25_000_000}
    control.delete_class(2, 5100)
    assert control.classes(2) == {} and fake.root == ("htb", 0x53530000)  # the root stays


@pytest.mark.parametrize("root", [("fq", 0x10000), ("htb", 0x10000), ("prio", 0x80010000)])
def test_a_root_qdisc_of_someone_else_is_never_replaced(root):
    fake = FakeIPRoute(root)
    with pytest.raises(tc.ShapingError, match="device wan0 has a root qdisc %s %x: of someone else's" % (
            root[0], root[1] >> 16)):
        tc.TrafficControl(fake).set_class("wan0", 5100, 12_500_000)
    assert fake.root == root and not fake.calls


def test_a_missing_device_and_a_rate_beyond_htb():
    control = tc.TrafficControl(FakeIPRoute())
    with pytest.raises(tc.ShapingError, match="device eth9 does not exist"):
        control.set_class("eth9", 5100, 1000)
    with pytest.raises(tc.ShapingError, match="beyond HTB's rate"):
        control.set_class("wan0", 5100, 2 ** 32)
    assert tc.class_text(5100) == "5353:13ec"
