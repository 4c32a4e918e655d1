# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""HAProxy, TCP mode: one frontend and one backend per listener.

With encryption tls the PROD gateway's listeners terminate TLS and demand a
client certificate signed by the CA; the CONS gateway's servers speak TLS to
PROD and check its certificate against the CA and the host they dial
(``verifyhost``; HAProxy 2.6 compares it with the certificate's DNS names
only, so an IP address must be there as a DNS name too - the pki role does
that). SNI is sent for host names only (RFC 6066 has none for addresses).
"""

TEMPLATE = r"""# SciStream S2DS session {{ uid }} ({{ role }}), rendered by scistream.gateway: do not edit.
global
    maxconn {{ maxconn }}
    # Large buffers and kernel splicing carry bulk streams with fewer copies.
    tune.bufsize {{ haproxy_bufsize }}
    tune.maxrewrite 1024
{% if stats_socket %}
    # Per-session runtime API, read-only: the error counts of s2ds_info and the exporter.
    stats socket {{ stats_socket }} mode 600 level user
{% endif %}
{% if haproxy_nbthread %}
    nbthread {{ haproxy_nbthread }}
{% endif %}
{% if encryption == 'tls' %}
    # encryption tls: mutual TLS between the gateways, {{ tls_version }} only.
    ssl-default-bind-options ssl-min-ver {{ tls_version }} ssl-max-ver {{ tls_version }}
    ssl-default-server-options ssl-min-ver {{ tls_version }} ssl-max-ver {{ tls_version }}
{% if tls_ciphersuites %}
    ssl-default-bind-ciphersuites {{ tls_ciphersuites }}
    ssl-default-server-ciphersuites {{ tls_ciphersuites }}
{% endif %}
{% if tls_ciphers %}
    ssl-default-bind-ciphers {{ tls_ciphers }}
    ssl-default-server-ciphers {{ tls_ciphers }}
{% endif %}
{% if haproxy_ssl_maxrecord %}
    tune.ssl.maxrecord {{ haproxy_ssl_maxrecord }}
{% endif %}
{% endif %}
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
{% if encryption == 'tls' and role == 'PROD' %}
    bind {{ listener.bind_address }} ssl crt {{ tls_files.cert }} ca-file {{ tls_files.ca }} verify required
{% else %}
    bind {{ listener.bind_address }}
{% endif %}
    default_backend target_{{ loop.index0 }}

backend target_{{ loop.index0 }}
{% if encryption == 'tls' and role == 'CONS' %}
    server target_{{ loop.index0 }} {{ listener.target_address }} ssl crt {{ tls_files.cert }} ca-file {{ tls_files.ca }}
{#- one line for HAProxy #} verify required verifyhost {{ listener.target_host }}
{#- SNI for host names only #}{% if not listener.target_is_ip %} sni str({{ listener.target_host }}){% endif +%}
{% else %}
    server target_{{ loop.index0 }} {{ listener.target_address }}
{% endif %}
{% endfor %}
"""
