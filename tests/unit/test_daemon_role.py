# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""roles/daemon's unit and control script, rendered with the settings the s2cs role and the exporter give it."""

from __future__ import annotations

import os
import subprocess

import jinja2
import pytest
import yaml

from ansible_collections.scistream.gateway.plugins.filter.roles import FilterModule
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.sandbox import unit_sandbox

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CALLERS = {"s2cs": ("s2cs", "scistream_s2cs_daemon"), "exporter": ("gateway", "scistream_exporter_daemon")}


def settings(caller, **values):
    role, key = CALLERS[caller]
    with open(os.path.join(ROOT, "roles", role, "vars", "main.yml"), encoding="utf-8") as handle:
        daemon = yaml.safe_load(handle)[key]
    concrete = {"home": "/opt/d", "ctl": "/opt/d/bin/d-ctl", "python": "/usr/bin/python3", "module": "pkg.server",
                "config_dir": "/etc/d", "pid_file": "/run/d-%i.pid", "log_file": "/var/log/d-%i.log", "nofile": 65536,
                "writable_paths": ["-/var/lib/d"], "create_dirs": [], "supervisor": "auto"}
    concrete.update(values)
    daemon.update(concrete)
    if caller == "s2cs":
        daemon.update(instances=["main", "b"], environment_file="/etc/d/environment")
    return daemon


def render(template, daemon):
    env = jinja2.Environment(trim_blocks=True)
    env.filters.update({"scistream.gateway." + k: v for k, v in FilterModule().filters().items()})
    env.filters["basename"] = os.path.basename
    with open(os.path.join(ROOT, "roles", "daemon", "templates", template), encoding="utf-8") as handle:
        return env.from_string(handle.read()).render(ansible_managed="test", scistream_daemon=daemon,
                                                     scistream_daemon_lib=daemon["home"] + "/lib")


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_unit_has_the_one_sandbox_and_the_files_limit(caller):
    daemon = settings(caller)
    text = render("unit.service.j2", daemon)
    service = text.split("[Service]\n", 1)[1].split("\n[Install]", 1)[0].splitlines()
    sandbox = unit_sandbox(daemon["writable_paths"], capabilities=tuple(daemon["capabilities"]),
                           address_families=tuple(daemon["address_families"]))
    assert [line for line in service if line in sandbox] == sandbox
    assert "LimitNOFILE=65536" in service and "Environment=PYTHONPATH=/opt/d/lib" in service
    if caller == "s2cs":
        assert "ExecStart=/usr/bin/python3 -m pkg.server @/etc/d/%i.args" in service
        assert "EnvironmentFile=-/etc/d/environment" in service and text.count("%i") >= 2
    else:
        assert "ExecStart=/usr/bin/python3 -m pkg.server @/etc/d/exporter.args" in service
        assert "%i" not in text and "EnvironmentFile" not in text
        assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_KILL" in service


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_ctl_script_is_shell_over_start_stop_daemon(caller, tmp_path):
    text = render("ctl.sh.j2", settings(caller))
    script = tmp_path / "ctl"
    script.write_text(text)
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "ulimit -n 65536" in text and "start-stop-daemon" in text
    assert 'pid_file="/run/d-$name.pid"' in text
    # An instance the role did not make is refused before anything runs.
    result = subprocess.run(["sh", str(script), "status", "nope"], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "no instance nope" in result.stderr
