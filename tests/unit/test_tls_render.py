# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""encryption tls in the templates and the Backend data: what each gateway is told to verify."""

from __future__ import annotations

import os

import pytest
from gateway_fakes import FakeRuntime

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend, render_config
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord, SessionSpec, TLSMaterial

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

UID = "4f6c1b7e-2a3d-4c5e-9f00-1234567890ab"
CERT = "-----BEGIN CERTIFICATE-----\nMIIcert\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nSECRETKEYTEXT\n-----END PRIVATE KEY-----\n"
CA = "-----BEGIN CERTIFICATE-----\nMIIca\n-----END CERTIFICATE-----\n"
TLS = TLSMaterial(cert=CERT, key=KEY, ca=CA)


def render(backend, role, targets=("10.0.0.2:5100", "gw-a.example.org:5101"), tls=TLS):
    record = SessionRecord(uid=UID, role=role, backend=backend, runtime="process", listener_ip="0.0.0.0",
                           ports=[5200, 5201], targets=list(targets))
    paths = {"run_dir": "/etc/scistream", "pid_file": "/tmp/pid", "log_file": "/dev/stderr",
             "psk_file": "/etc/scistream/psk.txt", "foreground": True}
    return render_config(get_backend(backend), record, paths, "PSK-AES128-GCM-SHA256", tls=tls)


def test_haproxy_prod_terminates_tls_and_demands_a_client_certificate():
    text = render("haproxy", "PROD")
    assert "bind 0.0.0.0:5200 ssl crt /etc/scistream/tls.pem ca-file /etc/scistream/tls-ca.crt verify required" in text
    assert "ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3" in text
    assert "verify none" not in text and "SECRETKEYTEXT" not in text


def test_haproxy_cons_checks_the_dialled_host_and_sends_sni_for_names_only():
    text = render("haproxy", "CONS")
    assert ("server target_0 10.0.0.2:5100 ssl crt /etc/scistream/tls.pem ca-file /etc/scistream/tls-ca.crt "
            "verify required verifyhost 10.0.0.2\n") in text
    assert "verify required verifyhost gw-a.example.org sni str(gw-a.example.org)\n" in text
    assert "bind 0.0.0.0:5200\n" in text


def test_nginx_tls_has_no_udp_and_checks_names():
    prod, cons = render("nginx", "PROD"), render("nginx", "CONS")
    assert " udp;" not in prod and " udp;" not in cons
    assert "proxy_half_close on;" in prod and "proxy_half_close on;" in cons
    assert "listen 0.0.0.0:5200 ssl;" in prod and "ssl_verify_client on;" in prod
    assert "ssl_protocols TLSv1.3;" in prod and "ssl_certificate_key /etc/scistream/tls.key;" in prod
    assert "proxy_ssl_verify on;" in cons and "proxy_ssl_trusted_certificate /etc/scistream/tls-ca.crt;" in cons
    assert "proxy_ssl_name 10.0.0.2;\n        proxy_ssl_server_name off;" in cons
    assert "proxy_ssl_name gw-a.example.org;\n        proxy_ssl_server_name on;" in cons
    assert " udp;" in render("nginx", "PROD", tls=None)


def test_tls_12_on_request():
    text = render("haproxy", "CONS", tls=TLSMaterial(cert=CERT, key=KEY, ca=CA, version="1.2"))
    assert "ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2" in text


def test_backend_data_for_tls():
    haproxy, nginx, stunnel = get_backend("haproxy"), get_backend("nginx"), get_backend("stunnel")
    assert "tls" in haproxy.encryptions and "tls" in nginx.encryptions and "tls" not in stunnel.encryptions
    assert nginx.protocols_for("tls") == ("tcp",) and nginx.protocols_for("none") == ("tcp", "udp")
    spec = SessionSpec(uid=UID, role="PROD", tls=TLS)
    assert haproxy.key_files(spec) == {"tls.pem": CERT + KEY, "tls-ca.crt": CA}
    assert nginx.key_files(spec) == {"tls.crt": CERT, "tls.key": KEY, "tls-ca.crt": CA}
    assert haproxy.file_mode("tls.pem") == 0o600 and nginx.file_mode("tls.key") == 0o600
    assert nginx.file_mode("tls.crt") == 0o644 and nginx.file_mode("nginx.conf") == 0o644
    assert "SECRETKEYTEXT" not in repr(spec) and "SECRETKEYTEXT" not in repr(TLS)


