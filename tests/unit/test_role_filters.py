# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The roles' filters (plugins/filter/roles.py): what the s2cs and gateway roles, the daemon role and verify.yml use."""

from __future__ import annotations

import os
import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.scistream.gateway.plugins.filter.roles import (
    FilterModule, cert_sans, code_tree, counted_bytes, file_sd_targets, s2cs_instances, s2cs_protected_ports)
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.sandbox import unit_sandbox

DEFAULTS = {"listener_ip": "0.0.0.0", "backend": "haproxy", "runtime": "process", "image": "", "client_id": "",
            "client_secret": "", "hello_timeout": 180}


def test_filters_are_registered():
    assert set(FilterModule().filters()) == {"unit_sandbox", "code_tree", "s2cs_instances", "s2cs_protected_ports", "cert_sans",
                                             "file_sd_targets", "counted_bytes"}


def test_unit_sandbox_is_the_one_source():
    lines = FilterModule().filters()["unit_sandbox"](["-/var/lib/x"], capabilities=["CAP_NET_ADMIN"],
                                                     address_families=["AF_INET", "AF_NETLINK"])
    assert lines == unit_sandbox(["-/var/lib/x"], capabilities=("CAP_NET_ADMIN",), address_families=("AF_INET", "AF_NETLINK"))
    assert "ReadWritePaths=-/var/lib/x" in lines and "CapabilityBoundingSet=CAP_NET_ADMIN" in lines
    assert "RestrictAddressFamilies=AF_INET AF_NETLINK" in lines and "NoNewPrivileges=yes" in lines
    default = FilterModule().filters()["unit_sandbox"]([])
    assert "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" in default


def test_code_tree_lists_python_files_and_hashes_them(tmp_path):
    for name in ("a/__init__.py", "a/sub/b.py", "a/__pycache__/b.cpython-311.pyc", "a/notes.txt", "c/d.py"):
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    tree = code_tree(str(tmp_path), ["a"])
    assert tree["files"] == ["a/__init__.py", "a/sub/b.py"]
    assert code_tree(str(tmp_path), ["a"])["sha256"] == tree["sha256"]
    (tmp_path / "a/sub/b.py").write_text("x = 2\n")
    changed = code_tree(str(tmp_path), ["a"])["sha256"]
    assert changed != tree["sha256"]
    os.rename(tmp_path / "a/sub/b.py", tmp_path / "a/sub/c.py")
    assert code_tree(str(tmp_path), ["a"])["sha256"] != changed
    assert code_tree(str(tmp_path), ["a", "c"])["files"][-1] == "c/d.py"
    with pytest.raises(AnsibleFilterError, match="package 'nope'"):
        code_tree(str(tmp_path), ["nope"])


def test_the_collection_code_tree_has_the_daemons():
    src = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "module_utils")
    files = code_tree(src, ["s2ds", "s2cs"])["files"]
    assert "s2cs/server.py" in files and "s2ds/templates/haproxy.py" in files and "s2ds/runtimes/process.py" in files


def test_instances_take_defaults_images_and_state_dirs():
    first, second = s2cs_instances(
        [{"name": "main", "port": 5000}, {"name": "b", "port": 5001, "backend": "stunnel", "state_dir": "/srv/b"}],
        DEFAULTS, "/var/lib/scistream", {"haproxy": "my/haproxy:2"})
    assert first == dict(DEFAULTS, name="main", port=5000, image="my/haproxy:2", state_dir="/var/lib/scistream/s2cs-main")
    assert second["backend"] == "stunnel" and second["image"] == "" and second["state_dir"] == "/srv/b"
    [own] = s2cs_instances([{"name": "c", "port": 1, "image": "x/y:1"}], DEFAULTS, "/s", {"haproxy": "my/haproxy:2"})
    assert own["image"] == "x/y:1"


