# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuzzing every backend's renderer against the REAL proxy's checker (bounded examples).

For any listener address, ports, uid and targets the grammar accepts, the
rendered config passes ``haproxy -c`` / ``nginx -t`` (the stream module
loaded), and holds exactly the expected sections (nginx -t binds its listeners, so those are local
addresses and ports of this test's block): one frontend + backend per
listener for HAProxy, a TCP and a UDP ``server`` per listener for NGINX, one
``[listener_i]`` with its ``accept`` / ``connect`` for stunnel (which has no
checker: the config is parsed here, and started for real once). Targets are
IP addresses and ``localhost``: both checkers resolve host names, and random
names do not resolve offline (the pure-Python fuzz covers names).
Port block 40000-40999.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import (
    BACKENDS, psk_file_content, render_config)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import (
    SessionRecord, parse_ip, parse_target, parse_uid)

CHECKED = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

hosts = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: "[%s]" % a), st.just("localhost"))
targets = st.builds(lambda host, port: parse_target("%s:%d" % (host, port)), hosts, st.integers(1, 65535))
uids = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
listener_ips = st.ip_addresses().map(lambda a: parse_ip("listener_ip", str(a)))
port_lists = st.lists(st.integers(1, 65535), min_size=1, max_size=4, unique=True)
# nginx -t binds its listeners: addresses of this host, ports of this test's block.
local_ips = st.one_of(st.ip_addresses(network="127.0.0.0/8").filter(lambda a: str(a) not in ("127.0.0.0", "127.255.255.255")),
                      st.just("::1")).map(lambda a: parse_ip("listener_ip", str(a)))
local_port_lists = st.lists(st.integers(40100, 40999), min_size=1, max_size=4, unique=True)


def _paths(tmp):
    return {"run_dir": str(tmp), "pid_file": str(tmp / "proxy.pid"), "log_file": str(tmp / "proxy.log"),
            "psk_file": str(tmp / "psk.txt"), "foreground": False}


def _record(name, role, listener_ip, ports, wanted, uid):
    return SessionRecord(uid=parse_uid(uid), role=role, backend=name, runtime="process", listener_ip=listener_ip,
                         ports=ports, targets=[str(t) for t in wanted])


def _split(address):
    """``host:port`` of a rendered address (HAProxy's ``ipv6@``, NGINX's brackets undone)."""
    host, dummy, port = address.rpartition(":")
    return host.replace("ipv6@", "").strip("[]"), int(port)


def _expected(record):
    return [((record.listener_ip, port), parse_target(record.targets[i % len(record.targets)]))
            for i, port in enumerate(record.ports)]


def _check(name, text, tmp):
    backend = BACKENDS[name]
    path = tmp / backend.config_name
    path.write_text(text)
    result = subprocess.run(backend.check_argv(str(path), "/dev/null"), capture_output=True, text=True, check=False,
                            timeout=30)
    assert result.returncode == 0, text + result.stdout + result.stderr


def haproxy_sections(text):
    """[(kind, name, [(keyword, args...)])] of a HAProxy config, comments dropped."""
    sections = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if not line[0].isspace():
            sections.append((words[0], words[1] if len(words) > 1 else None, []))
        else:
            sections[-1][2].append(tuple(words))
    return sections


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed")
@CHECKED
@given(st.sampled_from(["PROD", "CONS"]), listener_ips, port_lists, st.lists(targets, min_size=1, max_size=3), uids)
def test_haproxy_accepts_exactly_the_expected_listeners(tmp_path, role, listener_ip, ports, wanted, uid):
    record = _record("haproxy", role, listener_ip, ports, wanted, uid)
    text = render_config(BACKENDS["haproxy"], record, _paths(tmp_path), "PSK-AES128-GCM-SHA256")
    _check("haproxy", text, tmp_path)
    sections = haproxy_sections(text)
    assert [kind for kind, dummy, dummy2 in sections] == ["global", "defaults"] + ["frontend", "backend"] * len(ports)
    for i, (listen, target) in enumerate(_expected(record)):
        frontend, backend = sections[2 + 2 * i], sections[3 + 2 * i]
        assert frontend[1] == "listener_%d" % i and backend[1] == "target_%d" % i
        binds = [line for line in frontend[2] if line[0] == "bind"]
        servers = [line for line in backend[2] if line[0] == "server"]
        assert len(binds) == 1 and len(binds[0]) == 2 and _split(binds[0][1]) == listen
        assert len(servers) == 1 and len(servers[0]) == 3 and _split(servers[0][2]) == (target.host, target.port)


