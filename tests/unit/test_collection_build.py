# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What Galaxy gets: the collection tarball built in a checkout where .ci/setup and the tests ran.

Built twice: from this checkout as it is (its venv links, .build, caches), and from a copy of the
tracked files with every local artefact the project's tools leave planted in it. Also the
READMEs of the roles against their argument specs, and the s2ds action group against the modules.
"""

from __future__ import annotations

import fnmatch
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GALAXY = os.path.join(os.path.dirname(sys.executable), "ansible-galaxy")

# Left behind by .ci/setup, pytest, hypothesis, ansible-lint, ansible-test, ansible-builder, the benchmarks.
ARTEFACTS = [
    ".venv/bin/python", ".venv-janus/bin/python", ".venv-galaxy/bin/python", ".build/sanity/x",
    ".hypothesis/examples/x", ".pytest_cache/v/x", "tests/unit/.pytest_cache/x", ".ansible/roles/x",
    "tests/output/junit/x.xml", "bench/results/x.json", "context/Containerfile", ".cache/x",
    "plugins/module_utils/__pycache__/x.cpython-311.pyc", "roles/gateway/tasks/x.retry", "ansible-navigator.log",
    "scistream-gateway-0.0.1.tar.gz", ".ci/x",
]
NEVER = [
    ".venv*", ".build*", "*.hypothesis*", "*.pytest_cache*", "*.ansible/*", "*__pycache__*", "*.pyc", "tests/output*",
    "bench*", "context*", ".cache*", ".ci*", ".git*", "ansible.cfg", "pytest.ini", ".ansible-lint*", "*.tar.gz",
    "*.retry", "*.log",
]
ALWAYS = [
    "MANIFEST.json", "FILES.json", "README.md", "COPYING", "execution-environment.yml", "meta/runtime.yml",
    "meta/execution-environment.yml", "meta/ee-requirements.txt", "meta/bindep.txt", "changelogs/changelog.yaml",
    "changelogs/config.yaml", "plugins/module_utils/s2cs/protocol.py", "images/haproxy/Dockerfile", "playbooks/deploy.yml",
] + ["roles/%s/README.md" % role for role in ("docker", "gateway", "pki", "s2cs")]


def _build(source, output):
    proc = subprocess.run([GALAXY, "collection", "build", source, "--output-path", str(output), "--force"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    [tarball] = glob.glob(os.path.join(str(output), "scistream-gateway-*.tar.gz"))
    with tarfile.open(tarball) as tar:
        return sorted(member.name.rstrip("/") for member in tar.getmembers())


def _tracked_copy(destination):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = os.path.join(ROOT, name)
        if os.path.lexists(source) and not os.path.isdir(source):
            os.makedirs(os.path.join(destination, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(source, os.path.join(destination, name), follow_symlinks=False)


def _check(names):
    shipped = [name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in NEVER)]
    assert not shipped, "local artefacts in the tarball: %s" % shipped[:20]
    missing = [name for name in ALWAYS if name not in names]
    assert not missing, "missing from the tarball: %s" % missing
    # Big files would be a sign of something picked up by mistake (a venv, a capture).
    assert len(names) < 400, len(names)


def test_tarball_from_this_checkout(tmp_path):
    names = _build(ROOT, tmp_path)
    _check(names)
    print("\n".join(names))


def test_tarball_with_every_artefact_planted(tmp_path):
    source = tmp_path / "src"
    _tracked_copy(str(source))
    for artefact in ARTEFACTS:
        path = source / artefact
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("artefact\n")
    os.symlink("/usr", str(source / ".venv-link"))
    names = _build(str(source), tmp_path / "out")
    _check(names)


def _role_readmes():
    spec = importlib.util.spec_from_file_location("role_readmes", os.path.join(ROOT, ".ci", "role_readmes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("role", ["docker", "gateway", "pki", "s2cs"])
def test_role_readme_lists_every_variable(role):
    """Each role's README names every argument-spec variable with its default (.ci/role_readmes.py)."""
    readmes = _role_readmes()
    path, current, wanted = readmes.render(role, ROOT)
    assert current == wanted, "%s is out of date: run python .ci/role_readmes.py" % path
    for name, spec in readmes.variables(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml")):
        assert "| `%s` |" % name in current, name
    for heading in ("## Requirements", "## Role variables", "## Example playbook", "## License"):
        assert heading in current


def test_s2ds_action_group_holds_every_gateway_module():
    """module_defaults for group/scistream.gateway.s2ds reach every module with the gateway options."""
    with open(os.path.join(ROOT, "meta", "runtime.yml")) as handle:
        group = yaml.safe_load(handle)["action_groups"]["s2ds"]
    gateway_modules = []
    for path in sorted(glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py"))):
        with open(path) as handle:
            if re.search(r"^  - scistream\.gateway\.gateway$", handle.read(), re.M):
                gateway_modules.append(os.path.basename(path)[:-3])
    assert sorted(group) == gateway_modules
