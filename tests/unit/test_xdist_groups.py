# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The parallel run's groups (tests/conftest.py RESOURCES): modules that share a port block or a host resource run on one worker."""

from __future__ import annotations

import os

from conftest import GROUPS, RESOURCES, ROOT, xdist_groups, xdist_scope


def test_modules_sharing_a_resource_share_a_group_transitively():
    groups = xdist_groups({"a.py": {"p1"}, "b.py": {"p1", "r"}, "c.py": {"r"}, "d.py": {"p2"}})
    assert groups["a.py"] == groups["b.py"] == groups["c.py"] == "p1+r"
    assert groups["d.py"] == "p2"


def test_every_module_in_the_table_exists():
    assert [m for m in RESOURCES if not os.path.exists(os.path.join(ROOT, "tests", m))] == []


def test_scopes():
    assert xdist_scope("tests/integration/test_janus_users.py::test_x") == GROUPS["integration/test_janus.py"]
    assert xdist_scope("tests/unit/test_s2cs_control.py::test_y") == GROUPS["integration/test_s2cs_hostile.py"]
    assert xdist_scope("tests/integration/test_new.py::test_z[1]") == "integration/test_new.py"  # not in the table: its own
    assert xdist_scope("tests/unit/test_ports.py::test_w") == "tests/unit/test_ports.py::test_w"  # unit tests spread
