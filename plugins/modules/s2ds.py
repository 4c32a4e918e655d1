#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: s2ds
short_description: Start, update and release SciStream data server (S2DS) sessions
version_added: 0.1.0
description:
  - Manages one SciStream S2DS session on a gateway. It reserves listener ports, renders the proxy
    configuration (HAProxy, NGINX C(stream) or stunnel) and runs the proxy; or, with O(backend=nftables),
    forwards the listeners in the kernel with NAT rules and no proxy at all.
  - A C(PROD) session runs on the producer facility's gateway and forwards its listeners to the
    producer application; a C(CONS) session runs on the consumer facility's gateway and forwards to
    the C(PROD) gateway's listeners.
  - Listener number I(i) forwards to target number I(i) modulo the number of O(targets). With no O(targets) the ports are
    reserved and no proxy runs yet.
  - Sessions are kept on disk under O(state_dir), one record per session, written under a file lock,
    so they survive restarts and parallel runs never hand out the same port. The same O(uid) asked
    again gets the same ports.
  - A changed configuration is checked with the proxy's own checker (C(haproxy -c), C(nginx -t)) before
    it replaces the running one, then applied gracefully - HAProxy and NGINX reload without dropping
    established connections, stunnel restarts. A proxy that died is started again by the next run.
author:
  - SciStream gateway contributors (@scistream)
requirements:
  - Jinja2 on the managed host.
  - For O(runtime=docker), the Docker SDK for Python (Debian C(python3-docker)) on the managed host.
  - For O(runtime=process), the proxy (C(haproxy), C(nginx) with the stream module, or C(stunnel)) on C(PATH).
  - For O(backend=nftables), the nftables Python binding (Debian C(python3-nftables)) on the managed host, which only the
    distribution's Python imports (C(ansible_python_interpreter=/usr/bin/python3)), and root or C(CAP_NET_ADMIN).
extends_documentation_fragment:
  - scistream.gateway.gateway
  - scistream.gateway.docker
  - scistream.gateway.janus
  - scistream.gateway.tls
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Computes the ports, configuration and actions the real run would take, and changes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
    details: Shows the rendered proxy configuration before and after. Key and certificate files are never shown.
