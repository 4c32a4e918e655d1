# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The docker runtime and proxy_container against the real Docker Engine, real proxies, real bytes."""

from __future__ import annotations

import os

import pytest

from conftest import ROOT, docker_client, files_under, run_playbook, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import listening_ports, wait_until

pytestmark = pytest.mark.docker

CHAIN = os.path.join(ROOT, "tests", "integration", "playbooks", "chain.yml")
CASES = os.path.join(ROOT, "tests", "integration", "playbooks", "cases.yml")
PROXY = os.path.join(ROOT, "tests", "integration", "playbooks", "proxy_container.yml")


def push(listener, size):
    host, dummy, port = listener.rpartition(":")
    return streamcheck.send(host, int(port), size, timeout=60)


def containers(**labels):
    filters = {"label": ["%s=%s" % item for item in labels.items()]}
    return docker_client().containers.list(all=True, filters=filters)


def chain(tmp_path, uid, sink_port, base, **extra):
    cvars = {
        "uid": uid, "backend": "haproxy", "runtime": "docker", "image": "scistream/haproxy:local",
        "producer_targets": ["127.0.0.1:%d" % sink_port],
        "prod_port_range": "%d-%d" % (base, base + 49), "cons_port_range": "%d-%d" % (base + 50, base + 99),
        "prod_state_dir": str(tmp_path / "gateway-a"), "cons_state_dir": str(tmp_path / "gateway-b"),
    }
    cvars.update(extra)
    return cvars


def test_two_sessions_are_isolated(tmp_path, sink):
    """Two sessions on the same gateways; releasing one leaves the other carrying data."""
    uids = ["aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002"]
    sinks = [sink(), sink()]
    runs = []
    for uid, s in zip(uids, sinks):
        rc, run = run_playbook(CHAIN, chain(tmp_path, uid, s.port, 23000))
        assert rc == 0, run.failures()
        runs.append(run.result("Consumer-side gateway"))
    assert not set(runs[0]["ports"]) & set(runs[1]["ports"])
    assert len(containers(**{"org.scistream.backend": "haproxy"})) >= 4

    rc, released = run_playbook(CHAIN, chain(tmp_path, uids[0], sinks[0].port, 23000, session_state="absent"))
    assert rc == 0 and released.changed == 2
    assert containers(**{"org.scistream.uid": uids[0]}) == []
    sent = push(runs[1]["listeners"][0], 50 * 1024 * 1024)
    assert sinks[1].wait()["sha256"] == sent["sha256"]
    run_playbook(CHAIN, chain(tmp_path, uids[1], sinks[1].port, 23000, session_state="absent"))
    assert containers(**{"org.scistream.uid": uids[1]}) == []


def test_explicit_docker_host_socket(tmp_path, sink, uid):
    """docker_host given as an explicit socket path (the seed's DockerSock) works like the default."""
    target = sink()
    case = dict(uid=uid, role="PROD", runtime="docker", image="scistream/haproxy:local", num_conn=1,
                port_range="23200-23209", targets=["127.0.0.1:%d" % target.port],
                docker_host="unix:///var/run/docker.sock")
    state_dir = str(tmp_path / "gw")
    rc, run = run_playbook(CASES, {"cases": [case, case], "state_dir": state_dir})
    first, second = run.result("Each case")["results"]
    assert first["changed"] and not second["changed"], first.get("msg")
    sent = push(first["listeners"][0], 20 * 1024 * 1024)
    assert target.wait()["sha256"] == sent["sha256"]
    run_playbook(CASES, {"cases": [dict(case, state="absent")], "state_dir": state_dir})
    assert containers(**{"org.scistream.uid": uid}) == [] and files_under(state_dir) == []


