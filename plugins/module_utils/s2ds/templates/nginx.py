# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""NGINX stream block: a TCP and a UDP server per listener.

With encryption tls, a TCP server per listener and no UDP (the stream module
has no DTLS): the PROD gateway's listeners terminate TLS and demand a client
certificate signed by the CA; the CONS gateway speaks TLS to PROD and checks
its certificate against the CA and the host it dials (``proxy_ssl_name``;
NGINX 1.22 compares it with the certificate's DNS names only, so an IP
address must be there as a DNS name too - the pki role does that). SNI is
sent for host names only.
"""

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
{% if encryption == 'tls' %}
    # Pass the client's end of stream on as a half-close and wait for the other side, rather than
    # closing at once: a close with TLS records (session tickets, close_notify) still unread sends
    # a reset, and a reset discards what the peer has not read yet.
    proxy_half_close on;
{% endif %}
{% if encryption == 'tls' and role == 'PROD' %}

    # encryption tls: terminate TLS, demand a client certificate signed by the CA.
    ssl_certificate {{ tls_files.cert }};
    ssl_certificate_key {{ tls_files.key }};
    ssl_client_certificate {{ tls_files.ca }};
    ssl_verify_client on;
    ssl_verify_depth 4;
    ssl_protocols {{ tls_version }};
{% if tls_ciphersuites %}
    ssl_conf_command Ciphersuites {{ tls_ciphersuites }};
{% endif %}
{% if tls_ciphers %}
    ssl_ciphers {{ tls_ciphers }};
{% endif %}
{% elif encryption == 'tls' %}

    # encryption tls: TLS to the PROD gateway, its certificate checked against the CA and the host dialled.
    proxy_ssl on;
    proxy_ssl_certificate {{ tls_files.cert }};
    proxy_ssl_certificate_key {{ tls_files.key }};
    proxy_ssl_trusted_certificate {{ tls_files.ca }};
    proxy_ssl_verify on;
    proxy_ssl_verify_depth 4;
    proxy_ssl_protocols {{ tls_version }};
{% if tls_ciphersuites %}
    proxy_ssl_conf_command Ciphersuites {{ tls_ciphersuites }};
{% endif %}
{% if tls_ciphers %}
    proxy_ssl_ciphers {{ tls_ciphers }};
{% endif %}
{% endif %}
{% for listener in listeners %}

    server {
{% if encryption == 'tls' and role == 'PROD' %}
        listen {{ listener.bind_address }} ssl;
{% else %}
        listen {{ listener.bind_address }};
{% endif %}
{% if encryption == 'tls' and role == 'CONS' %}
        proxy_ssl_name {{ listener.target_host }};
        proxy_ssl_server_name {{ 'off' if listener.target_is_ip else 'on' }};
{% endif %}
        proxy_pass {{ listener.target_address }};
    }
{% if encryption != 'tls' %}
    server {
        listen {{ listener.bind_address }} udp;
        proxy_pass {{ listener.target_address }};
        proxy_timeout 1m;
    }
{% endif %}
{% endfor %}
}
"""
