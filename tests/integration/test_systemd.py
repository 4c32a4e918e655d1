# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The process runtime where systemd is PID 1: one unit per session, reload via systemctl, restart on failure.

The gateway is a container running systemd (see tests/images/systemd-gateway);
data is pushed inside it, on its own loopback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import time

import pytest

from conftest import ROOT, docker_client, run_playbook
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import wait_until

pytestmark = pytest.mark.docker

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "systemd.yml")
IMAGE = "scistream/test-systemd-gateway:local"
UID = "cccccccc-0000-4000-8000-00000000000c"


def boot_wait(container):
    """Wait until systemd in the gateway container says it is up."""
    assert wait_until(lambda: container.exec_run("systemctl is-system-running").output.strip()
                      in (b"running", b"degraded"), 60, 0.5)


@contextlib.contextmanager
def systemd_gateway(name, label, inventory_dir):
    """A gateway host whose PID 1 is systemd, with streamcheck.py inside; yields (container, inventory path)."""
    client = docker_client()
    try:
        client.images.get(IMAGE)
    except Exception:  # pylint: disable=broad-exception-caught
        pytest.skip("%s is not built (run .ci/setup)" % IMAGE)
    container = client.containers.run(
        IMAGE, name=name, detach=True, cap_add=["SYS_ADMIN"], security_opt=["seccomp=unconfined"],
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        tmpfs={"/run": "", "/run/lock": ""}, cgroupns="host", labels={"org.scistream.test": label})
    try:
        boot_wait(container)
        with open(os.path.join(ROOT, "playbooks", "files", "streamcheck.py"), "rb") as handle:
            put_file(container, "/usr/local/bin/streamcheck.py", handle.read())
        inventory = inventory_dir / "hosts.ini"
        inventory.write_text("gateway ansible_connection=community.docker.docker ansible_host=%s "
                             "ansible_python_interpreter=/usr/bin/python3\n" % name)
        yield container, str(inventory)
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with systemd_gateway("scistream-test-systemd-%d" % os.getpid(), "systemd", tmp_path_factory.mktemp("inv")) as gw:
        yield gw


def put_file(container, path, data):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(os.path.basename(path))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    container.put_archive(os.path.dirname(path), buf.getvalue())


def run(container, command):
    result = container.exec_run(["sh", "-c", command])
    return result.exit_code, result.output.decode()


def push_inside(container, listener, sink_port, size="20M"):
    """Sink and source inside the gateway container, on its loopback; returns both digests."""
    run(container, "rm -f /tmp/sink.json; (python3 /usr/local/bin/streamcheck.py sink --listen 127.0.0.1:%d "
                   "--timeout 30 > /tmp/sink.json 2>/dev/null &)" % sink_port)
    time.sleep(0.5)
    code, sent = run(container, "python3 /usr/local/bin/streamcheck.py send --to %s --bytes %s" % (listener, size))
    assert code == 0, sent

    def sink_report():
        return run(container, "cat /tmp/sink.json")[1].strip()
    assert wait_until(sink_report, 30, 0.2)
    return json.loads(sent), json.loads(sink_report())


PROXY_UID = 7400  # the gateway role's scistream user (tests/integration/playbooks/systemd.yml creates it)
NET_BIND_SERVICE = 1 << 10


def proc_status(container, pid):
    text = run(container, "cat /proc/%s/status" % pid)[1]
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def unprivileged(container, unit):
    """Assert the unit's proxy and its children run as the proxy user; return their effective capabilities."""
    main = run(container, "systemctl show -p MainPID --value " + unit)[1].strip()
    pids = [main] + run(container, "cat /proc/%s/task/*/children" % main)[1].split()
    caps = set()
    for pid in pids:
        status = proc_status(container, pid)
        assert status["Uid"].split()[:2] == [str(PROXY_UID)] * 2 and status["NoNewPrivs"].strip() == "1", (unit, pid)
        caps.add(int(status["CapEff"], 16) | int(status["CapBnd"], 16))
    assert len(caps) == 1
    return caps.pop()


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
                  writable_paths=["-/var/lib/scistream", "-/etc/systemd/system", "-/var/log/scistream"],
                  create_dirs=["/var/lib/scistream"], nofile=65536)
    env = jinja2.Environment(trim_blocks=True)
    env.filters.update({"scistream.gateway." + k: v for k, v in FilterModule().filters().items()})
    with open(os.path.join(ROOT, "roles", "daemon", "templates", "unit.service.j2"), encoding="utf-8") as handle:
        text = env.from_string(handle.read()).render(ansible_managed="test", scistream_daemon=daemon,
                                                     scistream_daemon_lib="/opt/scistream/s2cs/lib")
    assert "ReadWritePaths=-/var/lib/scistream -/etc/systemd/system -/var/log/scistream" in text
    assert "ExecStartPre=+/bin/mkdir -p -m 0700 /var/lib/scistream\n" in text and "LimitNOFILE=65536\n" in text
    put_file(container, "/etc/systemd/system/scistream-s2cs@.service", text.encode())
    assert run(container, "systemctl daemon-reload")[0] == 0
    assert exposure(container, "scistream-s2cs@main.service", "scistream-s2cs@ (control server)") < 7.0
