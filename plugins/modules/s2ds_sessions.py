#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: s2ds_sessions
short_description: Start, update and release many SciStream S2DS sessions on one gateway in one call
version_added: 0.1.0
description:
  - Applies a list of S2DS sessions on one gateway, in order, under the gateway's lock, in one module call.
    Each item is what one M(scistream.gateway.s2ds) call would be given, and each is handled exactly as
    that call would handle it - its own ports, idempotence, check mode, diff, warnings and error.
  - Made for gateways that carry many streams. One call instead of one per session saves Ansible's cost
    per task (about 0.4 s here) for each session, and the session records are read once per call instead
    of once per session.
  - A session that fails does not stop the others. It leaves nothing half done, as alone, and is reported in
    its item of RV(sessions) with C(failed) and C(msg); the task then fails, naming every failed uid, after
    the rest have been applied.
author:
  - SciStream gateway contributors (@scistream)
requirements:
  - As for M(scistream.gateway.s2ds).
extends_documentation_fragment:
  - scistream.gateway.gateway
  - scistream.gateway.docker
  - scistream.gateway.janus
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Each session's ports, configuration and actions are computed as the real run would, and nothing changes.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
    details: One diff per changed session, its rendered proxy configuration before and after. Key files are never shown.
options:
  sessions:
    description:
      - The sessions, each a dictionary of the session options of M(scistream.gateway.s2ds), with the same
        names, types, defaults and checks - O(scistream.gateway.s2ds#module:uid),
        O(scistream.gateway.s2ds#module:state), O(scistream.gateway.s2ds#module:role),
        O(scistream.gateway.s2ds#module:num_conn), O(scistream.gateway.s2ds#module:listener_ip),
        O(scistream.gateway.s2ds#module:port_range), O(scistream.gateway.s2ds#module:targets),
        O(scistream.gateway.s2ds#module:backend), O(scistream.gateway.s2ds#module:runtime),
        O(scistream.gateway.s2ds#module:image), O(scistream.gateway.s2ds#module:psk),
        O(scistream.gateway.s2ds#module:psk_cipher), O(scistream.gateway.s2ds#module:psk_compat),
        O(scistream.gateway.s2ds#module:template), O(scistream.gateway.s2ds#module:lifetime),
        O(scistream.gateway.s2ds#module:idle_timeout), O(scistream.gateway.s2ds#module:rate),
        O(scistream.gateway.s2ds#module:encryption), O(scistream.gateway.s2ds#module:tls_cert),
        O(scistream.gateway.s2ds#module:tls_key), O(scistream.gateway.s2ds#module:tls_ca),
        O(scistream.gateway.s2ds#module:tls_version) and whatever
        session option that module gains. Both modules take them from one declaration.
      - A key set to V(null) counts as not given, so templates can leave options to their defaults.
      - An item with an unknown key or a bad value is reported as failed, naming the key; the others are applied.
      - O(scistream.gateway.s2ds#module:psk) values are kept out of the output and the logs.
      - The gateway options (O(state_dir), O(process_supervisor), the Docker and Janus connection) are this
        module's own and hold for every item.
    type: list
    elements: dict
    required: true
notes:
  - Sessions are applied in the order given; ports are handed out in that order.
  - A uid may appear only once in O(sessions).
seealso:
  - module: scistream.gateway.s2ds
  - module: scistream.gateway.s2ds_info
"""

EXAMPLES = r"""
- name: Three PROD sessions on the producer gateway, one task
  scistream.gateway.s2ds_sessions:
    sessions:
      - uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
        role: PROD
        num_conn: 2
        targets: [10.0.3.10:5074, 10.0.3.10:5075]
      - uid: 0b7a3c52-9d1e-4f6a-8b2c-3d4e5f607182
        role: PROD
        num_conn: 1
        backend: nginx
        targets: [10.0.3.11:6000]
      - uid: 7d1f2e3a-4b5c-4d6e-8f70-8192a3b4c5d6
        role: PROD
        backend: stunnel
        psk: "{{ vault_stream_psk }}"
        targets: [10.0.3.12:7000]
  register: prod

- name: Listeners of the first session
  ansible.builtin.debug:
    msg: "{{ (prod.sessions | selectattr('uid', 'equalto', '4f6c1b7e-2a3d-4c5e-9f00-1234567890ab') | first).listeners }}"

- name: Release two sessions
  scistream.gateway.s2ds_sessions:
    sessions:
      - {uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab, state: absent}
      - {uid: 0b7a3c52-9d1e-4f6a-8b2c-3d4e5f607182, state: absent}
"""

RETURN = r"""
sessions:
  description:
    - One result per item of O(sessions), in the same order, with what M(scistream.gateway.s2ds) returns for it
      (C(uid), C(role), C(listeners), C(ports), C(targets), C(backend), C(runtime), C(config_path), C(actions)),
      plus C(changed), C(failed) and, for a failed item, C(msg) and C(field).
  returned: always
  type: list
  elements: dict
  sample:
    - uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
      role: PROD
      listeners: [0.0.0.0:5100, 0.0.0.0:5101]
      ports: [5100, 5101]
      targets: [10.0.3.10:5074, 10.0.3.10:5075]
      backend: haproxy
      runtime: process
      config_path: /var/lib/scistream/run/4f6c1b7e-2a3d-4c5e-9f00-1234567890ab/haproxy.cfg
      actions: [reserve, write_config, start]
      changed: true
      failed: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.scistream.gateway.plugins.module_utils.ansible_s2ds import (
    ALL_GATEWAY_OPTIONS,
    S2DSError,
    apply_sessions,
    fail_from,
    require_core,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(sessions=dict(type="list", elements="dict", required=True), **ALL_GATEWAY_OPTIONS),
        supports_check_mode=True,
        # The items may hold keys (psk): keep the arguments out of syslog. Their
        # values are added to no_log_values, which hides them in the output.
        no_log=True,
    )
    require_core(module)
    try:
        result = apply_sessions(module, module.params["sessions"])
    except S2DSError as exc:
        fail_from(module, exc, sessions=[])
    failed = [item for item in result["sessions"] if item["failed"]]
    if failed:
        module.fail_json(msg="%d of %d session(s) failed: %s" % (
            len(failed), len(result["sessions"]), "; ".join(item["msg"] for item in failed)), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
