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
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import session
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError, quoted
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes import registry
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.registry import DEFAULT_STATE_DIR, STATE_DIR_OPTION

__all__ = ["ALL_GATEWAY_OPTIONS", "DEFAULT_STATE_DIR", "DOCKER_OPTIONS", "GATEWAY_OPTIONS", "JANUS_OPTIONS", "S2DSError", "SESSION_OPTIONS",
           "SESSION_REQUIRED_IF", "TLS_OPTIONS", "apply_sessions", "docker_engine_options", "fail_from",
           "module_gateway", "policy_from_params", "request_from_params", "require_core", "require_docker"]

# Encryption between the gateways, per session (documented in the
# scistream.gateway.tls doc fragment); part of SESSION_OPTIONS below.
TLS_OPTIONS = dict(
    encryption=dict(type="str", default=session.DEFAULTS["encryption"], choices=list(session.ENCRYPTIONS)),
    tls_cert=dict(type="path"),
    tls_key=dict(type="path"),
    tls_ca=dict(type="path"),
    tls_version=dict(type="str", default=session.DEFAULTS["tls_version"], choices=list(session.TLS_VERSIONS)),
)

# The options of one session: the s2ds module's own, and each item of
# s2ds_sessions' ``sessions`` (the ONE place they are declared). Every one of
# them that SessionSpec.build takes is passed to it by name; defaults and
# choices are the grammar's (session.py).
SESSION_OPTIONS = dict(
    uid=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    role=dict(type="str", choices=list(session.ROLES)),
    num_conn=dict(type="int", default=session.DEFAULTS["num_conn"]),
    listener_ip=dict(type="str", default=session.DEFAULTS["listener_ip"]),
    port_range=dict(type="str", default=session.DEFAULTS["port_range"]),
    targets=dict(type="list", elements="str", default=[]),
    backend=dict(type="str", default=session.DEFAULTS["backend"], choices=list(session.BACKENDS)),
    # No default: a session gets its backend's (process for the proxies, kernel for nftables).
    runtime=dict(type="str", choices=list(registry.RUNTIMES)),
    image=dict(type="str"),
    psk=dict(type="str", no_log=True),
    psk_cipher=dict(type="str", default=session.DEFAULTS["psk_cipher"]),
    psk_compat=dict(type="str", choices=["scistream-1.2"]),
    template=dict(type="path"),
    # Durations (90s, 30m, 12h, 7d; the grammar's parse_duration): a str, so that 3600 and "1h" both arrive as text.
    lifetime=dict(type="str"),
    idle_timeout=dict(type="str"),
    # A rate with its unit (500Mbit, 2Gbit, 20MB/s; the grammar's parse_rate).
    rate=dict(type="str"),
    **TLS_OPTIONS
)
SESSION_REQUIRED_IF = [("state", "present", ("role",))]

# Options every S2DS module shares: where the gateway keeps its state, and
# how each runtime reaches its proxies (declared with the runtimes, in runtimes/registry.py).
# Where sessions may forward (the target policy, s2ds/policy.py; the gateway doc fragment): None is the strict default.
POLICY_OPTIONS = dict(
    allowed_targets=dict(type="list", elements="str"),
    protected_ports=dict(type="list", elements="str"),
    # The egress devices sessions' rates are enforced on (s2ds/shaping.py): None is the default routes' devices.
    rate_devices=dict(type="list", elements="str"),
)
GATEWAY_OPTIONS = dict(STATE_DIR_OPTION, **dict(registry.options_of("process"), **POLICY_OPTIONS))
DOCKER_OPTIONS = registry.options_of("docker")
JANUS_OPTIONS = registry.options_of("janus")

# Every option a module that drives a Gateway takes.
ALL_GATEWAY_OPTIONS = dict(STATE_DIR_OPTION, **dict(registry.options_of(), **POLICY_OPTIONS))


def docker_engine_options(params):
    return {name: params[name] for name in DOCKER_OPTIONS}


def require_core(module):
    if not HAS_JINJA2:
        module.fail_json(msg=missing_required_lib("Jinja2 (python3-jinja2)"))


def require_docker(module):
    # Imported here, not at the top: the Docker SDK costs ~0.1 s to import,
    # which runs that never touch a container should not pay.
    library = registry.RUNTIMES["docker"].missing_library()
    if library:
        module.fail_json(msg=missing_required_lib(library))


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


def module_gateway(module, images=None):
    """A Gateway over the module's ``state_dir`` with every runtime (registry.make_gateway), built lazily per
    session from the module's options; a runtime whose library is missing fails the module, naming it.
    ``images`` ({uid: image}) gives sessions of a batch their own image; the rest use the ``image`` option."""
    return registry.make_gateway(module.params["state_dir"], module.params, images=images,
                                 missing_library=lambda name, library: module.fail_json(msg=missing_required_lib(library)),
                                 policy=policy_from_params(module.params),
                                 rate_devices=session.parse_devices("rate_devices", module.params.get("rate_devices")))


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

    outcomes = module_gateway(module, images).apply(requests, check_mode=module.check_mode) if requests else []
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
