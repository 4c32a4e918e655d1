# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pki role with community.crypto on this host: CA on the "controller", key and certificate on the "gateway".

Then a HAProxy chain (process runtime) runs on the role's files: what the
role makes is what `encryption: tls` accepts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat

from cryptography import x509

from conftest import ROOT, Sink, run_playbook, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "pki.yml")


def load(path):
    with open(path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read())


def sans(cert):
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(["DNS:" + n for n in ext.get_values_for_type(x509.DNSName)]
                  + ["IP:" + str(n) for n in ext.get_values_for_type(x509.IPAddress)])


def test_pki_role_issues_renews_and_its_files_carry_an_encrypted_stream(tmp_path, uid):
    pki_dir, ca_dir = tmp_path / "gateway-pki", tmp_path / "controller-ca"
    pvars = {"scistream_pki_dir": str(pki_dir), "scistream_pki_ca_dir": str(ca_dir),
             "scistream_pki_python_packages": [], "scistream_wan_address": "127.0.0.1"}
    rc, run = run_playbook(PLAYBOOK, pvars)
    assert rc == 0, run.failures()
    assert stat.S_IMODE(os.stat(pki_dir / "gateway.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca_dir / "ca.key").st_mode) == 0o600
    cert, ca = load(pki_dir / "gateway.crt"), load(pki_dir / "ca.crt")
    assert ca == load(ca_dir / "ca.crt") and cert.issuer == ca.subject
    assert sans(cert) == ["DNS:127.0.0.1", "DNS:localhost", "IP:127.0.0.1"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True

    rc, again = run_playbook(PLAYBOOK, pvars)
    assert rc == 0 and again.changed == 0, again.failures()

    # A DNS name as WAN address and one more name, and a short lifetime: issued again with the new names.
    renamed_vars = dict(pvars, scistream_wan_address="gw-a.example.org", scistream_pki_extra_sans=["IP:127.0.0.1"])
    rc, renamed = run_playbook(PLAYBOOK, dict(renamed_vars, scistream_pki_cert_days=2, scistream_pki_renew_days=1))
    assert rc == 0 and renamed.changed, renamed.failures()
    short = load(pki_dir / "gateway.crt")
    assert sans(short) == ["DNS:gw-a.example.org", "DNS:localhost", "IP:127.0.0.1"]
    assert short.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) < datetime.timedelta(days=3)

    # Near expiry (2 days left, renewed 30 days ahead): issued again, by the same CA given as a CA of your own.
    rc, renewed = run_playbook(PLAYBOOK, dict(renamed_vars, scistream_pki_ca_manage=False,
                                              scistream_pki_ca_cert=str(ca_dir / "ca.crt"),
                                              scistream_pki_ca_key=str(ca_dir / "ca.key")))
    assert rc == 0 and renewed.changed, renewed.failures()
    assert load(pki_dir / "gateway.crt").not_valid_after_utc - short.not_valid_after_utc > datetime.timedelta(days=300)
    assert load(pki_dir / "ca.crt") == ca and sans(load(pki_dir / "gateway.crt")) == sans(short)

    rc, missing = run_playbook(PLAYBOOK, dict(pvars, scistream_pki_ca_manage=False,
                                              scistream_pki_ca_cert=str(tmp_path / "nope.crt")))
    assert rc != 0 and "nope.crt" in str(missing.failures())

    # The role's files carry an encrypted stream (the same certificate on both gateways here; it names
    # localhost and gw-a.example.org as DNS names, 127.0.0.1 as IP entry only, so CONS dials localhost).
    files = dict(tls_cert=str(pki_dir / "gateway.crt"), tls_key=str(pki_dir / "gateway.key"),
                 tls_ca=str(pki_dir / "ca.crt"))
    runtimes = {"process": lambda spec: ProcessRuntime("daemon")}
    prod, cons = Gateway(str(tmp_path / "a"), runtimes, policy=LOOPBACK_POLICY), Gateway(str(tmp_path / "b"), runtimes, policy=LOOPBACK_POLICY)
    data_sink = Sink(port=30981)
    common = dict(uid=uid, num_conn=1, listener_ip="127.0.0.1", encryption="tls", **files)
    p = prod.present(SessionSpec.build(role="PROD", port_range="30982-30985", targets=["127.0.0.1:30981"], **common))
    try:
        c = cons.present(SessionSpec.build(role="CONS", port_range="30986-30989",
                                           targets=["localhost:%d" % p.session["ports"][0]], **common))
        sent = streamcheck.send("127.0.0.1", c.session["ports"][0], 8 * 1024 * 1024, timeout=30)
        assert data_sink.wait()["sha256"] == sent["sha256"]
    finally:
        prod.absent(uid)
        cons.absent(uid)
    assert ipaddress.ip_address("127.0.0.1") in load(pki_dir / "gateway.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
