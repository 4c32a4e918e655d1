# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Connection errors as each real proxy reports them (HAProxy's stats socket, the NGINX and stunnel logs).

A CONS session forwards to a port nobody listens on; a few connections to
its listener fail at the target, and the proxy's own report says so per
listener. This is the part of ``traffic`` that does not need the nftables
binding, so it runs under the test venv's Python (test_metrics.py reads the
kernel counters under /usr/bin/python3). Ports 45020-45059 (the lead's block).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
import uuid

import pytest

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import proxy_reports
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import wait_until
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

CLOSED_PORT = 45059  # nothing listens here: every connection the proxy makes to it is refused


@pytest.fixture
def short_state_dir():
    # HAProxy's stats socket needs a short path (a Unix socket path holds at most 107 bytes).
    path = tempfile.mkdtemp(prefix="/tmp/lead-err-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def knock(port, times=3):
    """Connect to a listener, send a little, let the proxy try its target, close.

    A connection the proxy resets already in the handshake is a knock too (seen once under CI load with stunnel,
    which drops the client as soon as its target refuses): the caller waits for the proxy's count either way.
    """
    for dummy in range(times):
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionResetError:
            time.sleep(0.1)
            continue
        with conn:
            try:
                conn.sendall(b"scistream" * 8)
                conn.settimeout(2)
                conn.recv(16)  # the proxy closes once its target refused
            except OSError:
                pass
        time.sleep(0.1)


@pytest.mark.parametrize("backend,port_range", [("haproxy", "45020-45029"), ("nginx", "45030-45039"),
                                                ("stunnel", "45040-45049")])
def test_refused_targets_are_counted_by_the_proxys_own_report(short_state_dir, backend, port_range):
    gateway = Gateway(short_state_dir, {"process": lambda session: ProcessRuntime("daemon")}, policy=LOOPBACK_POLICY)
    uid = str(uuid.uuid4())
    spec = SessionSpec.build(uid, "CONS", num_conn=2, listener_ip="127.0.0.1", port_range=port_range,
                             targets=["127.0.0.1:%d" % CLOSED_PORT], backend=backend)
    try:
        ports = gateway.present(spec).session["ports"]
        record = gateway.store.load(uid)
        runtime = ProcessRuntime("daemon")
        paths = runtime.paths(gateway.store, record)

        def errors():
            return proxy_reports.connection_errors(get_backend(backend), paths, gateway.store, record)

        before = errors()
        assert before is not None and len(before) == 2, before  # the proxy reports, per listener
        assert all(sum(entry.values()) == 0 for entry in before), before
        knock(ports[1])
        assert wait_until(lambda: (errors() or [{}, {}])[1].get("target", 0) >= 1, 15), errors()
        after = errors()
        assert after[0]["target"] == 0, after  # only the listener that was used
    finally:
        gateway.absent(uid)
