#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: stream_request
short_description: Set up or release a SciStream stream through the gateways' control servers (S2CS)
version_added: 0.1.0
description:
  - Speaks the SciStream control protocol (gRPC C(scistream.Control)) from the controller, the way the SciStream user
    client (S2UC) does.
  - With O(state=present), sends C(req) and C(hello) to the producer-side server O(prod_server) and C(update) with
    O(producer_targets); then C(req) and C(hello) to the consumer-side server O(cons_server) and C(update) with the
    producer gateway's listeners. Returns the consumer gateway's RV(listeners), where the consumer application connects.
  - The same O(uid) again gets the same sessions and listeners, and reports no change (the servers say whether
    a C(req) created a session and whether an C(update) changed one).
  - When the consumer side fails, a producer-side session this run created is released again.
  - What a server answers is untrusted input. Every listener the producer-side server returns is parsed by the
    collection's grammar (as O(producer_targets) is) before the consumer-side server is contacted; a bad answer
    fails the task naming the field (C(listeners), C(prod_listeners)) with the value escaped, releases the
    producer-side session this run created, and creates nothing on the consumer side.
  - The listeners the producer-side server answers must also pass the consumer side's target policy
    (O(cons_allowed_targets)) before the consumer-side server is contacted, so a hostile producer-side server cannot make
    the consumer gateway forward to a loopback service. A refusal fails the task with code C(PERMISSION_DENIED),
    naming the listener and the rule, and releases the producer-side session this run created.
  - With O(state=absent), releases O(uid) on both servers; a server that does not know it is no change.
author:
  - SciStream gateway contributors (@scistream)
requirements:
  - grpcio and protobuf on the controller (the Python that runs the module)
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: none
    details: The protocol has no call that reads a session without creating it, so check mode cannot predict.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
