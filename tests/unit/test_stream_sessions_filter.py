# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The stream_sessions filter (playbooks/stream.yml): the items it builds, and inventory values it refuses."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.scistream.gateway.plugins.filter.stream_sessions import FilterModule, stream_sessions

UID_A = "4f6c1b7e-2a3d-4c5e-9f00-1234567890ab"
UID_B = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
STREAMS = [
    {"name": "detector-frames", "uid": UID_A.upper(), "producer_gateway": "gw-a", "consumer_gateway": "gw-b",
     "producer_targets": ["10.0.3.10:5074", "10.0.3.10:5075"], "num_conn": 2, "backend": "haproxy",
     "encryption": "tls", "producer_host": "daq-1", "lifetime": "12h", "idle_timeout": 1800,
     "rate": "2Gbit"},
    {"name": "detector-control", "uid": "upstream-go-uid", "producer_gateway": "gw-a", "consumer_gateway": "gw-b",
     "producer_targets": ["[2001:DB8::10]:6000"], "backend": "stunnel", "psk": "p" * 20, "image": "my/stunnel:1"},
    {"uid": UID_B, "producer_gateway": "gw-b", "consumer_gateway": "gw-a", "producer_targets": ["daq-2.example.org:7"]},
]
SETTINGS = {"pki_dir": "/srv/pki", "runtime": "docker", "images": {"haproxy": "my/haproxy:2"},
            "listener_ip": "10.0.1.2", "port_range": "5100-5200"}


def test_prod_items_of_one_gateway():
    first, second = stream_sessions(STREAMS, "PROD", "gw-a", SETTINGS)
    assert first == {"uid": UID_A, "role": "PROD", "targets": ["10.0.3.10:5074", "10.0.3.10:5075"], "num_conn": 2,
                     "backend": "haproxy", "runtime": "docker", "image": "my/haproxy:2", "listener_ip": "10.0.1.2",
                     "port_range": "5100-5200", "psk": None, "encryption": "tls", "tls_version": None,
                     "tls_cert": "/srv/pki/gateway.crt", "tls_key": "/srv/pki/gateway.key", "tls_ca": "/srv/pki/ca.crt",
                     "lifetime": "12h", "idle_timeout": 1800, "rate": "2Gbit"}
    assert second["uid"] == "upstream-go-uid" and second["targets"] == ["[2001:db8::10]:6000"]
    assert second["image"] == "my/stunnel:1" and second["psk"] == "p" * 20 and second["tls_cert"] is None
    assert second["num_conn"] is None and second["encryption"] is None
    assert second["lifetime"] is None and second["idle_timeout"] is None and second["rate"] is None


def test_defaults_without_settings():
    [item] = stream_sessions(STREAMS, "PROD", "gw-b")
    assert item["image"] is None and item["runtime"] is None and item["listener_ip"] is None
    assert item["targets"] == ["daq-2.example.org:7"]
    assert stream_sessions(STREAMS, "PROD", "gw-c") == []


def test_cons_items_forward_to_the_prod_listeners():
    hostvars = {"gw-a": {"scistream_wan_address": "2001:db8::a",
                         "scistream_prod_sessions": {"sessions": [{"uid": UID_A, "ports": [5100, 5101]},
                                                                  {"uid": "upstream-go-uid", "ports": [5102]}]}},
                "gw-b": {"scistream_wan_address": "192.0.2.2",
                         "scistream_prod_sessions": {"sessions": [{"uid": UID_B, "ports": [5300]}]}}}
    [item] = stream_sessions(STREAMS, "CONS", "gw-a", SETTINGS, hostvars)
    assert item["role"] == "CONS" and item["targets"] == ["192.0.2.2:5300"]
    first, second = stream_sessions(STREAMS, "CONS", "gw-b", {}, hostvars)
    assert first["targets"] == ["[2001:db8::a]:5100", "[2001:db8::a]:5101"] and second["targets"] == ["[2001:db8::a]:5102"]
    hostvars["gw-b"]["scistream_wan_address"] = "192.0.2.2\nprogram x"
    with pytest.raises(AnsibleFilterError) as err:
        stream_sessions(STREAMS, "CONS", "gw-a", {}, hostvars)
    assert "scistream_wan_address" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AnsibleFilterError, match="no PROD session"):
        stream_sessions(STREAMS, "CONS", "gw-a", {}, {"gw-b": {}})


