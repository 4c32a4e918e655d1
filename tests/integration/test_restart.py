# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A gateway reboot: sessions under systemd come back by themselves.

The gateway is a container whose PID 1 is systemd (tests/images/systemd-gateway).
Its sessions' units are enabled and hardened (the proxies run as the scistream
user); `docker restart` reboots it; with no Ansible run in between, 200 MB go
through every backend again; release disables and removes the units.
"""

from __future__ import annotations

import os
import uuid

import pytest

from conftest import ROOT, docker_client, run_playbook
from systemd_gateway import boot_wait, push_inside, run, systemd_gateway, unprivileged
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import listening_ports, wait_until

pytestmark = pytest.mark.docker

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "restart.yml")


@pytest.fixture
def gateway(tmp_path):
    with systemd_gateway("ssscale-restart-%d" % os.getpid(), "restart", tmp_path) as gw:
        yield gw


def test_sessions_come_back_after_reboot(gateway):
    container, inventory = gateway
    variables = {"uids": [str(uuid.uuid4()) for dummy in range(3)], "psk": "r" * 32}
    rc, setup = run_playbook(PLAYBOOK, variables, inventory=inventory)
    assert rc == 0, setup.failures()
    assert variables["psk"] not in str(setup.output) + setup.stderr
    prod = setup.result("Producer-side sessions", "gateway")["sessions"]
    cons = setup.result("Consumer side of the stunnel pair", "gateway")["sessions"]
    units = ["scistream-%s-%s-%s.service" % (s["backend"], s["role"].lower(), s["uid"]) for s in prod + cons]
    for unit in units:
        assert run(container, "systemctl is-enabled " + unit)[1].strip() == "enabled"

    container.restart(timeout=10)
    boot_wait(container)
    # No Ansible run since the reboot: every proxy is back, started by systemd.
    for unit in units:
        assert wait_until(lambda u=unit: run(container, "systemctl is-active " + u)[1].strip() == "active", 20, 0.3)
    listeners = [prod[0]["listeners"][0], prod[1]["listeners"][0], cons[0]["listeners"][0]]
    for listener, sink_port in zip(listeners, (33700, 33701, 33702)):
        probe = "python3 -c 'import socket; socket.create_connection((\"%s\", %s), 1)'" % tuple(listener.rsplit(":", 1))
        assert wait_until(lambda p=probe: run(container, p)[0] == 0, 15, 0.3)
        # 200 MB through each backend's hardened unit (the proxy as the scistream user).
        sent, got = push_inside(container, listener, sink_port, "200M")
        assert sent["sha256"] == got["sha256"] and sent["bytes"] == got["bytes"] == 200 * 1024 * 1024
    for unit in units:
        assert unprivileged(container, unit) == 0

    # The re-run after the reboot changes nothing; release disables and removes every unit.
    rc, again = run_playbook(PLAYBOOK, variables, inventory=inventory)
    assert rc == 0 and again.changed == 0, again.failures()
    rc, released = run_playbook(PLAYBOOK, dict(variables, session_state="absent"), inventory=inventory)
    assert rc == 0, released.failures()
    assert run(container, "ls /etc/systemd/system/multi-user.target.wants/ /etc/systemd/system/ | grep -c scistream-")[1].strip() == "0"
    assert run(container, "ls /var/lib/scistream/sessions /var/lib/scistream-cons/sessions")[1].split() == \
        ["/var/lib/scistream-cons/sessions:", "/var/lib/scistream/sessions:"]
    assert run(container, "pgrep -x haproxy || pgrep -x nginx || pgrep -x stunnel4 || pgrep -x stunnel")[0] != 0


def test_docker_runtime_restart_policy_brings_the_proxy_back(tmp_path, sink):
    """The docker runtime's containers are `unless-stopped`: the Engine restarts a proxy that died
    (as it starts them all when it starts at boot), with no Ansible run."""
    import signal  # pylint: disable=import-outside-toplevel
    from conftest import Sink, streamcheck  # pylint: disable=import-outside-toplevel
    uid = str(uuid.uuid4())
    state_dir = str(tmp_path / "gw")
    item = {"uid": uid, "role": "PROD", "num_conn": 1, "listener_ip": "127.0.0.1", "port_range": "33800-33849",
            "targets": ["127.0.0.1:33850"], "runtime": "docker", "image": "scistream/haproxy:local"}
    playbook = os.path.join(ROOT, "tests", "integration", "playbooks", "sessions.yml")
    rc, setup = run_playbook(playbook, {"state_dir": state_dir, "sessions": [item]})
    assert rc == 0, setup.failures()
    port = setup.result("Sessions")["sessions"][0]["ports"][0]
    container = docker_client().containers.get("scistream-haproxy-prod-" + uid)
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

    os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)  # the proxy dies, not stopped by anyone
    assert wait_until(lambda: docker_client().containers.get(container.id).attrs["RestartCount"] > 0
                      and docker_client().containers.get(container.id).status == "running", 20, 0.2)
    assert wait_until(lambda: port in listening_ports("tcp"), 15, 0.1)
    target = Sink(port=33850, timeout=30)
    sent = streamcheck.send("127.0.0.1", port, 1024 * 1024, timeout=10)
    assert target.wait()["sha256"] == sent["sha256"]

    rc, released = run_playbook(playbook, {"state_dir": state_dir, "sessions": [dict(item, state="absent")]})
    assert rc == 0 and released.changed == 1
    assert not docker_client().containers.list(all=True, filters={"label": "org.scistream.uid=" + uid})
