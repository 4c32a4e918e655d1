# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Where a gateway keeps its sessions, and how host processes are supervised."""

    DOCUMENTATION = r"""
options:
  state_dir:
    description: Where the gateway keeps its session records and run files (mode 0700).
    type: path
    default: /var/lib/scistream
  process_supervisor:
    description:
      - How O(scistream.gateway.s2ds#module:runtime=process) keeps proxies running. V(auto) picks V(systemd)
        where systemd is PID 1 (one unit per session), else V(daemon) (the proxy daemonizes and writes a
        pid file in the session's run dir; the next run restarts it if it died).
    type: str
    choices: [auto, systemd, daemon]
    default: auto
  proxy_user:
    description:
      - The user the proxies of O(scistream.gateway.s2ds#module:runtime=process) and
        O(scistream.gateway.s2ds#module:runtime=docker) run as. V(pool) runs each session's proxy as a uid of its
        own from O(proxy_uid_range), never shared by two live sessions of the host (whatever their state dirs);
        V(auto) is V(pool) where the C(scistream) system user exists on the gateway (the
        P(scistream.gateway.gateway#role) role creates it), else root; V(root) keeps them root; any other name must
        exist, and is then shared by every session (a compromised proxy could read the others' keys and signal
        their proxies).
      - With a pool uid the session's run dir is C(root:<its uid>) 0750 and its files 0640, so the key and psk are
        readable by that uid alone, which can neither read another session's files nor signal its proxy. The
        session record keeps the uid (C(proxy_uid)); a session made before runs as before until its next change,
        which restarts its proxy as a pool uid. The host-wide allocation is kept in
        C(/var/lib/scistream/proxy-uids/registry.json).
      - Under O(process_supervisor=systemd) the session's unit has C(User=) and C(Group=) set to that uid and gid.
        systemd starts a unit only as a uid the user database knows, so the first time a unit runs as a pool uid
        the module makes the pool's own account for it (C(scistream-p<uid>), group of the same name and number
        with no member, no password, home C(/), no login shell, with C(groupadd) and C(useradd)); it stays after
        the session is released and is reused with the uid. A uid that any other account or group has is never
        handed out.
      - Run as that user, a proxy holds no capability, or only C(CAP_NET_BIND_SERVICE) for a listener below port
        1024 (a container with such a port runs root with that one capability, as Docker gives a non-root user no
        ambient capability). The session's run dir is then C(root:<its group>) 0750, the config and key files in
        it 0640 (readable by root and that group alone), and the proxy writes only its pid file and log in the
        run dir's C(proxy/) subdirectory; the session records stay root's 0700.
      - The state dir and every directory above it must let that user pass; the module says which one does not.
    type: str
    default: auto
  proxy_uid_range:
    description:
      - The uids (first-last, inclusive; the group of the same number is each one's only group) that
        O(proxy_user=pool) hands out, one per session. A uid that an account or a group of the host has (but the
        pool's own C(scistream-p<uid>) account), or that a running process uses, is skipped. At most 65536 uids;
        root, 65534, 65535 and systemd's C(DynamicUser=) range 61184-65519 are refused.
    type: str
    default: 7400-8399
  allowed_targets:
    description:
      - Where sessions may forward (the target policy - the gateway is no open proxy). Each rule is a network with an
        optional port or port range, V(10.0.3.0/24), V(10.0.3.10) (one host), V(10.0.3.10/32:5074-5075),
        V(2001:db8::/32) or V([2001:db8::/32]:5000). A target passes when a rule matches its address and port.
      - Left out (or empty), the rules are V(0.0.0.0/0) and V(::/0), every address and port but none of the
        special classes. Whatever the rules, an address that is loopback, unspecified (V(0.0.0.0/8), V(::)),
        link-local, multicast, reserved or broadcast (V(240.0.0.0/4)), local NAT64, or one of the gateway's own
        interface addresses passes only a rule that lies inside that class, so V(0.0.0.0/0) does not open loopback
        and V(127.0.0.0/8) or V(127.0.0.1/32:5074) does (an own address needs its V(/32) or V(/128)).
      - An IPv4-mapped (V(::ffff:127.0.0.1)) or IPv4-compatible address is checked as the IPv4 address it carries; a
        NAT64 (V(64:ff9b::/96)), 6to4 or Teredo address as itself and as the IPv4 address it carries.
      - A host name is resolved once, by the module (at most 5 seconds); every address it has must pass, and the
        session forwards to the first of them (IPv4 first), so the proxy never looks the name up. The session's
        RV(scistream.gateway.s2ds#module:targets) show that address; with encryption tls the name is still what the
        certificate is checked against and what is sent as SNI.
      - A refused target fails the task naming the target and the rules, before anything is reserved or written.
      - Rules given replace the default ones; to open loopback as well as the rest, give
        V([127.0.0.0/8, "::1/128", 0.0.0.0/0, "::/0"]).
    type: list
    elements: str
  protected_ports:
    description:
      - Ports (V(5000)) and port ranges (V(9000-9010)) of this gateway's own services (its control servers, their
        metrics, the exporter) that no session may forward to on a loopback, unspecified or own address, whatever
        O(allowed_targets) says.
      - Left out, V(5000) (the control server's default port) and V(9787) (the exporter's port).
    type: list
    elements: str
  rate_devices:
    description:
      - The egress devices (V(eth1), the WAN side) on which sessions' rates are enforced, each with the
        collection's HTB root qdisc (handle C(5353:), no default class, so traffic of no rated session is not
        shaped). A device whose root qdisc is someone else's is refused, never replaced.
      - Left out, the devices of the host's default routes (IPv4 and IPv6) - on a gateway, the way to the WAN,
        where streams to the other facility leave. Name the devices when the streams leave elsewhere.
      - Only used by sessions with a rate (O(scistream.gateway.s2ds#module:rate)).
    type: list
    elements: str
"""
