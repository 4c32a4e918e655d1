# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The process runtime where systemd is PID 1: one unit per session, reload via systemctl, restart on failure.

The gateway is a container running systemd (see tests/images/systemd-gateway);
data is pushed inside it, on its own loopback.
"""

from __future__ import annotations

import os
import re

import pytest

from conftest import ROOT, run_playbook
from systemd_gateway import put_file, push_inside, run, systemd_gateway, unprivileged
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import wait_until

pytestmark = pytest.mark.docker

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "systemd.yml")
UID = "cccccccc-0000-4000-8000-00000000000c"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with systemd_gateway("scistream-test-systemd-%d" % os.getpid(), "systemd", tmp_path_factory.mktemp("inv")) as gw:
        yield gw


NET_BIND_SERVICE = 1 << 10


def exposure(container, unit, label=None):
    """``systemd-analyze security``'s overall exposure of ``unit`` (0 = fully confined, 10 = not at all)."""
    code, text = run(container, "systemd-analyze security --no-pager " + unit)
    assert code == 0, text
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", text).group(1))
    print("EXPOSURE %s %.1f" % (label or unit, score))
    return score


@pytest.mark.parametrize("backend", ["haproxy", "nginx", "stunnel"])
def test_systemd_unit_per_session(gateway, backend):
    container, inventory = gateway
    variables = {"uid": UID, "backend": backend, "targets": ["127.0.0.1:7000"]}
    unit = "scistream-%s-prod-%s.service" % (backend, UID)

    rc, first = run_playbook(PLAYBOOK, variables, inventory=inventory)
    assert rc == 0, first.failures()
    session = first.result("Session", "gateway")
    assert session["actions"] == ["reserve", "write_config", "start"]
    assert run(container, "systemctl is-active " + unit)[1].strip() == "active"
    assert first.result("Health", "gateway")["sessions"][0]["healthy"]
    # Hardened: the proxy runs as the scistream user with no capability at all.
    assert unprivileged(container, unit) == 0
    assert exposure(container, unit) <= 3.0

    if backend != "stunnel":  # stunnel's PROD side expects TLS-PSK from a CONS gateway
        sent, got = push_inside(container, session["listeners"][0], 7000, "200M")
        assert sent["sha256"] == got["sha256"] and got["bytes"] == sent["bytes"] == 200 * 1024 * 1024

    rc, again = run_playbook(PLAYBOOK, variables, inventory=inventory)
    assert again.changed == 0

    rc, changed = run_playbook(PLAYBOOK, dict(variables, targets=["127.0.0.1:7001"]), inventory=inventory)
    assert rc == 0, changed.failures()
    assert changed.result("Session", "gateway")["actions"][-1] == ("restart" if backend == "stunnel" else "reload")
    if backend != "stunnel":
        sent, got = push_inside(container, session["listeners"][1], 7001, "4M")
        assert sent["sha256"] == got["sha256"]

    # systemd restarts a proxy that crashed, without waiting for the next run.
    code, pid = run(container, "systemctl show -p MainPID --value " + unit)
    run(container, "kill -9 " + pid.strip())
    assert wait_until(lambda: run(container, "systemctl show -p MainPID --value " + unit)[1].strip()
                      not in ("0", pid.strip()), 15, 0.3)

    rc, released = run_playbook(PLAYBOOK, dict(variables, session_state="absent"), inventory=inventory)
    assert rc == 0 and released.result("Session", "gateway")["changed"]
    assert run(container, "test -e /etc/systemd/system/" + unit)[0] != 0
    assert run(container, "ls /var/lib/scistream/sessions /var/lib/scistream/run")[1].split() == \
        ["/var/lib/scistream/run:", "/var/lib/scistream/sessions:"]
    assert run(container, "pgrep -x haproxy || pgrep -x nginx || pgrep -x stunnel4 || pgrep -x stunnel")[0] != 0


def test_a_low_port_session_gets_net_bind_service_alone(gateway):
    """A listener below 1024 (in the gateway container's own network namespace): CAP_NET_BIND_SERVICE and no other."""
    container, inventory = gateway
    uid = "cccccccc-0000-4000-8000-0000000000d1"
    variables = {"uid": uid, "backend": "haproxy", "targets": ["127.0.0.1:7002"], "port_range": "900-909"}
    unit = "scistream-haproxy-prod-%s.service" % uid
    rc, first = run_playbook(PLAYBOOK, variables, inventory=inventory)
    assert rc == 0, first.failures()
    session = first.result("Session", "gateway")
    assert session["ports"] == [900, 901]
    assert unprivileged(container, unit) == NET_BIND_SERVICE
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in run(container, "cat /etc/systemd/system/" + unit)[1]
    exposure(container, unit, "haproxy session listening below 1024")
    sent, got = push_inside(container, session["listeners"][0], 7002, "4M")
    assert sent["sha256"] == got["sha256"]
    rc, released = run_playbook(PLAYBOOK, dict(variables, session_state="absent"), inventory=inventory)
    assert rc == 0 and released.result("Session", "gateway")["changed"]


def test_s2cs_unit_is_hardened(gateway):
    """The control server's unit (roles/s2cs) as the role renders it: systemd-analyze scores it (reported, not
    held to the session units' goal: the server stays root to manage the proxies)."""
    import jinja2  # pylint: disable=import-outside-toplevel
    container, dummy = gateway
    with open(os.path.join(ROOT, "roles", "s2cs", "templates", "scistream-s2cs.service.j2"), encoding="utf-8") as handle:
        text = jinja2.Template(handle.read()).render(
            ansible_managed="test", scistream_s2cs_lib="/opt/scistream/s2cs/lib", scistream_s2cs_venv="/opt/scistream/s2cs/venv",
            scistream_s2cs_module="scistream_s2cs", scistream_s2cs_config_dir="/etc/scistream/s2cs/instances",
            scistream_s2cs_log_dir="/var/log/scistream", scistream_s2cs_resolved=[{"name": "main", "state_dir": "/var/lib/scistream"}])
    assert "ReadWritePaths=-/var/lib/scistream -/etc/systemd/system -/var/log/scistream" in text
    assert "ExecStartPre=+/bin/mkdir -p -m 0700 /var/lib/scistream\n" in text
    put_file(container, "/etc/systemd/system/scistream-s2cs@.service", text.encode())
    assert run(container, "systemctl daemon-reload")[0] == 0
    assert exposure(container, "scistream-s2cs@main.service", "scistream-s2cs@ (control server)") < 7.0
