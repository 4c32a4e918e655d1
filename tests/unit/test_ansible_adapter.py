# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The modules' adapter: a missing library is a clear missing_required_lib failure."""

from __future__ import annotations

import pytest

from ansible_collections.scistream.gateway.plugins.module_utils import ansible_s2ds
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes import docker as docker_runtime


class Failed(Exception):
    pass


class FakeModule:
    def __init__(self, **params):
        self.params = dict(state_dir="/nonexistent", process_supervisor="daemon", image=None,
                           **{name: None for name in ansible_s2ds.DOCKER_OPTIONS})
        self.params.update(params)

    def fail_json(self, **result):
        raise Failed(result["msg"])


def test_missing_docker_sdk_is_named(monkeypatch):
    monkeypatch.setattr(docker_runtime, "HAS_DOCKER", False)
    with pytest.raises(Failed) as err:
        ansible_s2ds.require_docker(FakeModule())
    assert "docker" in str(err.value) and "python3-docker" in str(err.value)


def test_missing_jinja2_is_named(monkeypatch):
    monkeypatch.setattr(ansible_s2ds, "HAS_JINJA2", False)
    with pytest.raises(Failed) as err:
        ansible_s2ds.require_core(FakeModule())
    assert "Jinja2" in str(err.value)


def test_the_docker_runtime_is_built_only_when_asked(monkeypatch):
    monkeypatch.setattr(docker_runtime, "HAS_DOCKER", False)
    gateway = ansible_s2ds.module_gateway(FakeModule())
    # A process session never touches the Docker SDK ...
    assert gateway.runtimes["process"](None).name == "process"
    # ... a docker session fails with the library named.
    with pytest.raises(Failed):
        gateway.runtimes["docker"](None)
