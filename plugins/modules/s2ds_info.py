#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: s2ds_info
short_description: List SciStream S2DS sessions on a gateway and whether they are healthy
version_added: 0.1.0
description:
  - Reads the session records under O(state_dir) and checks each session's proxy.
  - A session is healthy when its proxy runs and every listener is listening; a session with no
    targets yet (ports reserved, no proxy) is reported healthy and not running.
  - A session of backend C(nftables) runs, and is healthy, while its rules are in the kernel exactly as last applied.
  - RV(sessions[].traffic) gives every session's counts per listener, the same way for every backend and runtime whose
    listeners are on this host (bytes and packets in and out, connections, resets) from kernel counters (an nftables
    table C(inet scistream-count) of the collection's own, kept by the S2DS modules; the C(nftables) backend's own
    rules for its sessions), plus what the proxy reports of failed connections. They need the nftables Python
    binding and root, so run the modules with the distribution's Python (C(ansible_python_interpreter=/usr/bin/python3)).
    Where the counters cannot be read, that session gets RV(sessions[].traffic_error) instead and the others are
    reported as usual; a session of backend C(nftables) under a Python without the binding gets RV(sessions[].error).
  - A session whose record cannot be read is listed with RV(sessions[].broken) and RV(sessions[].error), not healthy;
    the others are checked as usual.
  - With the C(daemon) process supervisor (no systemd) nothing restarts a proxy after the host reboots until the next
    C(present) run; until then its sessions are reported not running.
author:
  - SciStream gateway contributors (@scistream)
extends_documentation_fragment:
  - scistream.gateway.gateway
  - scistream.gateway.docker
  - scistream.gateway.janus
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: This module changes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
options:
  uid:
    description: Only this session.
    type: str
seealso:
  - module: scistream.gateway.s2ds
"""

EXAMPLES = r"""
- name: Check every session on the gateway
  scistream.gateway.s2ds_info:
  register: gw

- name: Fail when a session is unhealthy
  ansible.builtin.assert:
    that: gw.sessions | rejectattr('healthy') | list | length == 0
    fail_msg: "Unhealthy: {{ gw.sessions | rejectattr('healthy') | map(attribute='uid') | list }}"
"""

RETURN = r"""
sessions:
  description: One entry per session.
  returned: always
  type: list
  elements: dict
  contains:
    uid:
      description: The session id.
      type: str
      sample: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
    role:
      description: V(PROD) or V(CONS).
      type: str
    backend:
      description: The proxy.
      type: str
    runtime:
      description: Where the proxy runs.
      type: str
    listeners:
      description: The session's listeners, C(ip:port).
      type: list
      elements: str
    ports:
      description: The reserved ports.
      type: list
      elements: int
    targets:
      description: Where the listeners forward to.
      type: list
      elements: str
    encryption:
      description: V(tls) when the gateways of the session speak mutual TLS to each other, else V(none).
      type: str
    owner:
      description:
        - Who made the session through a control server (S2CS), never a secret. C(token-sha256:<hex>) is the
          SHA-256 of the bearer token, C(globus:<sub>) a Globus Auth identity, C(hook:<text>) what the auth hook
          returned, C(peer:<address>) the client's address when authentication is off. Null for sessions the
          M(scistream.gateway.s2ds) module made.
      type: str
    lifetime:
      description: The session's lifetime in seconds (renewed by its owner's req, hello or update and by a run that
        changes it), null for none.
      type: int
    idle_timeout:
      description: The session's idle timeout in seconds, null for none.
      type: int
    expires_at:
      description: When the session's lifetime ends, in seconds since the epoch; null for never.
      type: int
    expires_in:
      description:
        - Seconds from now until the session expires, by its lifetime or its idle timeout (no byte counted through
          its listeners since the last check), whichever comes first; 0 when it is due. Null for never.
        - The control server's loop, or the exporter's, releases it then; see C(docs/lifetimes.md).
      type: int
      sample: 1800
    expires_reason:
      description: Why it expires then, V(lifetime) or V(idle); null for never.
      type: str
      sample: lifetime
    rate:
      description: The session's rate in bits per second (enforced on the gateway's O(rate_devices)), null for none.
      type: int
      sample: 500000000
    config_path:
      description: The rendered configuration, or null without targets.
      type: str
    running:
      description: Whether the proxy runs.
      type: bool
    healthy:
      description: Proxy running and every listener listening (backend nftables, its rules in place).
      type: bool
    traffic:
      description:
        - Per listener, in order, what the kernel counted on its port since counting began (the session's start, or
          the run that set its counters up again), and the connections open now.
        - C(bytes_in) / C(packets_in) is what clients sent to the listener, C(bytes_out) / C(packets_out) what went
          back, counted as whole IP packets, headers included. C(connections) counts accepted TCP connections (SYN-ACKs sent),
          C(connection_attempts) the SYNs received, C(resets_in) / C(resets_out) TCP resets received and sent.
        - C(errors) is the proxy's own count of failed connections by reason (C(target), C(tls_handshake), C(reset),
          C(request), C(response)), from HAProxy's stats socket or the NGINX and stunnel logs in the run dir; null where
          the proxy keeps no such report on this host (containers, whose logs go to Docker).
        - Backend C(nftables) gives C(bytes), C(packets), their C(_in) / C(_out) parts (the connections' original and
          reply direction), TCP and UDP.
      type: list
      elements: dict
      returned: for sessions with targets whose counters could be read
      sample:
        - {listener: 10.0.2.2:5100, port: 5100, bytes_in: 209912345, bytes_out: 1203456, packets_in: 140123,
           packets_out: 70012, connections: 1, connection_attempts: 1, resets_in: 0, resets_out: 0, active_connections: 1,
           errors: {target: 0, tls_handshake: 0, reset: 0, request: 0, response: 0}}
    traffic_error:
      description: Why this session's counters cannot be read (no nftables binding in this Python, not root, or not
        counted yet); the session's other fields are unaffected.
      type: str
      returned: when its counters cannot be read
    not_listening:
      description: The session's ports with no listening socket now (local runtimes).
      type: list
      elements: int
      returned: for sessions whose listeners are on this host
    broken:
      description: True for a session whose record cannot be read; only RV(sessions[].uid), RV(sessions[].record_path)
        and RV(sessions[].error) are known then. Release it with O(scistream.gateway.s2ds#module:state=absent).
      type: bool
      returned: for a broken record
    record_path:
      description: The broken record's file.
      type: str
      returned: for a broken record
    error:
      description: Why the session cannot be checked (the broken record's file and fault, or the runtime's error).
      type: str
      returned: when there is one
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.scistream.gateway.plugins.module_utils.ansible_s2ds import (
    ALL_GATEWAY_OPTIONS,
    S2DSError,
    module_gateway,
    fail_from,
    require_core,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(uid=dict(type="str"), **ALL_GATEWAY_OPTIONS),
        supports_check_mode=True,
    )
    require_core(module)
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import parse_uid

    try:
        uid = parse_uid(module.params["uid"]) if module.params["uid"] is not None else None
        sessions = module_gateway(module).sessions(uid)
    except S2DSError as exc:
        fail_from(module, exc, sessions=[])
    module.exit_json(changed=False, sessions=sessions)


if __name__ == "__main__":
    main()