def test_mixed_runtime_pair_carries_data(tmp_path, sink, uid):
    """PROD as a host process, CONS as a container: the two runtimes interoperate."""
    target = sink()
    cvars = chain(tmp_path, uid, target.port, 23300, prod_runtime="process", cons_runtime="docker",
                  backend="stunnel", image="scistream/stunnel:local")
    rc, run = run_playbook(CHAIN, cvars)
    assert rc == 0, run.failures()
    cons = run.result("Consumer-side gateway")
    sent = push(cons["listeners"][0], 200 * 1024 * 1024)
    got = target.wait()
    assert got["sha256"] == sent["sha256"] and got["bytes"] == sent["bytes"]
    rc, again = run_playbook(CHAIN, cvars)
    assert again.changed == 0
    run_playbook(CHAIN, dict(cvars, session_state="absent"))
    assert containers(**{"org.scistream.uid": uid}) == [] and files_under(str(tmp_path)) == []


def test_docker_errors_are_clear_and_leave_nothing(tmp_path, uid):
    state_dir = str(tmp_path / "gw")
    base = dict(uid=uid, role="PROD", runtime="docker", num_conn=1, port_range="23400-23409",
                targets=["127.0.0.1:9"])
    cases = [
        dict(base, label="missing image", image="scistream/no-such-image:local"),
        dict(base, label="no engine", image="scistream/haproxy:local", docker_host="unix:///nonexistent/docker.sock"),
    ]
    rc, run = run_playbook(CASES, {"cases": cases, "state_dir": state_dir})
    missing, no_engine = run.result("Each case")["results"]
    assert missing["failed"] and "scistream/no-such-image:local" in missing["msg"]
    assert "build_images" in missing["msg"] and "docker build" in missing["msg"]
    assert no_engine["failed"] and "unix:///nonexistent/docker.sock" in no_engine["msg"]
    assert files_under(state_dir) == [] and containers(**{"org.scistream.uid": uid}) == []
    assert not set(range(23400, 23410)) & listening_ports("tcp")


HAPROXY_CONFIG = """defaults
    mode tcp
    timeout connect 5s
    timeout client 1m
    timeout server 1m
frontend in
    bind 127.0.0.1:%d
    default_backend out
backend out
    server sink 127.0.0.1:%d
"""


def test_proxy_container_lifecycle(tmp_path, sink):
    name = "scistream-test-proxy-container"
    first, second = sink(), sink()
    container = {"name": name, "backend": "haproxy", "image": "scistream/haproxy:local",
                 "config_dir": str(tmp_path / "conf"), "config": HAPROXY_CONFIG % (23500, first.port),
                 "files": [{"name": "extra.txt", "content": "s3cr3t-value-never-shown", "mode": "0600"}]}
    try:
        rc, checked = run_playbook(PROXY, {"container": container}, check=True, diff=True)
        assert checked.result("Proxy container")["actions"] == ["write_config", "create", "start"]
        assert not os.path.exists(container["config_dir"])

        rc, run = run_playbook(PROXY, {"container": container}, diff=True)
        assert rc == 0 and run.changed == 1, run.failures()
        assert "s3cr3t-value-never-shown" not in str(run.output)
        assert oct(os.stat(tmp_path / "conf" / "extra.txt").st_mode & 0o777) == "0o600"
        assert wait_until(lambda: 23500 in listening_ports("tcp"), 10)
        sent = push("127.0.0.1:23500", 20 * 1024 * 1024)
        assert first.wait()["sha256"] == sent["sha256"]

        rc, again = run_playbook(PROXY, {"container": container})
        assert again.changed == 0

        # A changed config is checked, then applied by signal to the same container.
        started = docker_client().containers.get(name).attrs["State"]["StartedAt"]
        changed = dict(container, config=HAPROXY_CONFIG % (23500, second.port))
        rc, reloaded = run_playbook(PROXY, {"container": changed}, diff=True)
        result = reloaded.result("Proxy container")
        assert result["actions"] == ["write_config", "reload"] and str(second.port) in result["diff"]["after"]
        assert docker_client().containers.get(name).attrs["State"]["StartedAt"] == started

        def reaches_second():
            try:
                push("127.0.0.1:23500", 1024 * 1024)
                return True
            except OSError:
                return False
        assert wait_until(reaches_second, 10, 0.2)
        assert second.wait()["bytes"] == 1024 * 1024

        # A config the proxy rejects is refused, and the running one stays.
        rc, bad = run_playbook(PROXY, {"container": dict(container, config="this is not haproxy\n")})
        assert rc != 0 and "rejected" in bad.result("Proxy container")["msg"]
        assert str(second.port) in (tmp_path / "conf" / "haproxy.cfg").read_text()

        docker_client().containers.get(name).kill()
        rc, healed = run_playbook(PROXY, {"container": changed})
        assert healed.result("Proxy container")["actions"] == ["start"]

        # stopped keeps the container, stopped; restarted restarts on every run.
        rc, stopped = run_playbook(PROXY, {"container": dict(changed, state="stopped")})
        assert stopped.result("Proxy container")["actions"] == ["stop"]
        assert docker_client().containers.get(name).status == "exited"
        rc, still = run_playbook(PROXY, {"container": dict(changed, state="stopped")})
        assert still.changed == 0
        for expected in (["start"], ["restart"]):
            rc, restarted = run_playbook(PROXY, {"container": dict(changed, state="restarted")})
            assert restarted.result("Proxy container")["actions"] == expected
            assert docker_client().containers.get(name).status == "running"
    finally:
        rc, removed = run_playbook(PROXY, {"container": dict(container, state="absent")})
    assert removed.result("Proxy container")["actions"] == ["remove", "remove_files"]
    assert not os.path.exists(container["config_dir"]) and containers(**{"org.scistream.managed-by": "scistream.gateway.proxy_container"}) == []


