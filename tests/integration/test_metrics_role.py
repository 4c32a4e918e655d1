# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway role's exporter tasks (daemon supervisor) and Prometheus-host tasks on this host, for real.

The exporter runs from the role's copy of the code on /usr/bin/python3, answers with basic auth, a
second run changes nothing, a changed port restarts it; the rules pass promtool on the way in and the
file_sd list names the gateway. Port 43107-43108.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, run_playbook
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import wait_until

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "metrics_role.yml")


def bcrypt_hash(password):
    return subprocess.run(["/usr/bin/python3", "-c", "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), "
                           "bcrypt.gensalt(rounds=6)).decode())", password], capture_output=True, text=True,
                          check=True).stdout.strip()


def scrape(port, credentials):
    request = urllib.request.Request("http://127.0.0.1:%d/metrics" % port,
                                     headers={"Authorization": "Basic " + base64.b64encode(credentials).decode()})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
        return response.read().decode()


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="checks the daemon supervisor (no systemd as PID 1)")
@pytest.mark.skipif(not os.path.exists("/usr/bin/promtool"), reason="needs promtool (apt install prometheus)")
def test_role_runs_the_exporter_and_installs_the_rules(tmp_path):
    base = tmp_path / "role"
    variables = {
        "scistream_exporter_enabled": True, "scistream_exporter_port": 43107,
        "scistream_exporter_home": str(base / "home"), "scistream_exporter_config_dir": str(base / "etc"),
        "scistream_exporter_pid_file": str(base / "exporter.pid"), "scistream_exporter_log_file": str(base / "log"),
        "scistream_exporter_supervisor": "daemon", "scistream_exporter_process_supervisor": "daemon",
        "scistream_exporter_basic_auth_users": {"prometheus": bcrypt_hash("s3cret")},
        "scistream_gateway_state_dir": str(base / "state"),
        "scistream_prometheus_host": "localhost", "scistream_prometheus_rules_dir": str(base / "rules"),
        "scistream_prometheus_file_sd_dir": str(base / "file_sd"), "scistream_prometheus_reload": False,
    }
    os.makedirs(base / "state", mode=0o700)
    ctl = str(base / "home" / "scistream-exporter-ctl")
    try:
        rc, run = run_playbook(PLAYBOOK, variables, timeout=300)
        assert rc == 0, run.failures()
        assert "scistream_exporter_scrape_duration_seconds" in scrape(43107, b"prometheus:s3cret")
        with pytest.raises(urllib.error.HTTPError) as err:
            scrape(43107, b"prometheus:wrong")
        assert err.value.code == 401
        assert oct(os.stat(base / "etc" / "web.yml").st_mode & 0o777) == "0o600"
        assert os.path.exists(base / "rules" / "scistream.rules.yml")
        targets = json.load(open(base / "file_sd" / "scistream.json", encoding="utf-8"))
        assert targets == [{"targets": ["localhost:43107"], "labels": {"gateway": "localhost"}}]
        pid = open(base / "exporter.pid", encoding="ascii").read().strip()

        rc, run = run_playbook(PLAYBOOK, variables, timeout=300)
        assert rc == 0 and run.changed == 0, [(t["task"]["name"], h) for p in run.output["plays"] for t in p["tasks"]
                                              for h, r in t["hosts"].items() if r.get("changed")]
        assert open(base / "exporter.pid", encoding="ascii").read().strip() == pid

        rc, run = run_playbook(PLAYBOOK, dict(variables, scistream_exporter_port=43108), timeout=300)
        assert rc == 0 and run.changed > 0, run.failures()
        assert wait_until(lambda: _answers(43108), 10)
        assert open(base / "exporter.pid", encoding="ascii").read().strip() != pid
    finally:
        if os.path.exists(ctl):
            subprocess.run([ctl, "stop"], check=False, timeout=30)


def _answers(port):
    try:
        return "scistream_" in scrape(port, b"prometheus:s3cret")
    except OSError:
        return False
