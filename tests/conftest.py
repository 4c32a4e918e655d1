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
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime  # noqa: E402

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

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


def pytest_collection_modifyitems(config, items):
    """Tests marked docker are skipped, with the reason, where no Engine or images are here."""
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
    runtimes = {"process": lambda session: ProcessRuntime("daemon"), "docker": lambda session: DockerRuntime()}
    for top, dirs, dummy in os.walk(str(tmp_path)):
        if "sessions" in dirs and os.path.exists(os.path.join(top, "lock")):
            gateway = Gateway(top, runtimes, policy=LOOPBACK_POLICY)
            for record in gateway.store.all():
                if record.runtime in runtimes:
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
