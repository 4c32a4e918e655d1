# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 21 item 1: the runtime registry is the one source of the runtimes' options.

The modules' argument specs are built from it; the doc fragments and the
control server's command line must agree with it (this test), and
make_gateway passes the Gateway's counter down to the runtimes' traffic.
"""

from __future__ import annotations

import importlib

import pytest
import yaml

from ansible_collections.scistream.gateway.plugins.module_utils import ansible_s2ds
from ansible_collections.scistream.gateway.plugins.module_utils.s2cs import server
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes import registry
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import Runtime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord

#: Which doc fragment documents the options of which runtime (state_dir is the gateway fragment's).
FRAGMENTS = {"gateway": ("process",), "docker": ("docker",), "janus": ("janus",)}


def fragment_options(name):
    module = importlib.import_module("ansible_collections.scistream.gateway.plugins.doc_fragments." + name)
    return yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)["options"]


@pytest.mark.parametrize("fragment", sorted(FRAGMENTS))
def test_doc_fragments_agree_with_the_registry(fragment):
    documented = fragment_options(fragment)
    declared = registry.options_of(*FRAGMENTS[fragment])
    if fragment == "gateway":  # the state dir and the target policy are the gateway's, not a runtime's
        declared = dict(registry.STATE_DIR_OPTION, **dict(declared, **ansible_s2ds.POLICY_OPTIONS))
    assert sorted(documented) == sorted(declared)
    for name, spec in declared.items():
        doc = documented[name]
        assert doc["type"] == spec["type"], name
        assert doc.get("default") == spec.get("default"), name
        assert doc.get("choices") == spec.get("choices"), name


def test_the_module_specs_are_the_registry():
    assert ansible_s2ds.GATEWAY_OPTIONS == dict(registry.STATE_DIR_OPTION, **dict(registry.options_of("process"),
                                                                                  **ansible_s2ds.POLICY_OPTIONS))
    assert ansible_s2ds.DOCKER_OPTIONS == registry.options_of("docker")
    assert ansible_s2ds.JANUS_OPTIONS == registry.options_of("janus")
    assert ansible_s2ds.ALL_GATEWAY_OPTIONS == dict(registry.STATE_DIR_OPTION, **dict(registry.options_of(),
                                                                                      **ansible_s2ds.POLICY_OPTIONS))
    assert registry.options_of()["janus_password"]["no_log"] is True


def test_the_server_command_line_takes_every_option_of_its_runtimes():
    args = server.parser().parse_args([])
    for name, spec in registry.options_of(*server.SERVER_RUNTIMES).items():
        assert getattr(args, name) == spec.get("default"), name
    args = server.parser().parse_args(["--docker-host", "tcp://engine:2376", "--proxy_user", "root", "--tls", "true",
                                       "--process_supervisor", "daemon"])
    wanted = ("tcp://engine:2376", "root", True, "daemon")
    assert (args.docker_host, args.proxy_user, args.tls, args.process_supervisor) == wanted
    with pytest.raises(SystemExit):
        server.parser().parse_args(["--process_supervisor", "init"])


def test_the_server_docker_runtime_gets_docker_host_and_proxy_user():
    args = server.parser().parse_args(["--docker_host", "tcp://engine:2376", "--proxy_user", "root",
                                       "--state_dir", "/nonexistent", "--image", "haproxy:x"])
    gateway = server.build_gateway(args)
    assert sorted(gateway.runtimes) == ["docker", "process"]
    runtime = gateway.runtimes["docker"](None)
    assert runtime.engine_options["docker_host"] == "tcp://engine:2376" and runtime.account is None
    assert runtime.image == "haproxy:x" and runtime.local_network is False


def test_one_runtime_per_image_and_batch_images(tmp_path):
    gateway = registry.make_gateway(str(tmp_path), {"image": "a"}, images={"u2": "b"})

    class Spec:
        def __init__(self, uid):
            self.uid = uid

    first, again, other = (gateway.runtimes["docker"](Spec(uid)) for uid in ("u1", "u3", "u2"))
    assert first is again and first.image == "a" and other.image == "b"
    assert gateway.runtimes["process"](Spec("u1")) is gateway.runtimes["process"](Spec("u2"))


def test_a_missing_library_is_reported_for_its_runtime_only(tmp_path, monkeypatch):
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes import janus
    monkeypatch.setattr(janus, "HAS_REQUESTS", False)
    gateway = registry.make_gateway(str(tmp_path))
    assert gateway.runtimes["process"](None).name == "process"
    with pytest.raises(S2DSError, match="python3-requests"):
        gateway.runtimes["janus"](None)


def test_traffic_reads_the_gateway_counter(tmp_path):
    class Counter:
        available, reason = True, None

        def read(self, record):
            return [{"listener": record.listeners[0], "port": record.ports[0], "bytes_in": 7}]

    class Local(Runtime):
        name = "process"

        def paths(self, store, record):
            return {"run_dir": store.run_dir(record.uid), "log_file": None, "stats_socket": None}

        def is_running(self, backend, store, record):
            return False

    counter = Counter()
    gateway = registry.make_gateway(str(tmp_path), counter=counter)
    assert gateway.counter is counter
    record = SessionRecord(uid="u", role="PROD", backend="haproxy", runtime="process", listener_ip="127.0.0.1",
                           ports=[43001], targets=["127.0.0.1:1"])
    gateway.store.save(record)
    gateway.runtimes["process"] = lambda session: Local()
    traffic = gateway.sessions()[0]["traffic"]
    assert traffic[0]["bytes_in"] == 7