def test_stunnel_refuses_tls_and_says_why(tmp_path):
    for name, text in (("c.crt", CERT), ("k.key", KEY), ("ca.crt", CA)):
        (tmp_path / name).write_text(text)
    with pytest.raises(S2DSError) as error:
        SessionSpec.build(uid=UID, role="PROD", backend="stunnel", encryption="tls", tls_cert=str(tmp_path / "c.crt"),
                          tls_key=str(tmp_path / "k.key"), tls_ca=str(tmp_path / "ca.crt"))
    assert error.value.field == "encryption"
    assert "pre-shared key" in str(error.value) and "haproxy or nginx" in str(error.value)
    spec = SessionSpec.build(uid=UID, role="PROD", encryption="tls", tls_cert=str(tmp_path / "c.crt"),
                             tls_key=str(tmp_path / "k.key"), tls_ca=str(tmp_path / "ca.crt"), tls_version="1.2")
    assert spec.encryption == "tls" and spec.tls.version == "1.2" and spec.tls.key == KEY


def test_gateway_writes_tls_files_and_removes_them_when_encryption_is_turned_off(tmp_path):
    for name, text in (("c.crt", CERT), ("k.key", KEY), ("ca.crt", CA)):
        (tmp_path / name).write_text(text)
    fake = FakeRuntime()
    gateway = Gateway(str(tmp_path / "state"), {"process": lambda spec: fake}, policy=LOOPBACK_POLICY)
    files = dict(tls_cert=str(tmp_path / "c.crt"), tls_key=str(tmp_path / "k.key"), tls_ca=str(tmp_path / "ca.crt"))
    common = dict(uid=UID, role="PROD", backend="nginx", targets=["127.0.0.1:9"], port_range="30990-30999")
    outcome = gateway.present(SessionSpec.build(encryption="tls", **common, **files))
    run_dir = gateway.store.run_dir(UID)
    assert sorted(os.listdir(run_dir)) == ["nginx.conf", "tls-ca.crt", "tls.crt", "tls.key"]
    assert oct(os.stat(os.path.join(run_dir, "tls.key")).st_mode & 0o777) == "0o600"
    assert outcome.session["encryption"] == "tls" and "SECRETKEYTEXT" not in str(outcome)
    assert not gateway.present(SessionSpec.build(encryption="tls", **common, **files)).changed
    (tmp_path / "c.crt").write_text(CERT.replace("MIIcert", "MIIrenewed"))
    renewed = gateway.present(SessionSpec.build(encryption="tls", **common, **files))
    assert renewed.changed and renewed.actions[-2:] == ["write_config", "reload"]
    plain = gateway.present(SessionSpec.build(**common))
    assert plain.changed and "write_config" in plain.actions and plain.session["encryption"] == "none"
    assert sorted(os.listdir(run_dir)) == ["nginx.conf"]


def test_a_resolved_name_is_dialled_by_address_and_checked_by_name():
    """The target policy resolved gw-a.example.org: the proxy dials the checked address, TLS checks the name."""
    record = SessionRecord(uid=UID, role="CONS", backend="haproxy", runtime="process", listener_ip="0.0.0.0",
                           ports=[5200, 5201], targets=["10.0.0.2:5100", "10.0.0.3:5101"],
                           target_names=[None, "gw-a.example.org"])
    paths = {"run_dir": "/etc/scistream", "pid_file": "/tmp/pid", "log_file": "/dev/stderr",
             "psk_file": "/etc/scistream/psk.txt", "foreground": True}
    text = render_config(get_backend("haproxy"), record, paths, "PSK-AES128-GCM-SHA256", tls=TLS)
    assert "server target_1 10.0.0.3:5101 ssl" in text
    assert "verifyhost gw-a.example.org sni str(gw-a.example.org)\n" in text and "verifyhost 10.0.0.2\n" in text
    nginx = render_config(get_backend("nginx"), record, paths, "PSK-AES128-GCM-SHA256", tls=TLS)
    assert "proxy_ssl_name gw-a.example.org;" in nginx and "proxy_pass 10.0.0.3:5101;" in nginx
