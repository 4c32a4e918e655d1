# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Each template renders what its proxy expects, and the proxy's own checker accepts it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend, render_config
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord

UID = "4f6c1b7e-2a3d-4c5e-9f00-1234567890ab"


def record(role="PROD", targets=("127.0.0.1:9000", "[::1]:9001", "localhost:9002"), ip="127.0.0.1"):
    return SessionRecord(uid=UID, role=role, backend="x", runtime="process", listener_ip=ip,
                         ports=[47000, 47001, 47002, 47003], targets=list(targets))


def paths(tmp_path):
    return {"run_dir": str(tmp_path), "pid_file": str(tmp_path / "pid"), "log_file": str(tmp_path / "log"),
            "psk_file": str(tmp_path / "psk.txt"), "foreground": False}


def render(tmp_path, backend, **kwargs):
    return render_config(get_backend(backend), record(**kwargs), paths(tmp_path), "PSK-AES128-GCM-SHA256")


def test_haproxy_one_frontend_backend_pair_per_listener(tmp_path):
    text = render(tmp_path, "haproxy")
    assert text.count("\nfrontend ") == 4 and text.count("\nbackend ") == 4
    assert "bind 127.0.0.1:47000" in text and "server target_0 127.0.0.1:9000" in text
    assert "server target_1 ipv6@::1:9001" in text and "server target_2 localhost:9002" in text
    # listener i -> targets[i mod len]
    assert "server target_3 127.0.0.1:9000" in text


def test_nginx_tcp_and_udp_server_per_listener(tmp_path):
    text = render(tmp_path, "nginx", ip="::")
    assert text.count("listen [::]:4700") == 8 and text.count(" udp;") == 4
    assert "proxy_pass [::1]:9001;" in text and "load_module" in text


def test_stunnel_sides(tmp_path):
    cons = render(tmp_path, "stunnel", role="CONS")
    prod = render(tmp_path, "stunnel", role="PROD")
    assert cons.count("client = yes") == 4 and "PSKidentity = scistream-" + UID in cons
    assert prod.count("client = no") == 4 and "PSKidentity" not in prod
    assert "ciphers = PSK-AES128-GCM-SHA256" in prod and "securityLevel" not in prod
    null = render_config(get_backend("stunnel"), record(), paths(tmp_path), "PSK-NULL-SHA256")
    assert "securityLevel = 0" in null and "does NOT encrypt" in null


def test_user_template_gets_the_same_variables(tmp_path):
    text = render_config(get_backend("haproxy"), record(), paths(tmp_path), "x",
                         "{% for l in listeners %}{{ l.bind_address }}>{{ l.target_address }} {% endfor %}")
    assert text.startswith("127.0.0.1:47000>127.0.0.1:9000 127.0.0.1:47001>ipv6@::1:9001")


def test_broken_user_template_names_the_field(tmp_path):
    with pytest.raises(S2DSError) as err:
        render_config(get_backend("haproxy"), record(), paths(tmp_path), "x", "{{ no_such_variable }}")
    assert err.value.field == "template"


@pytest.mark.parametrize("backend", ["haproxy", "nginx"])
def test_the_proxy_accepts_the_rendered_config(tmp_path, backend):
    b = get_backend(backend)
    if not shutil.which(backend):
        pytest.skip("%s is not installed" % backend)
    path = tmp_path / b.config_name
    path.write_text(render(tmp_path, backend, targets=("127.0.0.1:9000", "[::1]:9001")))
    proc = subprocess.run(b.check_argv(str(path), "/dev/null"), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