options:
  uid:
    description:
      - The session id, 1 to 64 characters of C(A-Z a-z 0-9 . _ -), such as a UUID (what SciStream's clients send,
        dashless hex included). Anything else (for example C(../x), a space or a newline) is rejected.
      - A UUID is case folded and names the session's files, unit, container and chains as it is. Any other uid is
        kept as given (case matters) and those names use C(s-) and 32 hex digits of its SHA-256 instead, so that
        C(.), C(..), C(-x) or a long uid is safe in every name.
    type: str
    required: true
  state:
    description:
      - V(present) reserves ports and, with O(targets), runs the proxy.
      - V(absent) stops the proxy, frees the ports and removes the session's files, also for a session whose record is
        broken (see O(runtime)).
    type: str
    choices: [present, absent]
    default: present
  role:
    description:
      - V(PROD) for the producer-side (inbound) gateway, V(CONS) for the consumer-side (outbound) one.
      - Required when O(state=present). A session keeps its role; release it to change it.
    type: str
    choices: [PROD, CONS]
  num_conn:
    description: Number of listeners (ports) to reserve.
    type: int
    default: 5
  listener_ip:
    description:
      - Address the listeners bind to, and that is reported in RV(listeners).
      - An IPv4 dotted quad (no leading zeros) or an IPv6 address without zone id (C(%eth0) is refused).
    type: str
    default: 0.0.0.0
  port_range:
    description: Ports to reserve from, as C(start-end), inclusive, within 1-65535.
    type: str
    default: 5100-5200
  targets:
    description:
      - Where the listeners forward to, each C(host:port), C(ipv4:port) or C([ipv6]:port).
      - A host is a name per RFC 1123 (labels of 1-63 letters, digits and inner C(-), 253 characters in all), an IPv4
        dotted quad without leading zeros or an IPv6 address without zone id; a port is 1-65535 in ASCII digits
        without sign or leading zero. The whole value must match (no spaces, no newline).
      - For V(PROD), the producer application's ports; for V(CONS), the V(PROD) gateway's listeners.
      - Each must pass the target policy (O(allowed_targets)); by default no loopback, unspecified, link-local,
        multicast or own address. A host name is resolved here, once, and the session forwards to its checked address.
    type: list
    elements: str
    default: []
  backend:
    description:
      - The proxy. V(nginx) carries TCP and UDP on each listener (TCP only with O(encryption=tls));
        V(stunnel) carries TCP over TLS-PSK.
      - V(haproxy) and V(nginx) encrypt between the gateways with O(encryption=tls).
      - V(nftables) is the kernel data path, for streams that need no encryption between the gateways. Each
        listener is a destination NAT of C(listener_ip:port) (TCP and UDP) to its target plus a masquerade toward
        the target, so replies come back through the gateway; locally originated connections are translated too.
        No process runs and no byte is copied in user space. With O(listener_ip=0.0.0.0) (or V(::)) every local
        address of the target's address family is translated. Targets must be IP addresses.
      - V(nftables) rules live in the table C(inet scistream), in chains C(dnat-<key>), C(snat-<key>) and
        C(count-<key>) that the table's base chains jump to (jump rules commented with the key; the key is the uid
        for a UUID, see O(uid)). Each change is one
        transaction through libnftables' JSON interface; V(absent) removes exactly the session's chains and jump
        rules. The ruleset is kept as C(nftables.json) in the session's run dir (the gateway role loads it at boot).
      - V(nftables) takes no O(psk) (it does not encrypt) and no O(template), and runs only with O(runtime=kernel).
        The gateway must forward (C(net.ipv4.ip_forward), C(net.ipv6.conf.all.forwarding); the gateway role sets them).
    type: str
    choices: [haproxy, nginx, stunnel, nftables]
    default: haproxy
  runtime:
    description:
      - Where the proxy runs. V(process) runs it as a host process (a systemd unit where systemd is PID 1,
        else a daemon with a pid file, see O(process_supervisor)).
      - V(docker) runs one container per session, named C(scistream-<backend>-<role>-<key>) (the key as in O(uid)), on the Docker
        Engine at O(docker_host), with C(network_mode=host), the session's config directory mounted read-only
        at C(/etc/scistream), every capability dropped but what the proxy needs, C(no-new-privileges) and
        restart policy C(unless-stopped). A label holds a hash of everything the container was created with;
        a container created otherwise (for example with another O(image)) is recreated.
      - With V(docker), a changed config is applied by signal (HAProxy SIGUSR2, NGINX SIGHUP), which keeps
        established connections; stunnel's container is restarted.
      - V(janus) asks an ESnet Janus controller (O(janus_url)) to run the proxy container on O(janus_node) with
        O(janus_profile), as one Janus session named C(scistream-<uid>); the module runs on that node. The profile
        binds C(<state_dir>/janus/session) at C(/etc/scistream/session), a link the module points at the one
        session it is starting, so each container sees only its own session's files (docs/janus.md).
      - With V(janus), a changed config stops and starts the same container; a session runs only while Janus says
        C(STARTED) without service errors and its listeners listen, else the next run stops and starts it. The Janus
        session id is kept in the session record and used again only while that Janus session is named for the uid.
      - With O(state=absent) the session's own record names its runtime; this option only says where to look for
        the proxy of a session whose record is broken (unreadable), which is then stopped as far as it can be found
        by its uid, and its run dir and record removed (V(process) when not given).
      - V(kernel) is the only runtime of O(backend=nftables), and only for it. The rules in the kernel are compared
        with the wanted ones on every run; rules that were lost (reboot, C(nft flush ruleset)) or changed by hand are
        put back.
      - Defaults to V(kernel) for O(backend=nftables) and to V(process) for the proxies.
    type: str
    choices: [process, docker, janus, kernel]
  image:
    description:
      - Proxy image for O(runtime=docker) and O(runtime=janus). Defaults to the official image of the backend (C(haproxy:lts),
        C(nginx:stable)); stunnel has no official image, so its default is the collection's own
        C(scistream/stunnel:local), built by the C(scistream.gateway.build_images) playbook.
      - An image that is missing and cannot be pulled is an error that says how to build it locally.
    type: str
  psk:
    description:
      - Pre-shared key for V(stunnel), the same on both gateways of a session, at least 16 characters.
      - When omitted it is derived from O(uid), and the module warns that it is then only as secret as the uid.
      - Kept in a 0600 file next to the configuration, never in the configuration, the record or the output.
    type: str
  psk_cipher:
    description:
      - OpenSSL PSK cipher for V(stunnel). The default encrypts; a null cipher such as C(PSK-NULL-SHA256)
        authenticates the peer but leaves the stream in clear, and is used only when asked for here.
    type: str
    default: PSK-AES128-GCM-SHA256
  psk_compat:
    description:
      - For V(stunnel), speak exactly what another SciStream implementation's stunnel sessions speak, so a stream
        between this gateway and one running it carries data. V(scistream-1.2) is upstream SciStream 1.2
        (C(StunnelSubprocess) and the C(Stunnel) container) - PSK identity C(client1), the key the uid without its
        dashes, TLS 1.2, cipher C(eNULL).
      - That mode authenticates the partner but does B(not) encrypt the stream, and its key is only as secret as the
        uid; the module warns so. It takes no O(psk), and replaces O(psk_cipher).
    type: str
    choices: [scistream-1.2]
  lifetime:
    description:
      - How long the session lives after it was made or last renewed, as a duration - a whole number and a unit,
        V(90s), V(30m), V(12h), V(7d) (at most V(30d)), or a bare number of seconds. V(0) or unset - for ever.
      - Past it the session is released exactly as O(state=absent) would release it (proxy stopped, ports freed,
        record and counters removed), by the control server's loop or the exporter's (see C(docs/lifetimes.md));
        nothing expires where neither runs.
      - A run that makes or changes the session renews it (its deadline is then now plus O(lifetime)); a run that
        changes nothing does not, so running the same task again reports no change and keeps the deadline. To renew
        a session, change its lifetime or release and make it again.
      - The deadline is kept in the session's record on disk, so restarts keep it.
    type: str
  idle_timeout:
    description:
      - Release the session when no byte has been counted through its listeners for this long (a duration like
        O(lifetime); V(0) or unset - never idle).
      - Measured with the kernel counters of the listeners (root with the nftables binding, listeners on this host,
        and backend V(nftables)); a session whose bytes cannot be counted here is never idle.
      - A run that makes or changes the session starts the idle time again.
    type: str
  rate:
    description:
      - The rate the session's stream may leave this gateway at, with its unit - V(500Mbit), V(2Gbit), V(20MB/s)
        (decimal SI - V(bit), V(Kbit), V(Mbit), V(Gbit), V(Tbit) per second, or bytes per second V(B/s), V(KB/s),
        V(MB/s), V(GB/s)); from V(8Kbit) to V(32Gbit). V(0) in any unit, or unset - not shaped.
      - Enforced in the kernel for every backend and runtime whose listeners are on this host (HTB on
        O(rate_devices), a class per session, the packets sent from the session's listener ports classified by
        nftables); the rate counts whole frames on the wire (with 1500-byte frames the payload gets about 95% of
        it). See C(docs/rates.md).
      - It shapes what leaves the gateway from the listeners (the stream toward the client that connected), not
        what clients send to the listeners.
      - Needs root, the nftables binding and pyroute2 (Debian C(python3-nftables), C(python3-pyroute2)); where a
        rate cannot be enforced the task fails rather than run the session unshaped.
    type: str
  template:
    description:
      - Path on the managed host of a Jinja2 template that replaces the built-in one for O(backend).
      - It receives the variables of the built-in templates (C(uid), C(role), C(listeners) with C(bind_address)
        and C(target_address), C(pid_file), C(log_file), C(psk_file), C(psk_identity), C(psk_cipher)...).
      - Like the built-in ones, every C({{ ... }}) it renders must be printable ASCII without whitespace or the
        proxy's own syntax characters (see the notes); write literal text outside C({{ }}).
    type: path
