# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """How the S2DS modules reach a Docker Engine (names as in community.docker)."""

    DOCUMENTATION = r"""
options:
  docker_host:
    description:
      - The Docker endpoint for O(scistream.gateway.s2ds#module:runtime=docker), for example
        C(unix:///run/docker.sock) or C(tcp://gateway-a:2376). Defaults to the environment's E(DOCKER_HOST),
        else the local socket.
      - The session's config directory is bind-mounted, so it must be on the Docker host; with a remote
        endpoint, run the module on that host.
    type: str
  tls:
    description: Use TLS to reach O(docker_host) (implied by O(ca_path), O(client_cert) or O(client_key)).
    type: bool
    default: false
  validate_certs:
    description: Verify the Docker endpoint's certificate.
    type: bool
    default: true
  ca_path:
    description: CA certificate that signed the Docker endpoint's certificate.
    type: path
  client_cert:
    description: Client certificate for a TLS Docker endpoint.
    type: path
  client_key:
    description: Key of O(client_cert).
    type: path
"""
