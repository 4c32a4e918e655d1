# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""psk_compat: what upstream SciStream 1.2's stunnel sessions speak, rendered from Backend data."""

from __future__ import annotations

from hypothesis import given, strategies as st
import pytest

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend, render_config
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord, SessionSpec

UID = "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
PATHS = {"run_dir": "/r", "pid_file": "/r/proxy/proxy.pid", "log_file": "/r/proxy/proxy.log", "psk_file": "/r/psk.txt",
         "foreground": False}


def rendered(spec):
    record = SessionRecord(uid=spec.uid, role=spec.role, backend="stunnel", runtime="process", listener_ip="127.0.0.1",
                           ports=[5100], targets=[str(t) for t in spec.targets])
    return render_config(get_backend("stunnel"), record, PATHS, spec.psk_cipher, psk_identity=spec.psk_identity)


def test_upstream_identity_key_cipher_and_version():
    spec = SessionSpec.build(UID, "CONS", targets=["127.0.0.1:7000"], backend="stunnel", psk_compat="scistream-1.2")
    assert get_backend("stunnel").key_files(spec) == {"psk.txt": "client1:%s\n" % UID.replace("-", "")}
    config = rendered(spec)
    assert "PSKidentity = client1\n" in config and "ciphers = eNULL\n" in config
    assert "sslVersion = TLSv1.2\n" in config and "securityLevel = 0\n" in config


def test_native_sessions_are_unchanged():
    spec = SessionSpec.build(UID, "CONS", targets=["127.0.0.1:7000"], backend="stunnel", psk="n" * 32)
    assert get_backend("stunnel").key_files(spec) == {"psk.txt": "scistream-%s:%s\n" % (UID, "n" * 32)}
    assert "PSKidentity = scistream-%s\n" % UID in rendered(spec) and "PSK-AES128-GCM-SHA256" in rendered(spec)


@given(st.text(max_size=30).filter(lambda text: text != "scistream-1.2"))
def test_any_other_mode_is_refused_naming_the_field(value):
    with pytest.raises(S2DSError) as caught:
        SessionSpec.build(UID, "CONS", targets=["127.0.0.1:7000"], backend="stunnel", psk_compat=value)
    assert caught.value.field == "psk_compat"
