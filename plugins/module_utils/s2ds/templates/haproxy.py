# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""HAProxy, TCP mode: one frontend and one backend per listener."""

TEMPLATE = r"""# SciStream S2DS session {{ uid }} ({{ role }}), rendered by scistream.gateway: do not edit.
global
    maxconn {{ maxconn }}
    # Large buffers and kernel splicing carry bulk streams with fewer copies.
    tune.bufsize {{ haproxy_bufsize }}
    tune.maxrewrite 1024
{% if foreground %}
    # HAProxy logs to syslog sockets, not files: in the foreground, stderr.
    log stderr format raw local0 notice
{% endif %}

defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout client-fin 30s
    timeout server-fin 30s
{% for listener in listeners %}

frontend listener_{{ loop.index0 }}
    bind {{ listener.bind_address }}
    default_backend target_{{ loop.index0 }}

backend target_{{ loop.index0 }}
    server target_{{ loop.index0 }} {{ listener.target_address }}
{% endfor %}
"""
