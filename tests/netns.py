# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two facilities as four network namespaces, for tests and benchmarks (needs root).

    consumer --(LAN B)-- gateway B --(WAN)-- gateway A --(LAN A)-- producer
    10.97.N.10    10.97.N.2 | 10.97.N+1.3    10.97.N+1.2 | 10.97.N+2.2   10.97.N+2.10

Each namespace is its own network stack, so forwarding is measured the way
separate hosts would do it. The gateways forward (IPv4 and IPv6), but only
between their own networks: the consumer reaches the producer through a
session, or through the plain routed path once :meth:`Topology.route` adds
the routes across the WAN (the benchmarks' baseline).
"""

from __future__ import annotations

import os
import stat
import subprocess

PREFIX = "ssnft"


class Topology:
    """Namespaces ``<prefix>-<tag>-{c,b,a,p}`` (prefix ssnft unless given) on 10.97.<net>.0/24 and the two
    /24s after it."""

    def __init__(self, tag, net=1, docker_image=None, prefix=PREFIX):
        self.tag = tag
        self.prefix = prefix
        #: With an image, gateways B and A are the network namespaces of two idle containers
        #: (``ssnft-<tag>-b``, ``ssnft-<tag>-a``), so proxy containers can join them
        #: (``network_mode=container:<name>``) as host processes and kernel rules can.
        self.docker_image = docker_image
        self.net = net
        self.ns = {role: "%s-%s-%s" % (prefix, tag, role) for role in ("c", "b", "a", "p")}
        n = net
        self.consumer = "10.97.%d.10" % n
        self.b_lan, self.b_wan = "10.97.%d.2" % n, "10.97.%d.3" % (n + 1)
        self.a_wan, self.a_lan = "10.97.%d.2" % (n + 1), "10.97.%d.2" % (n + 2)
        self.producer = "10.97.%d.10" % (n + 2)
        self.interpreters = {}

    # -- plumbing ------------------------------------------------------------
    def sh(self, role, *argv, check=True, timeout=30, **kwargs):
        """Run ``argv`` in the namespace of ``role`` (c, b, a, p)."""
        return subprocess.run(["ip", "netns", "exec", self.ns[role]] + list(argv), check=check, timeout=timeout,
                              capture_output=True, text=True, **kwargs)

    def popen(self, role, *argv, **kwargs):
        return subprocess.Popen(["ip", "netns", "exec", self.ns[role]] + list(argv), **kwargs)

    def _veth(self, left, right, left_addr, right_addr):
        # veth names: at most 15 characters.
        lname, rname = self.veth(left, right), self.veth(right, left)
        subprocess.run(["ip", "link", "add", lname, "netns", self.ns[left], "type", "veth", "peer", "name", rname,
                        "netns", self.ns[right]], check=True, capture_output=True)
        for role, name, addr in ((left, lname, left_addr), (right, rname, right_addr)):
            self.sh(role, "ip", "addr", "add", addr + "/24", "dev", name)
            self.sh(role, "ip", "link", "set", name, "up")

    def veth(self, here, there):
        """The name of the veth in ``here``'s namespace that leads to ``there`` (at most 15 characters)."""
        return "%s%s-%s%s" % (self.prefix, self.tag, here, there)

    def create(self):
        self.destroy()
        for role, name in self.ns.items():
            if self.docker_image and role in ("b", "a"):
                subprocess.run(["docker", "run", "-d", "--name", name, "--network", "none", "--label", "ssnft=1",
                                self.docker_image, "sleep", "infinity"], check=True, capture_output=True)
                pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", name], check=True,
                                     capture_output=True, text=True).stdout.strip()
                subprocess.run(["ip", "netns", "attach", name, pid], check=True, capture_output=True)
            else:
                subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        for role in self.ns:
            self.sh(role, "ip", "link", "set", "lo", "up")
        self._veth("c", "b", self.consumer, self.b_lan)
        self._veth("b", "a", self.b_wan, self.a_wan)
        self._veth("a", "p", self.a_lan, self.producer)
        self.sh("c", "ip", "route", "add", "default", "via", self.b_lan)
        self.sh("p", "ip", "route", "add", "default", "via", self.a_lan)
        for role in ("b", "a"):
            self.sh(role, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        return self

    def route(self, on=True):
        """Add (or remove) the routes across the WAN: the plain routed path, no session needed."""
        verb = "replace" if on else "del"
        self.sh("b", "ip", "route", verb, "10.97.%d.0/24" % (self.net + 2), "via", self.a_wan, check=on)
        self.sh("a", "ip", "route", verb, "10.97.%d.0/24" % self.net, "via", self.b_wan, check=on)

    def destroy(self):
        """Remove the namespaces (their veths go with them) and the interpreter wrappers."""
        for role, name in self.ns.items():
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
            if self.docker_image and role in ("b", "a"):
                subprocess.run(["docker", "rm", "-f", name], check=False, capture_output=True)
        for path in self.interpreters.values():
            if os.path.exists(path):
                os.unlink(path)

    def interpreter(self, role, directory):
        """A Python interpreter that runs in the namespace of ``role``: for ansible_python_interpreter.

        It is the distribution's Python (/usr/bin/python3), where python3-nftables lives.
        """
        path = os.path.join(directory, "python3-%s" % self.ns[role])
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("#!/bin/sh\nexec ip netns exec %s /usr/bin/python3 \"$@\"\n" % self.ns[role])
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        self.interpreters[role] = path
        return path


def available():
    """Why namespaces with nftables cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    probe = subprocess.run(["/usr/bin/python3", "-c", "import nftables"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "needs python3-nftables for /usr/bin/python3 (run .ci/setup)"
    return None
