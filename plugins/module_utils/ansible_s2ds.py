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

import inspect

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import HAS_JINJA2
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError, quoted
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime

__all__ = ["ALL_GATEWAY_OPTIONS", "DOCKER_OPTIONS", "GATEWAY_OPTIONS", "JANUS_OPTIONS", "S2DSError", "SESSION_OPTIONS",
           "SESSION_REQUIRED_IF", "TLS_OPTIONS", "apply_sessions", "build_gateway", "docker_engine_options", "fail_from",
           "policy_from_params", "request_from_params", "require_core", "require_docker"]

DEFAULT_STATE_DIR = "/var/lib/scistream"

# Encryption between the gateways, per session (documented in the
# scistream.gateway.tls doc fragment); part of SESSION_OPTIONS below.
TLS_OPTIONS = dict(
    encryption=dict(type="str", default="none", choices=["none", "tls"]),
    tls_cert=dict(type="path"),
    tls_key=dict(type="path"),
    tls_ca=dict(type="path"),
    tls_version=dict(type="str", default="1.3", choices=["1.3", "1.2"]),
)

# The options of one session: the s2ds module's own, and each item of
# s2ds_sessions' ``sessions`` (the ONE place they are declared). Every one of
# them that SessionSpec.build takes is passed to it by name.
SESSION_OPTIONS = dict(
    uid=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    role=dict(type="str", choices=["PROD", "CONS"]),
    num_conn=dict(type="int", default=5),
    listener_ip=dict(type="str", default="0.0.0.0"),
    port_range=dict(type="str", default="5100-5200"),
    targets=dict(type="list", elements="str", default=[]),
    backend=dict(type="str", default="haproxy", choices=["haproxy", "nginx", "stunnel", "nftables"]),
    # No default: a session gets its backend's (process for the proxies, kernel for nftables).
    runtime=dict(type="str", choices=["process", "docker", "janus", "kernel"]),
    image=dict(type="str"),
    psk=dict(type="str", no_log=True),
    psk_cipher=dict(type="str", default="PSK-AES128-GCM-SHA256"),
    psk_compat=dict(type="str", choices=["scistream-1.2"]),
    template=dict(type="path"),
    **TLS_OPTIONS
)
SESSION_REQUIRED_IF = [("state", "present", ("role",))]

