# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/migrating.md, for real: SciStream's SC24 tutorial deployment as scistream_s2cs_instances.

The tutorial runs three server containers per host: HaproxySubprocess on
5000 (listeners 5100-5150), HaproxySubprocess with Globus Auth on 5001
(5151-5200) and StunnelSubprocess on 5002 (5201-5250). The role deploys
exactly those three instances on this host (daemons, wheelhouse, TLS), with
the ports moved into the s2cs block because the tutorial's collide with
other tests: control 41010-41012, listeners 41500-41550, 41551-41600,
41601-41650 (the same sizes). Each instance is the PROD gateway of a stream
whose CONS gateway is a server the test starts (41013-41015, listeners
41700-41749); 8 MB go through each, checked by SHA-256. Globus Auth is the
local stand-in (tests/globus_auth_standin.py), reached through the role's
scistream_s2cs_environment. Slow (a venv from a wheelhouse): about a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import ROOT, run_playbook, streamcheck
from globus_auth_standin import AuthState, GlobusAuthStandIn
from s2cs_real import LOOPBACK_ANSWERS, Server, make_pki, sessions

pytest.importorskip("grpc")

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import (  # noqa: E402
    ControlCallError, ControlClient, close_stream, open_stream)

PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "s2cs_role.yml")
CLIENT_ID = "0e5b7c3a-9d1f-4c2b-8a6e-5f4d3c2b1a09"
SCOPE = "https://auth.globus.org/scopes/%s/scistream" % CLIENT_ID


def sc24_instances(prefix, base):
    """The tutorial's three servers, option by option (docs/migrating.md has the table)."""
    return [
        {"name": prefix + "-haproxy", "port": 41010, "listener_ip": "127.0.0.1", "port_range": "41500-41550",
         "backend": "haproxy", "runtime": "process", "state_dir": str(base / "state-5000")},
        {"name": prefix + "-haproxy-globus", "port": 41011, "listener_ip": "127.0.0.1", "port_range": "41551-41600",
         "backend": "haproxy", "runtime": "process", "state_dir": str(base / "state-5001"),
         "client_id": CLIENT_ID, "client_secret": "sc24-client-secret"},
        {"name": prefix + "-stunnel", "port": 41012, "listener_ip": "127.0.0.1", "port_range": "41601-41650",
         "backend": "stunnel", "runtime": "process", "state_dir": str(base / "state-5002")},
    ]


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="checks the daemon supervisor (no systemd as PID 1)")
@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="needs the distribution's python3 with venv")
def test_sc24_deployment_as_three_instances(tmp_path, sink, s2cs_wheels):
    base = tmp_path / "sc24"
    base.mkdir()
    prefix = "s2cs-mig-%s" % uuid.uuid4().hex[:6]
    instances = sc24_instances(prefix, base)
    pki = make_pki(base)
    auth = AuthState(CLIENT_ID, "sc24-client-secret")
    auth.add_token("sc24-user-token", sub="5a1e0000-0000-4000-8000-00000000a11c", scope=SCOPE,
                   exp=int(time.time()) + 3600)
    ctl = str(base / "home" / "bin" / "s2cs-ctl")
    consumers = []
    with GlobusAuthStandIn(auth, 41016, pki["server.crt"], pki["server.key"]) as standin:
        variables = {"base": str(base), "wheels": s2cs_wheels, "scistream_s2cs_instances": instances,
                     "scistream_s2cs_allow_anonymous": True,
                     "scistream_s2cs_environment": {"GLOBUS_SDK_SERVICE_URL_AUTH": standin.url,
                                                    "GLOBUS_SDK_VERIFY_SSL": pki["ca.crt"]}}
        try:
            rc, run = run_playbook(PLAYBOOK, variables, timeout=900)
            assert rc == 0, run.failures()
            etc = base / "etc" / "instances"
            secret = etc / (prefix + "-haproxy-globus.client_secret")
            assert oct(secret.stat().st_mode & 0o777) == "0o600"
            assert "sc24-client-secret" not in (etc / (prefix + "-haproxy-globus.args")).read_text()
            assert not (etc / (prefix + "-haproxy.client_secret")).exists()
            ca = str(base / "etc" / "tls" / "ca.crt")
            for slot, instance in enumerate(instances):
                consumer = Server(pki, base / ("consumer-%d" % slot), 41013 + slot,
                                  "%d-%d" % (41700 + 10 * slot, 41709 + 10 * slot), backend=instance["backend"])
                consumers.append(consumer)
                token = "sc24-user-token" if "client_secret" in instance else None
                stream_through(instance, ca, token, consumer, sink())
            # The Globus instance refuses S2UC's placeholder token.
            with ControlClient("127.0.0.1:41011", ca_path=ca) as anonymous:
                with pytest.raises(ControlCallError) as exc_info:
                    anonymous.request(str(uuid.uuid4()), "PROD", 1, ["127.0.0.1:9"])
                assert exc_info.value.code == "UNAUTHENTICATED"
            # Idempotent: a second run changes nothing.
            rc, run = run_playbook(PLAYBOOK, variables, timeout=900)
            assert rc == 0 and run.changed == 0, run.failures()
        finally:
            for consumer in consumers:
                consumer.stop()
            for instance in instances:
                if os.path.exists(ctl):
                    subprocess.run([ctl, "stop", instance["name"]], check=False, timeout=30)
            shutil.rmtree(base, ignore_errors=True)


def stream_through(instance, ca, token, consumer, receiver):
    """A stream with ``instance`` as PROD: 8 MB consumer -> CONS -> PROD -> receiver, SHA-256 equal; released."""
    uid = str(uuid.uuid4())
    with ControlClient("127.0.0.1:%d" % instance["port"], ca_path=ca, token=token) as prod, consumer.client() as cons:
        stream = open_stream(prod, cons, uid, 1, ["127.0.0.1:%d" % receiver.port], cons_policy=LOOPBACK_ANSWERS)
        first = int(instance["port_range"].split("-")[0])
        assert stream["prod_listeners"] == ["127.0.0.1:%d" % first], (instance["name"], stream)
        host, dummy, port = stream["listeners"][0].rpartition(":")
        sent = streamcheck.send(host, int(port), 8 * 1024 * 1024, timeout=60)
        got = receiver.wait()
        assert got["sha256"] == sent["sha256"] and got["bytes"] == sent["bytes"], instance["name"]
        [info] = sessions(instance["state_dir"])
        assert info["backend"] == instance["backend"] and info["healthy"]
        assert info["owner"].startswith("globus:" if token else "peer:")
        assert close_stream(prod, cons, uid)
    assert sessions(instance["state_dir"]) == []
