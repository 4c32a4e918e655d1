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

__all__ = ["GATEWAY_OPTIONS", "S2DSError", "build_gateway", "fail_from", "require_core"]

DEFAULT_STATE_DIR = "/var/lib/scistream"

# Options every S2DS module shares: where the gateway keeps its state, and
# how each runtime reaches its proxies.
GATEWAY_OPTIONS = dict(
    state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
    process_supervisor=dict(type="str", default="auto", choices=["auto", "systemd", "daemon"]),
)


def require_core(module):
    if not HAS_JINJA2:
        module.fail_json(msg=missing_required_lib("Jinja2 (python3-jinja2)"))


def build_gateway(module):
    """A Gateway over ``state_dir`` with every runtime this host can offer."""
    params = module.params
    runtimes = {
        "process": lambda session: ProcessRuntime(params["process_supervisor"]),
    }
    return Gateway(params["state_dir"], runtimes)


def fail_from(module, exc, **result):
    """Report an S2DSError: its message already names the field and value."""
    details = {}
    if getattr(exc, "field", None):
        details = {"field": exc.field}
    module.fail_json(msg=str(exc), **dict(result, **details))