@pytest.mark.parametrize("address", ["192.0.2.7", "2001:db8::7"])
def test_nginx_config_check_accepts_an_address_only_the_gateway_has(tmp_path, address):
    """The throw-away checker has a network of its own: an NGINX listener on the gateway's
    own (here: any non-local) address must still pass ``nginx -t`` there."""
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import (
        DockerEngine, ProxyContainer)
    listen = "[%s]:5999" % address if ":" in address else "%s:5999" % address
    (tmp_path / "nginx.conf").write_text(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nevents {}\n"
        "stream { server { listen %s; proxy_pass 127.0.0.1:9; } }\n" % listen)
    container = ProxyContainer(DockerEngine(), "sslead-check", get_backend("nginx"), "scistream/nginx:local",
                               str(tmp_path))
    container.check_config("nginx.conf")  # raises S2DSError when nginx -t fails
    (tmp_path / "broken.conf").write_text("events {}\nstream { server { listen %s; nonsense; } }\n" % listen)
    with pytest.raises(Exception, match="rejected the rendered config"):
        container.check_config("broken.conf")


def test_build_images_playbook_builds_once_and_leaves_the_rest(tmp_path):
    """scistream.gateway.build_images (the gateway role's build tasks): builds the tag asked for, then changed=0."""
    tag = "citest-%s" % os.getpid()
    extra = {"scistream_build_hosts": "localhost", "scistream_base_image": "local/debian:bookworm",
             "scistream_image_tag": tag, "scistream_image_backends": ["stunnel"],
             "scistream_image_build_dir": str(tmp_path / "build")}
    client = docker_client()
    try:
        rc, first = run_playbook("scistream.gateway.build_images", extra, timeout=600)
        assert rc == 0, first.failures()
        assert first.changed == 2  # the Dockerfile copied, the image built
        assert "scistream/stunnel:%s" % tag in client.images.get("scistream/stunnel:%s" % tag).tags
        rc, second = run_playbook("scistream.gateway.build_images", extra, timeout=600)
        assert rc == 0 and second.changed == 0
    finally:
        if any("scistream/stunnel:%s" % tag in image.tags for image in client.images.list(name="scistream/stunnel")):
            client.images.remove("scistream/stunnel:%s" % tag)
