# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""NGINX stream block: a TCP and a UDP server per listener."""

TEMPLATE = r"""# SciStream S2DS session {{ uid }} ({{ role }}), rendered by scistream.gateway: do not edit.
load_module {{ nginx_stream_module }};
worker_processes {{ nginx_workers }};
pid {{ pid_file }};
error_log {{ log_file }} notice;

events {
    worker_connections {{ maxconn }};
}

stream {
    # Bigger buffers move bulk streams with fewer system calls.
    proxy_buffer_size {{ nginx_buffer_size }};
    proxy_connect_timeout 5s;
    proxy_timeout 1h;
    tcp_nodelay on;
{% for listener in listeners %}

    server {
        listen {{ listener.bind_address }};
        proxy_pass {{ listener.target_address }};
    }
    server {
        listen {{ listener.bind_address }} udp;
        proxy_pass {{ listener.target_address }};
        proxy_timeout 1m;
    }
{% endfor %}
}
"""
