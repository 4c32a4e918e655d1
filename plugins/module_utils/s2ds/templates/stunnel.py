# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""stunnel, TLS with a pre-shared key between the two gateways.

The CONS gateway is the TLS client (plain in from the consumer, TLS out to the
PROD gateway); the PROD gateway is the TLS server (TLS in, plain out to the
producer). The key lives in a separate 0600 file, never in this config.
"""

TEMPLATE = r"""; SciStream S2DS session {{ uid }} ({{ role }}), rendered by scistream.gateway: do not edit.
foreground = {{ 'yes' if foreground else 'no' }}
{% if pid_file %}
pid = {{ pid_file }}
{% endif %}
{% if log_file %}
output = {{ log_file }}
{% endif %}
debug = notice
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
{% for listener in listeners %}

[listener_{{ loop.index0 }}]
client = {{ 'yes' if role == 'CONS' else 'no' }}
accept = {{ listener.bind_address }}
connect = {{ listener.target_address }}
sslVersion = TLSv1.2
ciphers = {{ psk_cipher }}
{% if 'NULL' in psk_cipher.upper() %}
; A null cipher authenticates the peer but does NOT encrypt the stream.
securityLevel = 0
{% endif %}
PSKsecrets = {{ psk_file }}
{% if role == 'CONS' %}
PSKidentity = {{ psk_identity }}
{% endif %}
{% endfor %}
"""