notes:
  - A PROD and a CONS session of the same uid on one host need separate O(state_dir)s, as two gateways would have.
  - As a backstop to the input grammar, rendering a proxy config refuses any value holding whitespace, a control
    or non-ASCII character, or a character the proxy's syntax gives a meaning to (comments, quotes, escapes,
    variables, braces, separators of directives, arguments and lines), whatever path it came by; the error names
    C(config).
seealso:
  - module: scistream.gateway.s2ds_info
"""

EXAMPLES = r"""
- name: Producer-side gateway forwards two listeners to the producer application
  scistream.gateway.s2ds:
    uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
    role: PROD
    num_conn: 2
    targets: [10.0.3.10:5074, 10.0.3.10:5075]
  register: prod

- name: Consumer-side gateway forwards to the producer gateway's listeners
  scistream.gateway.s2ds:
    uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
    role: CONS
    num_conn: 2
    targets: "{{ prod.listeners }}"
  delegate_to: gateway-b.example.org

- name: Encrypted tunnel between the gateways with a key from the vault
  scistream.gateway.s2ds:
    uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
    role: PROD
    backend: stunnel
    psk: "{{ vault_stream_psk }}"
    targets: [10.0.3.10:5074]

- name: Mutual TLS between the gateways, with the certificates of the scistream.gateway.pki role
  scistream.gateway.s2ds:
    uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
    role: CONS
    backend: haproxy
    encryption: tls
    tls_cert: /etc/scistream/pki/gateway.crt
    tls_key: /etc/scistream/pki/gateway.key
    tls_ca: /etc/scistream/pki/ca.crt
    targets: [gateway-a.example.org:5100]

