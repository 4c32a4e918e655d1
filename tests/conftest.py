# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared test fixtures: the collection on sys.path, playbook runs, sinks and sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, ".build")
_LINK = os.path.join(BUILD, "ansible_collections", "scistream", "gateway")
if not os.path.exists(_LINK):
    os.makedirs(os.path.dirname(_LINK), exist_ok=True)
    os.symlink(ROOT, _LINK)
sys.path.insert(0, BUILD)
sys.path.insert(0, os.path.join(ROOT, "playbooks", "files"))

import streamcheck  # noqa: E402  (playbooks/files/streamcheck.py)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.registry import make_gateway  # noqa: E402

BIN = os.path.dirname(sys.executable)


def run_playbook(playbook, extra_vars=None, check=False, diff=False, inventory=None, timeout=300):
    """Run ``ansible-playbook`` and return (returncode, parsed JSON output).

    The JSON callback gives every task's result per host and the recap stats.
    """
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1")
    argv = [os.path.join(BIN, "ansible-playbook"), playbook, "-e", json.dumps(extra_vars or {})]
    if inventory:
        argv += ["-i", inventory]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    try:
        output = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        raise AssertionError("no JSON from ansible-playbook:\n%s\n%s" % (proc.stdout[-4000:], proc.stderr[-4000:]))
    return proc.returncode, PlaybookRun(output, proc.stderr)


class PlaybookRun:
    """The parsed output of one playbook run."""

    def __init__(self, output, stderr=""):
        self.output = output
        self.stderr = stderr

    def stats(self, host="localhost"):
        return self.output["stats"][host]

    @property
    def changed(self):
        return sum(s["changed"] for s in self.output["stats"].values())

    @property
    def failed(self):
        return sum(s["failures"] + s["unreachable"] for s in self.output["stats"].values())

    def result(self, task_name, host="localhost"):
        for play in self.output["plays"]:
            for task in play["tasks"]:
                if task["task"]["name"] == task_name and host in task["hosts"]:
                    return task["hosts"][host]
        raise KeyError(task_name)

    def failures(self):
        return [(t["task"]["name"], h, r.get("msg")) for p in self.output["plays"] for t in p["tasks"]
                for h, r in t["hosts"].items() if r.get("failed")]


#: Where fake clocks start by default: seconds since the epoch (2027), far from 0 like a real deadline.
CLOCK_T0 = 1_800_000_000


class Clock:
    """A fake clock for code that takes one in ``time.time``'s shape: read it by calling, move it by ``now``."""

    def __init__(self, now=CLOCK_T0):
        self.now = now

    def __call__(self):
        return self.now


class Sink:
    """A TCP (or UDP) sink on loopback that hashes what it receives, in a thread."""

    def __init__(self, udp=False, port=0, timeout=120.0):
        self.udp = udp
        self.sock = streamcheck.open_sink("127.0.0.1", port, udp)
        self.port = self.sock.getsockname()[1]
        self.timeout = timeout
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.result = streamcheck.receive(self.sock, self.udp, self.timeout)
        except Exception as exc:  # reported by wait()
            self.error = exc

    def wait(self, timeout=None):
        self.thread.join(timeout if timeout is not None else self.timeout + 5)
        self.sock.close()
        if self.error:
            raise self.error
        return self.result


def files_under(path, ignore=("lock",)):
    """Every file below ``path`` (relative), less the gateway's lock file."""
    return sorted(os.path.relpath(os.path.join(top, name), path)
                  for top, dummy, names in os.walk(path) for name in names if name not in ignore)


_DOCKER = {}


def docker_client():
    """A Docker SDK client for the local Engine (cached)."""
    if "client" not in _DOCKER:
        import docker  # pylint: disable=import-outside-toplevel
        _DOCKER["client"] = docker.from_env()
    return _DOCKER["client"]


def docker_available():
    try:
        docker_client().ping()
        docker_client().images.get("scistream/haproxy:local")
        return True
    except Exception:  # pylint: disable=broad-exception-caught
        return False


# What each test module holds while it runs: its port block(s) and the host-wide resources it uses.
# Modules that share any of these form one xdist group (``--dist loadgroup``, pytest_xdist_make_scheduler below:
# one worker runs the group's tests one after another), so no two workers use the same block or resource at once. Every integration
# module is at least its own group (tests of one module may share ports); unit tests have none and spread.
RESOURCES = {
    "unit/test_s2cs_control.py": {"ports-41000"},
    "integration/test_chain.py": {"ports-20000"},
    "integration/test_docker.py": {"ports-23000"},
    "integration/test_tls.py": {"ports-30000"},
    "integration/test_pki.py": {"ports-30000"},
    "integration/test_s2cs.py": {"ports-31000"},
    "integration/test_s2cs_role.py": {"ports-31000"},
    "integration/test_nftables.py": {"netns-t"},
    "integration/test_scale.py": {"ports-33000"},
    "integration/test_restart.py": {"ports-33000", "systemd-container"},
    "integration/test_systemd.py": {"systemd-container"},  # systemd as PID 1 on the host's cgroup tree
    "integration/test_injection.py": {"ports-40000"},
    "integration/test_render_fuzz.py": {"ports-40000"},
    "integration/test_s2cs_hostile.py": {"ports-41000"},
    "integration/test_s2cs_globus.py": {"ports-41000"},
    "integration/test_s2cs_upstream.py": {"ports-41000"},
    "integration/test_s2cs_migration.py": {"ports-41000"},
    "integration/test_faults.py": {"ports-42000"},
    "integration/test_psk_compat.py": {"ports-42300", "ports-45000"},
    "integration/test_metrics_errors.py": {"ports-45000"},
    # the root namespace's counting table (inet scistream-count): test_metrics_verify deletes it
    "integration/test_metrics.py": {"ports-43100", "nft-count", "prometheus"},
    "integration/test_metrics_verify.py": {"ports-43100", "nft-count"},
    "integration/test_metrics_role.py": {"ports-43100"},
    "integration/test_metrics_nftables.py": {"netns-m"},
    "integration/test_janus.py": {"ports-44000", "janus"},
    "integration/test_janus_users.py": {"ports-44000", "janus"},
    "integration/test_module_behaviour.py": {"ports-46900"},
    # the counting table of the root namespace (its idle test reads it; test_metrics_verify deletes it)
    "integration/test_lifetimes.py": {"ports-47000", "nft-count"},
    "integration/test_rates.py": {"ports-49000", "netns-r"},
}


