# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""SciStream's own command line, as its users type it, on real servers with real proxies.

PROD: ``-t Haproxy`` (upstream's name for HAProxy in a Docker container), CONS:
``--type=HaproxySubprocess`` (a child process), both with upstream's
spellings (``--listener-ip``, ``--port-range``, ``--server_crt``, ``--ssl``,
``--v``). 8 MB go consumer -> CONS -> PROD -> receiver, SHA-256 checked.
Needs the Docker Engine and the scistream/haproxy:local image (passed with --image: without it the
docker runtime would look for its default image in a registry).
Ports 41020-41021, 41460-41479 (the s2cs block).
"""

from __future__ import annotations

import uuid

import pytest

from conftest import streamcheck
from s2cs_real import LOOPBACK_ANSWERS, sessions

pytest.importorskip("grpc")

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import close_stream, open_stream  # noqa: E402

pytestmark = pytest.mark.docker


def upstream_options(pki, type_name, port_range):
    return ["-t", type_name, "--listener-ip", "127.0.0.1", "--port-range=%s" % port_range,
            "--server_crt=%s" % pki["server.crt"], "--server-key", pki["server.key"], "--ssl", "--v"]


def test_upstream_types_map_to_backend_and_runtime(servers, pki, sink):
    # The local image: upstream's own default (haproxy:latest from a registry) cannot be had here.
    prod_server = servers("prod", 41020, "1-2", extra=upstream_options(pki, "Haproxy", "41460-41469")
                          + ["--image", "scistream/haproxy:local"])
    cons_server = servers("cons", 41021, "1-2", extra=upstream_options(pki, "HaproxySubprocess", "41470-41479"))
    assert "backend haproxy, runtime docker" in prod_server.log()
    assert "backend haproxy, runtime process" in cons_server.log()
    receiver = sink()
    uid = str(uuid.uuid4())
    with prod_server.client() as prod, cons_server.client() as cons:
        stream = open_stream(prod, cons, uid, 1, ["127.0.0.1:%d" % receiver.port], cons_policy=LOOPBACK_ANSWERS)
        assert stream["prod_listeners"] == ["127.0.0.1:41460"] and stream["listeners"] == ["127.0.0.1:41470"]
        [prod_info], [cons_info] = sessions(prod_server.state_dir), sessions(cons_server.state_dir)
        assert (prod_info["runtime"], cons_info["runtime"]) == ("docker", "process")
        sent = streamcheck.send("127.0.0.1", 41470, 8 * 1024 * 1024, timeout=60)
        got = receiver.wait()
        assert got["sha256"] == sent["sha256"] and got["bytes"] == sent["bytes"]
        assert close_stream(prod, cons, uid)
    assert sessions(prod_server.state_dir) == [] and sessions(cons_server.state_dir) == []
