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

    if backend != "stunnel":  # stunnel's PROD side expects TLS-PSK from a CONS gateway
        sent, got = push_inside(container, session["listeners"][0], 7000)
        assert sent["sha256"] == got["sha256"] and got["bytes"] == sent["bytes"]

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
