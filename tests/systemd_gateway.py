# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A gateway host whose PID 1 is systemd, in a container (tests/images/systemd-gateway), and what the tests do in it.

Used by tests/integration/test_systemd.py and test_restart.py (one xdist group: both boot systemd on the
host's cgroup tree).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import tarfile
import time

import pytest

from conftest import ROOT, docker_client
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import wait_until

IMAGE = "scistream/test-systemd-gateway:local"


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
#: The pool the sessions' uids come from (the modules' default proxy_uid_range; 7400 is the scistream user's).
POOL_UIDS = range(7401, 8400)


def proc_status(container, pid):
    text = run(container, "cat /proc/%s/status" % pid)[1]
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def main_pid(container, unit):
    return run(container, "systemctl show -p MainPID --value " + unit)[1].strip()


def unit_uid(container, unit):
    """The uid the unit's User= names (a number: the session's pool uid)."""
    return int(run(container, "systemctl show -p User --value " + unit)[1].strip())


def as_uid(container, uid, command):
    """Run ``command`` inside the gateway container as ``uid`` (and gid of the same number, no other group)."""
    return run(container, "setpriv --reuid=%d --regid=%d --clear-groups sh -c %s" % (uid, uid, shlex.quote(command)))


def unprivileged(container, unit, uid=None):
    """Assert the unit's proxy and its children run as ``uid`` (default: the unit's User=, which must be a pool
    uid, never root nor the shared scistream account); return their effective capabilities."""
    uid = unit_uid(container, unit) if uid is None else uid
    assert uid in POOL_UIDS, (unit, uid)
    main = main_pid(container, unit)
    pids = [main] + run(container, "cat /proc/%s/task/*/children" % main)[1].split()
    caps = set()
    for pid in pids:
        status = proc_status(container, pid)
        assert status["Uid"].split() == [str(uid)] * 4 and status["NoNewPrivs"].strip() == "1", (unit, pid)
        # No group but its own (systemd's initgroups() lists the primary group as a supplementary one as well).
        assert status["Gid"].split() == [str(uid)] * 4 and status["Groups"].split() in ([], [str(uid)]), (
            unit, pid, status["Groups"])
        caps.add(int(status["CapEff"], 16) | int(status["CapBnd"], 16))
    assert len(caps) == 1
    return caps.pop()