@pytest.mark.parametrize("instances, message", [
    ([], "non-empty list"),
    ("main", "non-empty list"),
    (["main"], r"scistream_s2cs_instances\[0\]: must be a mapping"),
    ([{"port": 1}], r"\[0\]: name None"),
    ([{"name": "a b", "port": 1}], "name 'a b'"),
    ([{"name": "a\n", "port": 1}], "name 'a\\\\n'"),
    ([{"name": "a", "port": 1}, {"name": "a", "port": 2}], "name 'a' is also the name of instance 'a'"),
    ([{"name": "a", "port": 1}, {"name": "b", "port": 1}], "instance 'b'.*port '1' is also the port of instance 'a'"),
    ([{"name": "a", "port": 1, "state_dir": "/s"}, {"name": "b", "port": 2, "state_dir": "/s"}], "state_dir '/s'"),
    ([{"name": "a", "port": 1, "client_secret": "s"}], "instance 'a'.*client_secret needs a client_id"),
    ([{"name": "a", "port": 1, "backend": "nftables"}], "instance 'a'.*backend 'nftables': must be one of"),
    ([{"name": "a", "port": 1, "runtime": "janus"}], "runtime 'janus'"),
])
def test_instances_refused_naming_the_field(instances, message):
    with pytest.raises(AnsibleFilterError, match=message):
        s2cs_instances(instances, DEFAULTS, "/var/lib/scistream")


def test_cert_sans():
    assert cert_sans(["gw.example.org", None, "", "10.0.0.1", "0.0.0.0", "::", "2001:DB8::1", "gw.example.org",
                      "10.0.0.1"], ["DNS:alias", "IP:10.0.0.1"]) == [
        "DNS:gw.example.org", "IP:10.0.0.1", "IP:2001:db8::1", "DNS:alias"]
    assert cert_sans([]) == []
    # A name of digits and dots that is no address is a DNS name, not an IP entry the library refuses.
    assert cert_sans(["1.2.3"]) == ["DNS:1.2.3"]


def test_file_sd_targets():
    hostvars = {"gw-a": {"scistream_exporter_enabled": True},
                "gw-b": {"scistream_exporter_enabled": "yes", "scistream_exporter_port": 9100},
                "gw-c": {"scistream_exporter_enabled": True, "scistream_exporter_target": "10.0.0.3:9787"},
                "gw-d": {"scistream_exporter_enabled": "false"}, "gw-e": {}}
    assert file_sd_targets(["gw-a", "gw-b", "gw-c", "gw-d", "gw-e"], hostvars) == [
        {"targets": ["gw-a:9787"], "labels": {"gateway": "gw-a"}},
        {"targets": ["gw-b:9100"], "labels": {"gateway": "gw-b"}},
        {"targets": ["10.0.0.3:9787"], "labels": {"gateway": "gw-c"}}]


def _info(uid, role, *counts):
    return {"sessions": [{"uid": "other", "role": role, "traffic": [{"bytes_in": 999}]},
                         {"uid": uid, "role": role, "traffic": [{"bytes_in": c} for c in counts]}]}


def test_counted_bytes():
    stream = {"uid": "u1", "producer_gateway": "gw-a", "consumer_gateway": "gw-b"}
    hostvars = {"gw-a": {"scistream_gateway_sessions": _info("u1", "PROD", 10, 5),
                         "scistream_gateway_counters": _info("u1", "PROD", 110, 25)},
                "gw-b": {"scistream_gateway_sessions": _info("u1", "CONS", 0),
                         "scistream_gateway_counters": {"sessions": [{"uid": "u1", "role": "CONS"}]}}}
    assert counted_bytes(stream, hostvars) == {"PROD": 120, "CONS": "not counted (s2ds_info says why)"}
    assert counted_bytes(stream, {}) == {"PROD": "not counted (s2ds_info says why)",
                                         "CONS": "not counted (s2ds_info says why)"}


def test_s2cs_protected_ports_in_order_once_each():
    instances = [{"name": "a", "port": 5000, "metrics_port": 0}, {"name": "b", "port": "5001", "metrics_port": 9791}]
    assert s2cs_protected_ports(instances, 9787, [8443, 5001]) == [5000, 9787, 5001, 9791, 8443]
    assert s2cs_protected_ports([], "", []) == [5000]


@pytest.mark.parametrize("instances, exporter, extra, named", [
    ([{"name": "b", "port": "50 01"}], 9787, [], "instance 'b' port"),
    ([], "+9787", [], "scistream_exporter_port"),
    ([], 9787, [70000], "scistream_s2cs_protected_ports[0]"),
    ([], 9787, [True], "scistream_s2cs_protected_ports[0]"),
    ([{"name": "c", "port": 5002, "metrics_port": "x\n"}], 9787, [], "instance 'c' metrics_port"),
])
def test_s2cs_protected_ports_refuses_naming_the_field(instances, exporter, extra, named):
    with pytest.raises(AnsibleFilterError, match=re.escape(named)):
        s2cs_protected_ports(instances, exporter, extra)
