# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Mutual TLS between the two gateways of a session (HAProxy and NGINX)."""

    DOCUMENTATION = r"""
options:
  encryption:
    description:
      - V(tls) encrypts the stream between the two gateways with mutual TLS, for O(scistream.gateway.s2ds#module:backend=haproxy)
        and O(scistream.gateway.s2ds#module:backend=nginx). The V(CONS) gateway takes plain TCP from the consumer and opens
        TLS to the V(PROD) gateway's listeners, checking PROD's certificate against O(tls_ca) and the host it dials
        (the host part of each target); the V(PROD) gateway terminates TLS, demands a client certificate signed by
        O(tls_ca), and forwards plain TCP to the producer. Nothing is ever accepted unverified.
      - HAProxy 2.6 and NGINX 1.22 compare the dialled host with the certificate's DNS names only (not its IP
        address entries), so a target given by IP address needs that address as a DNS name in the subjectAltName as
        well. The certificates of the C(scistream.gateway.pki) role carry both.
      - With V(nginx), an encrypted session carries TCP only (the NGINX stream module has no DTLS), and its listeners
        get no UDP server.
      - V(stunnel) always encrypts with its pre-shared key (see O(scistream.gateway.s2ds#module:psk)) and takes V(none) here.
      - The three files are copied into the session's run directory (the key 0600), where the proxy, in a process
        or a container, reads them. Their content is compared on every run, so a renewed certificate at the same
        path is written and applied by a graceful reload, and reported as changed. The key never appears in the
        output, the diff, the session record or an error.
    type: str
    choices: [none, tls]
    default: none
  tls_cert:
    description:
      - Path on the gateway of this gateway's certificate (PEM, optionally followed by intermediate CA certificates).
        Required with O(encryption=tls). It is PROD's server and CONS's client certificate.
    type: path
  tls_key:
    description: Path on the gateway of the private key of O(tls_cert) (PEM, unencrypted). Required with O(encryption=tls).
    type: path
  tls_ca:
    description:
      - Path on the gateway of the CA certificate(s) (PEM) that sign the other gateway's certificate.
        Required with O(encryption=tls).
    type: path
  tls_version:
    description: The TLS version both gateways speak, and the only one they accept.
    type: str
    choices: ["1.3", "1.2"]
    default: "1.3"
"""
