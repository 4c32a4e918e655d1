# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The s2cs role on this host, for real: venv from a wheelhouse, self-signed TLS, two daemon instances.

Secure by default: the role makes the deployment's token on the controller (0600, once) and the servers
accept only it. A second run with one instance's setting changed rewrites that instance's options and the
handler restarts the servers; a third run changes nothing. The servers answer over TLS checked against the
role's ca.crt.
Ports: 31030-31031 (control), 31032 (metrics), 31800-31819 (listeners).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
import uuid

import pytest

from conftest import ROOT, run_playbook

pytest.importorskip("grpc")

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import ControlCallError, ControlClient  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.guard import GUARD_TABLE, ConnectionGuard  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import nft  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import process_alive  # noqa: E402

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "s2cs_role.yml")


def changed_tasks(run):
    return [t["task"]["name"] for p in run.output["plays"] for t in p["tasks"] if any(h.get("changed") for h in t["hosts"].values())]


def pid_of(name):
    with open("/run/scistream-s2cs-%s.pid" % name, encoding="ascii") as handle:
        return int(handle.read())


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="checks the daemon supervisor (no systemd as PID 1)")
@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="needs the distribution's python3 with venv")
def test_role_runs_daemons_idempotently(tmp_path, s2cs_wheels):
    base = tmp_path / "sss2cs-role"
    names = ["sss2cs-a-%s" % uuid.uuid4().hex[:6], "sss2cs-b-%s" % uuid.uuid4().hex[:6]]
    instances = [
        {"name": names[0], "port": 31030, "listener_ip": "127.0.0.1", "port_range": "31800-31809",
         "state_dir": str(base / "state-a"), "metrics_port": 31032},
        {"name": names[1], "port": 31031, "listener_ip": "127.0.0.1", "port_range": "31810-31819",
         "state_dir": str(base / "state-b"), "backend": "stunnel"},
    ]
    variables = {"base": str(base), "wheels": s2cs_wheels, "scistream_s2cs_instances": instances}
    ctl = str(base / "home" / "bin" / "s2cs-ctl")
    try:
        rc, run = run_playbook(PLAYBOOK, variables, timeout=600)
        assert rc == 0, run.failures()
        assert run.changed > 0
        pids = [pid_of(n) for n in names]
        assert oct(os.stat(base / "etc" / "tls" / "server.key").st_mode & 0o777) == "0o600"
        token_file = base / "controller" / "token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600" and oct(token_file.parent.stat().st_mode & 0o777) == "0o700"
        token = token_file.read_text().strip()
        assert len(token) >= 40
        assert (base / "etc" / "instances" / "tokens").read_text() == token + "\n"
        # Each instance caps its connections in the kernel, in a chain of its own.
        assert {ConnectionGuard(i["state_dir"], i["port"], 64, 4096).chain for i in instances} <= guard_chains()
        ca = str(base / "etc" / "tls" / "ca.crt")
        with ControlClient("127.0.0.1:31030", ca_path=ca) as anonymous:
            with pytest.raises(ControlCallError) as refused:
                anonymous.request(str(uuid.uuid4()), "PROD", 1, ["127.0.0.1:9"])
            assert refused.value.code == "UNAUTHENTICATED"
        for instance in instances:
            with ControlClient("127.0.0.1:%d" % instance["port"], ca_path=ca, token=token) as client:
                uid = str(uuid.uuid4())
                listeners, dummy, created = client.request(uid, "PROD", 1, ["127.0.0.1:9"])
                assert created and listeners[0].startswith("127.0.0.1:318")
                client.release(uid)
        # The first instance serves its own metrics (prometheus_client from the distribution).
        with urllib.request.urlopen("http://127.0.0.1:31032/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'scistream_s2cs_calls_total{code="OK",method="req"} 1.0' in text, text[-2000:]
        # A changed setting rewrites its instance's options, and the handler restarts the servers; the
        # token stays (idempotence: the systemd flavour's second run is checked by Molecule's multisite scenario).
        instances[1]["port_range"] = "31812-31819"
        rc, run = run_playbook(PLAYBOOK, variables, timeout=600)
        assert rc == 0, run.failures()
        assert changed_tasks(run) == ["scistream.gateway.s2cs : Write each instance's options",
                                      "scistream.gateway.s2cs : Restart the daemons of scistream-s2cs"], changed_tasks(run)
        assert token_file.read_text().strip() == token
        for name, pid in zip(names, pids):
            assert pid_of(name) != pid and not process_alive(pid)
        # Nothing changed: nothing runs again.
        pids = [pid_of(n) for n in names]
        rc, run = run_playbook(PLAYBOOK, variables, timeout=600)
        assert rc == 0 and run.changed == 0, changed_tasks(run)
        assert [pid_of(n) for n in names] == pids
    finally:
        for name in names:
            if os.path.exists(ctl):
                subprocess.run([ctl, "stop", name], check=False, timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    assert not {ConnectionGuard(i["state_dir"], i["port"], 64, 4096).chain for i in instances} & guard_chains(), \
        "a stopped server's caps are gone"


def guard_chains():
    return {e["chain"]["name"] for e in nft.Nft().list_table(GUARD_TABLE) if "chain" in e}