def xdist_groups(resources):
    """{module: group name}: modules joined (transitively) by a shared resource get one group."""
    group = {module: module for module in resources}

    def find(module):
        while group[module] != module:
            module = group[module]
        return module

    holders = {}
    for module in sorted(resources):
        for resource in resources[module]:
            if resource in holders:
                group[find(module)] = find(holders[resource])
            holders.setdefault(resource, module)
    members = {}
    for module in sorted(resources):
        members.setdefault(find(module), set()).update(resources[module])
    return {module: "+".join(sorted(members[find(module)])) for module in resources}


GROUPS = xdist_groups(RESOURCES)


def xdist_scope(nodeid):
    """The group a test runs in: its module's from GROUPS, its module for the other integration modules, else its own."""
    module = nodeid.split("::", 1)[0]
    module = module[len("tests/"):] if module.startswith("tests/") else module
    if module in GROUPS:
        return GROUPS[module]
    return module if module.startswith("integration/") else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` with the groups of RESOURCES.

    xdist's own loadgroup reads ``xdist_group`` markers by renaming node ids, which pytest 9 no longer
    allows; its scope scheduler with this module's ``xdist_scope`` does the same, from the table.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling  # pylint: disable=import-outside-toplevel

    class ResourceGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return xdist_scope(nodeid)

    return ResourceGroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Integration tests first under xdist (their groups are the long ones; unit tests fill the gaps);
    docker tests are skipped, with the reason, where no Engine or images are here."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: not xdist_scope(item.nodeid).startswith(("integration/", "ports-", "janus", "netns")))
    if any(item.get_closest_marker("docker") for item in items) and not docker_available():
        skip = pytest.mark.skip(reason="no Docker Engine with the scistream/*:local images (run .ci/setup)")
        for item in items:
            if item.get_closest_marker("docker"):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def release_leftovers(tmp_path):
    """After each test, release whatever sessions its state dirs still hold.

    A test that fails half-way would otherwise leave proxies running (and
    ports taken) for the tests after it. Tests still release through the
    module and assert that themselves; this is only the safety net.
    """
    yield
    for top, dirs, dummy in os.walk(str(tmp_path)):
        if "sessions" in dirs and os.path.exists(os.path.join(top, "lock")):
            gateway = make_gateway(top, dict(process_supervisor="daemon"), runtimes=("process", "docker"))
            for record in gateway.store.all():
                if record.runtime in gateway.runtimes:
                    try:
                        gateway.absent(record.uid)
                    except Exception:  # pylint: disable=broad-exception-caught
                        pass


@pytest.fixture
def uid():
    return str(uuid.uuid4())


@pytest.fixture
def sink():
    sinks = []

    def make(**kwargs):
        s = Sink(**kwargs)
        sinks.append(s)
        return s

    yield make
    for s in sinks:
        s.sock.close()


@pytest.fixture
def pki(tmp_path):
    """A CA and a server certificate for 127.0.0.1 / localhost (tests/s2cs_real.py)."""
    import s2cs_real  # pylint: disable=import-outside-toplevel
    return s2cs_real.make_pki(tmp_path)


@pytest.fixture
def servers(pki, tmp_path):  # pylint: disable=redefined-outer-name
    """Start real S2CS servers: ``servers(name, port, port_range, **kwargs)``; all stopped after the test."""
    import s2cs_real  # pylint: disable=import-outside-toplevel
    started = []

    def start(name, port, port_range, **kwargs):
        server = s2cs_real.Server(pki, tmp_path / name, port, port_range, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def s2cs_wheels(tmp_path_factory):
    """One controller-side wheelhouse for every test that runs the s2cs role (its download is made once a run)."""
    return str(tmp_path_factory.mktemp("s2cs-wheels"))


@pytest.fixture(scope="session")
def janus_controller(tmp_path_factory):
    """The run's one real Janus controller (tests/janus_real.py), admin, ports 44000-44099."""
    import janus_real  # pylint: disable=import-outside-toplevel
    if not janus_real.janus_installed():
        pytest.skip("no janus-dtnaas venv (.venv-janus; run .ci/setup)")
    controller = janus_real.start_controller(tmp_path_factory.mktemp("janus-real"))
    try:
        yield controller
    finally:
        controller.close()