# Options every S2DS module shares: where the gateway keeps its state, and
# how each runtime reaches its proxies.
GATEWAY_OPTIONS = dict(
    state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
    process_supervisor=dict(type="str", default="auto", choices=["auto", "systemd", "daemon"]),
    proxy_user=dict(type="str", default="auto"),
    # Where sessions may forward (the target policy, s2ds/policy.py); None: the strict default.
    allowed_targets=dict(type="list", elements="str"),
    protected_ports=dict(type="list", elements="str"),
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


def request_from_params(session_params):
    """A core request from one session's (validated) options: a SessionSpec, or a Release for state=absent."""
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Release
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec, parse_uid
    if session_params["state"] == "absent":
        return Release(parse_uid(session_params["uid"]), session_params["runtime"] or "process")
    accepted = inspect.signature(SessionSpec.build).parameters
    return SessionSpec.build(**{name: value for name, value in session_params.items() if name in accepted})


def policy_from_params(params):
    """The target policy of ``allowed_targets`` and ``protected_ports`` (S2DSError naming the option when bad)."""
    return TargetPolicy(allow=params.get("allowed_targets"), protected_ports=params.get("protected_ports"))


def build_gateway(module, images=None):
    """A Gateway over ``state_dir`` with every runtime this host can offer.

    Runtimes are built lazily, per session, from the module's options, so a
    session of one runtime never needs the libraries of another. ``images``
    ({uid: image}) gives sessions of a batch their own image; the rest use
    the module's ``image`` option.
    """
    params = module.params
    images = images or {}

    def image_of(session):
        return images.get(session.uid, params.get("image"))

    docker_runtimes = {}

    def docker_runtime(session):
        require_docker(module)
        from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerRuntime
        image = image_of(session)
        if image not in docker_runtimes:  # one Engine connection per image, not per session
            docker_runtimes[image] = DockerRuntime(image=image, proxy_user=params.get("proxy_user"),
                                                   **docker_engine_options(params))
        return docker_runtimes[image]

    janus_runtimes = {}

    def janus_runtime(session):
        from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.janus import HAS_REQUESTS, JanusRuntime
        if not HAS_REQUESTS:
            module.fail_json(msg=missing_required_lib("requests (Debian: python3-requests)"))
        image = image_of(session)
        if image not in janus_runtimes:  # one controller login per image, not per session
            janus_runtimes[image] = JanusRuntime(
                url=params["janus_url"], user=params["janus_user"], password=params["janus_password"],
                ca_path=params["janus_ca_path"], validate_certs=params["janus_validate_certs"],
                node=params["janus_node"], profile=params["janus_profile"], image=image)
        return janus_runtimes[image]

    def kernel_runtime(session):
        # Without the binding this raises S2DSError for this session only (s2ds_info lists the others).
        from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.kernel import KernelRuntime
        return KernelRuntime()

    runtimes = {
        "process": lambda session: ProcessRuntime(params["process_supervisor"], params.get("proxy_user")),
        "docker": docker_runtime,
        "janus": janus_runtime,
        "kernel": kernel_runtime,
    }
    return Gateway(params["state_dir"], runtimes, policy=policy_from_params(params))


def fail_from(module, exc, **result):
    """Report an S2DSError: its message already names the field and value."""
    details = {}
    if getattr(exc, "field", None):
        details = {"field": exc.field}
    module.fail_json(msg=str(exc), **dict(result, **details))


def apply_sessions(module, items):
    """Validate ``items`` (dicts of SESSION_OPTIONS) one by one and apply them in one Gateway call.

    Returns the module result: ``changed``, ``sessions`` (one entry per item,
    in order, failed ones with ``msg``) and ``diff`` (a list) in diff mode.
    """
    validator = ArgumentSpecValidator(SESSION_OPTIONS, required_if=SESSION_REQUIRED_IF)
    entries = [None] * len(items)
    requests, slots, images, seen = [], [], {}, set()

    def failed(index, uid, message, field=None):
        # The uid is quoted (repr, bounded): an item that failed may hold anything, newlines included.
        entries[index] = dict(uid=uid, changed=False, failed=True, actions=[],
                              msg="sessions[%d] (uid %s): %s" % (index, quoted(uid), message), **({"field": field} if field else {}))

    for index, item in enumerate(items):
        given = {name: value for name, value in (item or {}).items() if value is not None}
        if given.get("psk"):
            module.no_log_values.add(str(given["psk"]))
        validated = validator.validate(given)
        module.no_log_values.update(validated._no_log_values)  # pylint: disable=protected-access
        uid = given.get("uid")
        if validated.unsupported_parameters:
            names = sorted(map(str, validated.unsupported_parameters))
            failed(index, uid, "unsupported option(s) %s (the options of scistream.gateway.s2ds are: %s)" % (
                ", ".join(names), ", ".join(sorted(SESSION_OPTIONS))), names[0])
            continue
        if validated.error_messages:
            failed(index, uid, "; ".join(validated.error_messages))
            continue
        try:
            request = request_from_params(validated.validated_parameters)
        except S2DSError as exc:
            failed(index, uid, str(exc), exc.field)
            continue
        if request.uid in seen:
            failed(index, uid, "uid %s is given more than once" % request.uid, "uid")
            continue
        seen.add(request.uid)
        if validated.validated_parameters.get("image"):
            images[request.uid] = validated.validated_parameters["image"]
        requests.append(request)
        slots.append(index)

    outcomes = build_gateway(module, images).apply(requests, check_mode=module.check_mode) if requests else []
    diffs = []
    for index, outcome in zip(slots, outcomes):
        if outcome.error is not None:
            failed(index, outcome.session.get("uid"), str(outcome.error), getattr(outcome.error, "field", None))
            continue
        for warning in outcome.warnings:
            module.warn(warning)
        entries[index] = dict(outcome.session, changed=outcome.changed, actions=outcome.actions, failed=False)
        if outcome.diff:
            diffs.append(outcome.diff)
    result = dict(changed=any(entry["changed"] for entry in entries), sessions=entries)
    if module._diff and diffs:  # pylint: disable=protected-access
        result["diff"] = diffs
    return result