- name: Kernel data path on the producer-side gateway (no proxy; run with the distribution's Python)
  scistream.gateway.s2ds:
    uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
    role: PROD
    backend: nftables
    listener_ip: 10.0.2.2
    targets: [10.0.3.10:5074]
  vars:
    ansible_python_interpreter: /usr/bin/python3

- name: Release the session
  scistream.gateway.s2ds:
    uid: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
    state: absent
"""

RETURN = r"""
uid:
  description: The session id.
  returned: always
  type: str
  sample: 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab
role:
  description: The session's role.
  returned: when state=present
  type: str
  sample: PROD
listeners:
  description: The gateway's listeners, C(listener_ip:port), in order; give these to the other side.
  returned: when state=present
  type: list
  elements: str
  sample: [0.0.0.0:5100, 0.0.0.0:5101]
ports:
  description: The reserved ports.
  returned: when state=present
  type: list
  elements: int
  sample: [5100, 5101]
targets:
  description: Where the listeners forward to.
  returned: when state=present
  type: list
  elements: str
  sample: [10.0.3.10:5074]
backend:
  description: The proxy.
  returned: when state=present
  type: str
  sample: haproxy
encryption:
  description: V(tls) when the gateways speak mutual TLS to each other, else V(none).
  returned: when state=present
  type: str
  sample: tls
runtime:
  description: Where the proxy runs.
  returned: when state=present
  type: str
  sample: process
lifetime:
  description: The session's lifetime in seconds, null for none.
  returned: when state=present
  type: int
  sample: 43200
idle_timeout:
  description: The session's idle timeout in seconds, null for none.
  returned: when state=present
  type: int
  sample: 1800
expires_at:
  description: When the session's lifetime ends, in seconds since the epoch; null for never.
  returned: when state=present
  type: int
  sample: 1800043200
expires_in:
  description: Seconds from now until the session expires (its lifetime or its idle timeout, whichever is first); null for never.
  returned: when state=present
  type: int
  sample: 1800
expires_reason:
  description: Why it would expire then, V(lifetime) or V(idle); null for never.
  returned: when state=present
  type: str
  sample: idle
config_path:
  description: Path of the rendered proxy configuration on the gateway; null while the session has no targets.
  returned: when state=present
  type: str
  sample: /var/lib/scistream/run/4f6c1b7e-2a3d-4c5e-9f00-1234567890ab/haproxy.cfg
actions:
  description: What was done (or, in check mode, would be done), among C(reserve), C(update), C(write_config),
    C(start), C(reload), C(restart), C(stop), C(release), C(count). For O(backend=nftables), C(start) puts the rules in
    place and C(reload) replaces them in one transaction. C(count) sets up the kernel counters of the session's
    listeners (see M(scistream.gateway.s2ds_info)), where the module runs with the nftables binding as root.
  returned: always
  type: list
  elements: str
  sample: [reserve, write_config, start]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.scistream.gateway.plugins.module_utils.ansible_s2ds import (
    ALL_GATEWAY_OPTIONS,
    SESSION_OPTIONS,
    SESSION_REQUIRED_IF,
    S2DSError,
    module_gateway,
    fail_from,
    request_from_params,
    require_core,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(SESSION_OPTIONS, **ALL_GATEWAY_OPTIONS),
        required_if=SESSION_REQUIRED_IF,
        supports_check_mode=True,
    )
    require_core(module)

    params = module.params
    result = dict(changed=False, uid=params["uid"])
    try:
        gateway = module_gateway(module)
        request = request_from_params(params)
        if params["state"] == "absent":
            outcome = gateway.absent(request.uid, check_mode=module.check_mode, runtime=request.runtime)
        else:
            outcome = gateway.present(request, check_mode=module.check_mode)
    except S2DSError as exc:
        fail_from(module, exc, **result)

    for warning in outcome.warnings:
        module.warn(warning)
    result.update(outcome.session, changed=outcome.changed, actions=outcome.actions)
    if module._diff and outcome.diff:
        result["diff"] = outcome.diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
