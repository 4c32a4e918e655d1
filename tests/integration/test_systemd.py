# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The process runtime where systemd is PID 1: one unit per session, reload via systemctl, restart on failure.

The gateway is a container running systemd (see tests/images/systemd-gateway);
data is pushed inside it, on its own loopback.
"""

from __future__ import annotations

import os
import re
import uuid

import pytest

from conftest import ROOT, run_playbook
from systemd_gateway import POOL_UIDS, as_uid, main_pid, put_file, push_inside, run, systemd_gateway, unit_uid, \
    unprivileged
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import wait_until

pytestmark = pytest.mark.docker

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "systemd.yml")
# haproxy, nginx and stunnel PROD sessions to local sinks, and a CONS stunnel (another state dir) in front of the last.
SESSIONS_PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "restart.yml")
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
    # Hardened: the proxy runs as the session's pool uid (not the shared scistream account) with no capability.
    assert unprivileged(container, unit) == 0
    assert unit_uid(container, unit) in POOL_UIDS
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


def stat(container, path):
    """``uid:gid mode`` of ``path`` in the gateway container."""
    return run(container, "stat -c '%u:%g %a' " + path)[1].strip()


def test_sessions_under_systemd_have_uids_of_their_own_and_none_reaches_another(gateway):
    """Issue 20 item 2 under systemd: four sessions (haproxy, nginx, stunnel PROD, and a stunnel CONS session of
    another state dir in front of the last), four units, four pool uids. As each session's uid (setpriv, in the
    gateway container) another session's psk, config and proxy dir cannot be read and its proxy cannot be
    signalled; the session's own files can; data still flows through every session."""
    container, inventory = gateway
    psk = "q" * 32
    variables = {"uids": [str(uuid.uuid4()) for dummy in range(3)], "psk": psk}
    rc, setup = run_playbook(SESSIONS_PLAYBOOK, variables, inventory=inventory)
    try:
        assert rc == 0, setup.failures()
        prod = setup.result("Producer-side sessions", "gateway")["sessions"]
        cons = setup.result("Consumer side of the stunnel pair", "gateway")["sessions"][0]
        names = ["haproxy", "nginx", "stunnel", "cons"]
        units = dict(zip(names, ["scistream-%s-%s-%s.service" % (s["backend"], s["role"].lower(), s["uid"])
                                 for s in prod + [cons]]))
        run_dirs = dict(zip(names, ["/var/lib/scistream/run/" + s["uid"] for s in prod]
                            + ["/var/lib/scistream-cons/run/" + cons["uid"]]))
        uids = {name: unit_uid(container, unit) for name, unit in units.items()}
        print("POOL UIDS", uids)
        assert len(set(uids.values())) == 4 and all(uid in POOL_UIDS for uid in uids.values())
        for name, unit in units.items():
            uid = uids[name]
            assert run(container, "systemctl is-active " + unit)[1].strip() == "active"
            assert unprivileged(container, unit, uid) == 0
            assert exposure(container, unit, "%s session as pool uid %d" % (name, uid)) <= 3.0
            # The account systemd resolves User= through: the pool's own, no member, no login.
            account = run(container, "getent passwd %d" % uid)[1].strip().split(":")
            assert account[0] == "scistream-p%d" % uid and account[2:4] == [str(uid)] * 2
            assert account[6].endswith("nologin") and account[5] == "/"
            assert run(container, "getent group %d" % uid)[1].strip() == "scistream-p%d:x:%d:" % (uid, uid)
            # Its run dir is root:<its gid> 0750, its files 0640, its proxy/ dir its own, 0700.
            assert stat(container, run_dirs[name]) == "0:%d 750" % uid
            assert stat(container, run_dirs[name] + "/proxy") == "%d:%d 700" % (uid, uid)
        for name in ("stunnel", "cons"):
            assert stat(container, run_dirs[name] + "/psk.txt") == "0:%d 640" % uids[name]
            code, own = as_uid(container, uids[name], "cat %s/psk.txt" % run_dirs[name])
            assert code == 0 and psk in own  # its own key it reads
        assert stat(container, run_dirs["haproxy"] + "/haproxy.cfg") == "0:%d 640" % uids["haproxy"]

        pids = {name: main_pid(container, unit) for name, unit in units.items()}
        attempts = [("haproxy", "stunnel"), ("stunnel", "haproxy"), ("cons", "stunnel"), ("stunnel", "cons"),
                    ("nginx", "haproxy"), ("haproxy", "nginx")]
        for me, other in attempts:
            their_files = {"haproxy": "haproxy.cfg", "nginx": "nginx.conf", "stunnel": "psk.txt", "cons": "psk.txt"}
            code, text = as_uid(container, uids[me], "cat %s/%s" % (run_dirs[other], their_files[other]))
            assert code != 0 and "Permission denied" in text and psk not in text, (me, other, text)
            code, text = as_uid(container, uids[me], "ls %s/proxy" % run_dirs[other])
            assert code != 0 and "Permission denied" in text, (me, other, text)
            code, text = as_uid(container, uids[me], "touch %s/proxy/planted" % run_dirs[other])
            assert code != 0, (me, other, text)
            for signal in ("TERM", "KILL", "HUP"):
                code, text = as_uid(container, uids[me], "kill -%s %s" % (signal, pids[other]))
                assert code != 0 and "not permitted" in text, (me, other, signal, text)
        for name, unit in units.items():  # nobody was stopped, restarted or reloaded by another session
            assert run(container, "systemctl is-active " + unit)[1].strip() == "active"
            assert main_pid(container, unit) == pids[name]

        listeners = [prod[0]["listeners"][0], prod[1]["listeners"][0], cons["listeners"][0]]
        for listener, sink_port in zip(listeners, (33700, 33701, 33702)):
            sent, got = push_inside(container, listener, sink_port, "50M")
            assert sent["sha256"] == got["sha256"] and sent["bytes"] == got["bytes"] == 50 * 1024 * 1024, listener

        rc, again = run_playbook(SESSIONS_PLAYBOOK, variables, inventory=inventory)
        assert rc == 0 and again.changed == 0, again.failures()
        assert {name: unit_uid(container, unit) for name, unit in units.items()} == uids  # each kept its uid
    finally:
        rc, released = run_playbook(SESSIONS_PLAYBOOK, dict(variables, session_state="absent"), inventory=inventory)
    assert rc == 0, released.failures()
    assert run(container, "ls /etc/systemd/system/ | grep -c 'scistream-.*%s'" % variables["uids"][0])[1].strip() == "0"
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
    """The control server's unit (roles/daemon's template with roles/s2cs's settings): systemd-analyze scores it
    (reported, not held to the session units' goal: the server stays root to manage the proxies)."""
    import jinja2  # pylint: disable=import-outside-toplevel
    import yaml  # pylint: disable=import-outside-toplevel
    from ansible_collections.scistream.gateway.plugins.filter.roles import FilterModule  # pylint: disable=import-outside-toplevel
    container, dummy = gateway
    with open(os.path.join(ROOT, "roles", "s2cs", "vars", "main.yml"), encoding="utf-8") as handle:
        daemon = yaml.safe_load(handle)["scistream_s2cs_daemon"]
    daemon.update(instances=["main"], python="/opt/scistream/s2cs/venv/bin/python", module="scistream_s2cs",
                  config_dir="/etc/scistream/s2cs/instances", environment_file="/etc/scistream/s2cs/instances/environment",
                  writable_paths=["-/var/lib/scistream", "-/etc", "-/var/log/scistream"],
                  create_dirs=["/var/lib/scistream"], nofile=65536)
    env = jinja2.Environment(trim_blocks=True)
    env.filters.update({"scistream.gateway." + k: v for k, v in FilterModule().filters().items()})
    with open(os.path.join(ROOT, "roles", "daemon", "templates", "unit.service.j2"), encoding="utf-8") as handle:
        text = env.from_string(handle.read()).render(ansible_managed="test", scistream_daemon=daemon,
                                                     scistream_daemon_lib="/opt/scistream/s2cs/lib")
    assert "ReadWritePaths=-/var/lib/scistream -/etc -/var/log/scistream" in text
    assert "ExecStartPre=+/bin/mkdir -p -m 0700 /var/lib/scistream\n" in text and "LimitNOFILE=65536\n" in text
    put_file(container, "/etc/systemd/system/scistream-s2cs@.service", text.encode())
    assert run(container, "systemctl daemon-reload")[0] == 0
    assert exposure(container, "scistream-s2cs@main.service", "scistream-s2cs@ (control server)") < 7.0
