# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shipped alert rules pass Prometheus' own checker and their unit tests (promtool, Debian's prometheus)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

PROMTOOL = shutil.which("promtool")
RULES = os.path.join(ROOT, "files", "prometheus", "scistream.rules.yml")
RULE_TESTS = os.path.join(ROOT, "tests", "unit", "prometheus", "scistream.rules.test.yml")
DASHBOARD = os.path.join(ROOT, "files", "grafana", "scistream.json")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt install prometheus)")


@needs_promtool
def test_promtool_check_rules():
    proc = subprocess.run([PROMTOOL, "check", "rules", RULES], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 10 rules found" in proc.stdout


@needs_promtool
def test_promtool_test_rules():
    proc = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_of_the_issue_is_there():
    text = open(RULES, encoding="utf-8").read()
    for alert in ("ScistreamSessionDown", "ScistreamListenerNotListening", "ScistreamSessionStalled",
                  "ScistreamControlServerErrors", "ScistreamExporterDown"):
        assert "alert: %s\n" % alert in text


def test_dashboard_is_grafana_json_with_expressions():
    dashboard = json.load(open(DASHBOARD, encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8 and all(e.strip() for e in exprs)
    assert {p["type"] for p in dashboard["panels"]} <= {"stat", "timeseries", "table"}