def nginx_servers(text):
    """[(listen args, proxy_pass)] of the ``server`` blocks of an NGINX stream config."""
    blocks = re.findall(r"\n    server \{\n(.*?)\n    \}", text, re.S)
    servers = []
    for block in blocks:
        directives = [line.strip().rstrip(";").split() for line in block.splitlines() if line.strip()]
        listen = [d[1:] for d in directives if d[0] == "listen"]
        passes = [d[1:] for d in directives if d[0] == "proxy_pass"]
        assert len(listen) == 1 and len(passes) == 1 and len(passes[0]) == 1, block
        servers.append((listen[0], passes[0][0]))
    return servers


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")
@CHECKED
@given(st.sampled_from(["PROD", "CONS"]), local_ips, local_port_lists, st.lists(targets, min_size=1, max_size=3), uids)
def test_nginx_accepts_exactly_the_expected_listeners(tmp_path, role, listener_ip, ports, wanted, uid):
    record = _record("nginx", role, listener_ip, ports, wanted, uid)
    text = render_config(BACKENDS["nginx"], record, _paths(tmp_path), "PSK-AES128-GCM-SHA256")
    _check("nginx", text, tmp_path)
    servers = nginx_servers(text)
    assert text.count("server {") == len(servers) == 2 * len(ports)
    for i, (listen, target) in enumerate(_expected(record)):
        tcp, udp = servers[2 * i], servers[2 * i + 1]
        assert len(tcp[0]) == 1 and _split(tcp[0][0]) == listen
        assert udp[0][1:] == ["udp"] and _split(udp[0][0]) == listen
        assert _split(tcp[1]) == _split(udp[1]) == (target.host, target.port)


def stunnel_sections(text):
    """{section: {key: [values]}} of a stunnel config; the global options under None."""
    sections = {None: {}}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            assert line.endswith("]") and line[1:-1] not in sections, line
            current = line[1:-1]
            sections[current] = {}
            continue
        key, sep, value = line.partition("=")
        assert sep, line
        sections[current].setdefault(key.strip(), []).append(value.strip())
    return sections


@CHECKED
@given(st.sampled_from(["PROD", "CONS"]), listener_ips, port_lists, st.lists(targets, min_size=1, max_size=3), uids)
def test_stunnel_config_has_exactly_the_expected_services(tmp_path, role, listener_ip, ports, wanted, uid):
    record = _record("stunnel", role, listener_ip, ports, wanted, uid)
    text = render_config(BACKENDS["stunnel"], record, _paths(tmp_path), "PSK-AES128-GCM-SHA256")
    sections = stunnel_sections(text)
    assert sorted(sections, key=str) == sorted([None] + ["listener_%d" % i for i in range(len(ports))], key=str)
    assert set(sections[None]) == {"foreground", "pid", "output", "debug", "socket"}
    for i, (listen, target) in enumerate(_expected(record)):
        service = sections["listener_%d" % i]
        assert service["accept"] == ["%s:%d" % listen] and service["connect"] == ["%s:%d" % (target.host, target.port)]
        assert service["client"] == ["yes" if role == "CONS" else "no"]
        assert service["PSKsecrets"] == [str(tmp_path / "psk.txt")]
        assert service.get("PSKidentity", []) == (["scistream-" + record.uid] if role == "CONS" else [])


def _listening(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not shutil.which("stunnel"), reason="stunnel is not installed")
def test_stunnel_runs_a_rendered_config_with_a_non_uuid_uid(tmp_path):
    """stunnel has no checker: start it once on a config rendered from upstream-style uid and names."""
    record = _record("stunnel", "CONS", "127.0.0.1", [40011, 40012], [parse_target("localhost:40013"),
                                                                      parse_target("[::1]:40014")], "Go.client-uid_7")
    paths = dict(_paths(tmp_path), foreground=True, pid_file=None, log_file=str(tmp_path / "proxy.log"))
    config = tmp_path / "stunnel.conf"
    config.write_text(render_config(BACKENDS["stunnel"], record, paths, "PSK-AES128-GCM-SHA256"))
    psk = tmp_path / "psk.txt"
    psk.write_text(psk_file_content(record.uid, "k" * 32))
    os.chmod(psk, 0o600)
    proc = subprocess.Popen(["stunnel", str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert _listening(40011) and _listening(40012), (tmp_path / "proxy.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
