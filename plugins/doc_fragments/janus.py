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
  janus_user:
    description:
      - User for the controller's HTTP basic authentication. A user other than C(admin) sees only what a Janus admin
        granted it (the node, the profile and the images, C(POST /auth/bulk)); see docs/janus.md.
    type: str
  janus_node:
    description: The Janus node (instance name) that runs the proxy; the module must run on that node.
    type: str
  janus_profile:
    description:
      - The Janus host profile the proxy container is created with. It must give the container host networking
        (C(mgmt_net=host)) and one bind volume, C(<state_dir>/janus/session) of the node at C(/etc/scistream/session);
        docs/janus/profiles/scistream.yml in the collection is one, in Janus's flat profile form.
      - The module checks both on the session Janus created, and fails naming the profile where they are missing.
    type: str
"""