options:
  prod_server:
    description: The producer-side gateway's control server, C(host:port).
    type: str
    required: true
  cons_server:
    description: The consumer-side gateway's control server, C(host:port).
    type: str
    required: true
  ca_path:
    description:
      - CA certificate (PEM) the servers' certificates are checked against; the system's trust store when not given.
      - The certificate must name the host part of O(prod_server) and O(cons_server).
    type: path
  token:
    description:
      - Access token, sent as it is in the C(authorization) metadata, as SciStream's client sends it (a Globus Auth
        access token, or one of the server's tokens). Left out, the placeholder C(INVALID_TOKEN) is sent, which
        servers without authentication ignore.
    type: str
  uid:
    description:
      - The session id, the same on both gateways; 1 to 64 characters of C(A-Z a-z 0-9 . _ -), such as a UUID
        (UUIDs are case folded).
    type: str
    required: true
  num_conn:
    description: Listeners per gateway.
    type: int
    default: 1
  producer_targets:
    description:
      - The producer application's C(ip:port) endpoints; listener i of the producer gateway forwards to
        target i modulo their number.
      - Required with O(state=present).
    type: list
    elements: str
  cons_allowed_targets:
    description:
      - The consumer side's target policy, applied here to the producer gateway's listeners, with rules as in
        O(scistream.gateway.s2ds#module:allowed_targets), such as V(10.0.2.0/24) or V(10.0.2.1/32:5100-5200).
      - Left out, the strict default (any address but loopback, unspecified, link-local, multicast, broadcast and
        their IPv4-mapped, NAT64 and 6to4 forms). A listener must be an address, not a host name.
      - The consumer-side server applies its own policy too (C(--allowed_cons_targets) of the control server).
    type: list
    elements: str
  rate:
    description:
      - The rate to ask both servers for, with its unit (V(500Mbit), V(20MB/s); the grammar of
        O(scistream.gateway.s2ds#module:rate)). Sent as the protocol's C(rate), in kB/s (rounded down), as S2UC's
        C(--rate) is. Left out, V(0) - none asked (S2UC sends 10000 by default).
      - A server applies it only with C(--rate_policy honour) or C(cap) (see C(docs/rates.md)); it may refuse a
        rate beyond its C(--max_rate).
    type: str
  state:
    description: V(present) sets the stream up, V(absent) releases it on both gateways.
    type: str
    choices: [present, absent]
    default: present
  timeout:
    description: Seconds each control call may take.
    type: float
    default: 30
seealso:
  - module: scistream.gateway.s2ds
  - name: The scistream.gateway.s2cs role
    description: Deploys the control servers this module talks to (C(ansible-doc -t role scistream.gateway.s2cs)).
    link: https://github.com/scistream/scistream-gateway/blob/main/README.md#control-server-s2cs
"""

EXAMPLES = r"""
- name: Stream from the producer facility to the consumer facility
  scistream.gateway.stream_request:
    prod_server: gateway-a.example.org:5000
    cons_server: gateway-b.example.org:5000
    ca_path: /etc/scistream/ca.crt
    token: "{{ vault_s2cs_token }}"
    uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
    num_conn: 2
    producer_targets: [10.0.3.10:5074, 10.0.3.10:5075]
  register: stream

- name: Where the consumer application connects
  ansible.builtin.debug:
    var: stream.listeners

- name: Release the stream on both gateways
  scistream.gateway.stream_request:
    prod_server: gateway-a.example.org:5000
    cons_server: gateway-b.example.org:5000
    ca_path: /etc/scistream/ca.crt
    uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
    state: absent
"""

RETURN = r"""
listeners:
  description: The consumer gateway's listeners, C(ip:port), for the consumer application.
  returned: state is present
  type: list
  elements: str
  sample: [10.0.1.2:5100, 10.0.1.2:5101]
prod_listeners:
  description: The producer gateway's listeners, which the consumer gateway forwards to.
  returned: state is present
  type: list
  elements: str
  sample: [10.0.2.1:5100, 10.0.2.1:5101]
uid:
  description: The session id.
  returned: always
  type: str
  sample: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import (
    GRPC_IMPORT_ERROR,
    HAS_GRPC,
    ControlCallError,
    ControlClient,
    close_stream,
    consumer_policy,
    open_stream,
)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import (
    parse_rate, parse_target, parse_uid, rate_for_protocol)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            prod_server=dict(type="str", required=True),
            cons_server=dict(type="str", required=True),
            ca_path=dict(type="path"),
            token=dict(type="str", no_log=True),
            uid=dict(type="str", required=True),
            num_conn=dict(type="int", default=1),
            producer_targets=dict(type="list", elements="str"),
            cons_allowed_targets=dict(type="list", elements="str"),
            rate=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            timeout=dict(type="float", default=30),
        ),
        required_if=[("state", "present", ["producer_targets"])],
        supports_check_mode=False,
    )
    if not HAS_GRPC:
        module.fail_json(msg=missing_required_lib("grpcio and protobuf"), exception=str(GRPC_IMPORT_ERROR))
    params = module.params
    try:
        uid = parse_uid(params["uid"])
        for field in ("prod_server", "cons_server"):
            parse_target(params[field], field=field)
        targets = [str(parse_target(t, field="producer_targets")) for t in params["producer_targets"] or []]
        cons_policy = consumer_policy(params["cons_allowed_targets"])
        rate = rate_for_protocol(parse_rate("rate", params["rate"]))
    except S2DSError as exc:
        module.fail_json(msg=str(exc), field=exc.field)
    if not 1 <= params["num_conn"] <= 1024:
        module.fail_json(msg="num_conn %r: must be between 1 and 1024" % params["num_conn"], field="num_conn")

    def client(field):
        return ControlClient(params[field], ca_path=params["ca_path"], token=params["token"], timeout=params["timeout"])

    try:
        with client("prod_server") as prod, client("cons_server") as cons:
            if params["state"] == "absent":
                module.exit_json(changed=close_stream(prod, cons, uid), uid=uid)
            stream = open_stream(prod, cons, uid, params["num_conn"], targets, cons_policy=cons_policy, rate=rate)
    except ControlCallError as exc:
        module.fail_json(msg=str(exc), uid=uid, server=exc.server, method=exc.method, code=exc.code,
                         field=getattr(exc, "field", None))
    except OSError as exc:
        module.fail_json(msg="ca_path %r cannot be read: %s" % (params["ca_path"], exc.strerror), field="ca_path")
    module.exit_json(changed=stream["changed"], uid=uid, listeners=stream["listeners"],
                     prod_listeners=stream["prod_listeners"])


if __name__ == "__main__":
    main()
