# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Port reservation: lowest free, bind-checked, stable per uid, clear when exhausted."""

from __future__ import annotations

import socket

import pytest

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.ports import port_is_free, reserve_ports

RANGE = (46100, 46119)


def test_lowest_free_ports_skipping_taken():
    assert reserve_ports(3, RANGE, "127.0.0.1", taken={46100, 46102}) == [46101, 46103, 46104]


def test_kept_ports_come_first_and_stay():
    assert reserve_ports(3, RANGE, "127.0.0.1", keep=[46110, 46111]) == [46110, 46111, 46100]
    # kept ports outside the range are dropped
    assert reserve_ports(2, RANGE, "127.0.0.1", keep=[9, 46119]) == [46119, 46100]


def test_a_port_bound_by_someone_else_is_skipped():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 46100))
        busy.listen()
        assert not port_is_free("127.0.0.1", 46100)
        assert reserve_ports(1, RANGE, "127.0.0.1") == [46101]


def test_udp_is_checked_for_udp_backends():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 46100))
        assert port_is_free("127.0.0.1", 46100, ("tcp",))
        assert not port_is_free("127.0.0.1", 46100, ("tcp", "udp"))


def test_exhaustion_names_field_and_range():
    with pytest.raises(S2DSError) as err:
        reserve_ports(21, RANGE, "127.0.0.1")
    assert err.value.field == "num_conn" and "46100-46119" in str(err.value)


def test_foreign_listener_ip_is_rejected():
    with pytest.raises(S2DSError) as err:
        reserve_ports(1, RANGE, "192.0.2.77")
    assert err.value.field == "listener_ip"