@pytest.mark.parametrize("change,field", [
    ({"uid": "a b"}, "uid"),
    ({"uid": None}, "uid is required"),
    ({"producer_targets": ["[fe80::1%x\nprogram p\n  command sh]:80"]}, "producer_targets"),
    ({"producer_targets": ["name\n:80"]}, "producer_targets"),
    ({"producer_targets": "10.0.0.1:80"}, "producer_targets"),
    ({"num_conn": "\u0665"}, "num_conn"),
    ({"num_conn": 0}, "num_conn"),
    ({"lifetime": "12 h"}, "lifetime '12 h'"),
    ({"lifetime": "-1h"}, "lifetime"),
    ({"idle_timeout": "31d"}, "idle_timeout '31d'"),
    ({"idle_timeout": "1h\nx"}, "idle_timeout"),
    ({"rate": "2 Gbit"}, "rate '2 Gbit'"),
    ({"rate": "1.5Gbit"}, "rate '1.5Gbit'"),
    ({"rate": 500}, "rate 500"),
    ({"producer_gateway": ""}, "producer_gateway is required"),
])
def test_bad_inventory_values_name_the_stream_and_field(change, field):
    streams = [dict(STREAMS[0], **change)] + STREAMS[1:]
    with pytest.raises(AnsibleFilterError) as err:
        stream_sessions(streams, "PROD", "gw-b")  # any gateway: every stream is checked
    message = str(err.value)
    assert "stream 'detector-frames' (scistream_streams[0])" in message and field in message, message
    assert "\n" not in message


def test_a_uid_belongs_to_one_stream():
    with pytest.raises(AnsibleFilterError) as err:
        stream_sessions(STREAMS + [dict(STREAMS[2], name="again", uid=UID_B.upper())], "PROD", "gw-a")
    assert "stream 'again' (scistream_streams[3])" in str(err.value) and "scistream_streams[2]" in str(err.value)


def test_the_filter_is_registered():
    assert FilterModule().filters()["stream_sessions"] is stream_sessions
    with pytest.raises(AnsibleFilterError, match="role"):
        stream_sessions(STREAMS, "BOTH", "gw-a")


def test_allowed_targets_of_each_side():
    from ansible_collections.scistream.gateway.plugins.filter.stream_sessions import stream_allowed_targets
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import parse_target_rules
    prod = stream_allowed_targets(STREAMS, "PROD", "gw-a")
    assert prod == ["10.0.3.10/32:5074", "10.0.3.10/32:5075", "[2001:db8::10/128]:6000"]
    assert stream_allowed_targets(STREAMS, "PROD", "gw-b") == ["0.0.0.0/0", "::/0"]  # a host name: the default rules
    hostvars = {"gw-a": {"scistream_wan_address": "10.0.2.1", "scistream_gateway_port_range": "5300-5400"},
                "gw-b": {"scistream_wan_address": "2001:db8::2"}}
    assert stream_allowed_targets(STREAMS, "CONS", "gw-b", hostvars) == ["10.0.2.1/32:5300-5400"]
    assert stream_allowed_targets(STREAMS, "CONS", "gw-a", hostvars) == ["[2001:db8::2/128]:5100-5200"]
    for side, gateway in (("PROD", "gw-a"), ("CONS", "gw-b"), ("CONS", "gw-a")):
        parse_target_rules(stream_allowed_targets(STREAMS, side, gateway, hostvars))  # the module's grammar reads them
    with pytest.raises(AnsibleFilterError, match="scistream_wan_address"):
        stream_allowed_targets(STREAMS, "CONS", "gw-b", {"gw-a": {"scistream_wan_address": "bad address"}})
    assert "stream_allowed_targets" in FilterModule().filters()
