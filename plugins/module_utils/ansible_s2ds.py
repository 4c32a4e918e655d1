# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Ansible side of the S2DS modules: option specs and parameter mapping.

The core (module_utils/s2ds) knows nothing of Ansible; this file turns
module parameters into a Gateway with its runtimes, and S2DSError into
``fail_json``. It is private to this collection.
"""

from __future__ import annotations

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import HAS_JINJA2
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime

__all__ = ["ALL_GATEWAY_OPTIONS", "DOCKER_OPTIONS", "GATEWAY_OPTIONS", "JANUS_OPTIONS", "S2DSError", "build_gateway", "docker_engine_options", "fail_from",
           "require_core", "require_docker"]

DEFAULT_STATE_DIR = "/var/lib/scistream"

# Options every S2DS module shares: where the gateway keeps its state, and
# how each runtime reaches its proxies.
GATEWAY_OPTIONS = dict(
    state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
    process_supervisor=dict(type="str", default="auto", choices=["auto", "systemd", "daemon"]),
)

# How to reach a Docker Engine (names as in community.docker).
DOCKER_OPTIONS = dict(
    docker_host=dict(type="str"),
    tls=dict(type="bool", default=False),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    client_cert=dict(type="path"),
    client_key=dict(type="path"),
)

# How to reach an ESnet Janus controller.
JANUS_OPTIONS = dict(
    janus_url=dict(type="str"),
    janus_user=dict(type="str"),
    janus_password=dict(type="str", no_log=True),
    janus_ca_path=dict(type="path"),
    janus_validate_certs=dict(type="bool", default=True),
    janus_node=dict(type="str"),
    janus_profile=dict(type="str"),
)

# Every option a module that drives a Gateway takes.
ALL_GATEWAY_OPTIONS = dict(GATEWAY_OPTIONS, **dict(DOCKER_OPTIONS, **JANUS_OPTIONS))


def docker_engine_options(params):
    return {name: params[name] for name in DOCKER_OPTIONS}


def require_core(module):
    if not HAS_JINJA2:
        module.fail_json(msg=missing_required_lib("Jinja2 (python3-jinja2)"))


def require_docker(module):
    # Imported here, not at the top: the Docker SDK costs ~0.1 s to import,
    # which runs that never touch a container should not pay.
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import HAS_DOCKER
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker (the Docker SDK for Python; Debian: python3-docker)"))


def build_gateway(module):
    """A Gateway over ``state_dir`` with every runtime this host can offer.

    Runtimes are built lazily, per session, from the module's options, so a
    session of one runtime never needs the libraries of another.
    """
    params = module.params

    def docker_runtime(session):
        require_docker(module)
        from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerRuntime
        return DockerRuntime(image=params.get("image"), **docker_engine_options(params))

    def janus_runtime(session):
        from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.janus import HAS_REQUESTS, JanusRuntime
        if not HAS_REQUESTS:
            module.fail_json(msg=missing_required_lib("requests (Debian: python3-requests)"))
        return JanusRuntime(url=params["janus_url"], user=params["janus_user"], password=params["janus_password"],
                            ca_path=params["janus_ca_path"], validate_certs=params["janus_validate_certs"],
                            node=params["janus_node"], profile=params["janus_profile"], image=params.get("image"))

    def kernel_runtime(session):
        from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.kernel import HAS_NFTABLES, KernelRuntime
        if not HAS_NFTABLES:
            module.fail_json(msg=missing_required_lib(
                "nftables (the libnftables Python binding; Debian: python3-nftables, importable from the "
                "distribution's Python: set ansible_python_interpreter=/usr/bin/python3)"))
        return KernelRuntime()

    runtimes = {
        "process": lambda session: ProcessRuntime(params["process_supervisor"]),
        "docker": docker_runtime,
        "janus": janus_runtime,
        "kernel": kernel_runtime,
    }
    return Gateway(params["state_dir"], runtimes)


def fail_from(module, exc, **result):
    """Report an S2DSError: its message already names the field and value."""
    details = {}
    if getattr(exc, "field", None):
        details = {"field": exc.field}
    module.fail_json(msg=str(exc), **dict(result, **details))
