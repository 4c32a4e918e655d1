# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """How the S2DS modules reach an ESnet Janus controller."""

    DOCUMENTATION = r"""
options:
  janus_url:
    description:
      - Base URL of the Janus controller for O(scistream.gateway.s2ds#module:runtime=janus), for example
        C(https://janus.facility.org:5000); the API path C(/api/janus/controller) is added when missing.
    type: str
  janus_user:
    description: User for the controller's HTTP basic authentication.
    type: str
  janus_password:
    description: Password of O(janus_user). Never logged and never part of an error message.
    type: str
  janus_ca_path:
    description: CA certificate that signed the controller's TLS certificate (self-signed deployments).
    type: path
  janus_validate_certs:
    description:
      - Verify the controller's TLS certificate. Turn it off only for a test controller; prefer O(janus_ca_path).
    type: bool
    default: true
  janus_node:
    description: The Janus node (instance name) that runs the proxy; the module must run on that node.
    type: str
  janus_profile:
    description:
      - The Janus profile the proxy container is created with. It must give the container host networking
        and mount C(<state_dir>/run) of the node read-only at C(/etc/scistream/sessions); see the README.
    type: str
"""
