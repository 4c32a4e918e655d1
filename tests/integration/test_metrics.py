# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real Prometheus (Debian's) scrapes real exporters while 200 MB flow through each backend.

One Prometheus and two scistream-exporters (gateway A = PROD, gateway B =
CONS, each its own state dir) serve the whole module, on loopback ports
43100-43199; sessions are made by the s2ds module under the distribution's
Python (which has the nftables binding, so counting is on). For each
backend (haproxy, nginx, stunnel as processes, haproxy in Docker):

* 200 MB pushed at a steady pace through CONS reach the sink, SHA-256 equal;
* Prometheus finds ``rate(scistream_listener_bytes_total[...]) > 0`` while it
  flows, and afterwards the bytes each gateway counted within 5% of what was sent;
* ``scistream_session_up`` goes to 0 once the PROD proxy is killed.

Then: every PromQL expression of the dashboard gets no error from the query
API; the control server's metrics (calls by code, auth failures) are
scraped; an exporter behind TLS and basic auth is scraped by Prometheus;
s2ds_info under a Python without the nftables binding reports each
session's counter error and stays healthy.

Heavy (4 x 200 MB): run under ``flock /tmp/scistream-heavy.lock``.
Set SCISTREAM_DASHBOARD_DATA=path.json to keep the dashboard's series of
the run (docs/plot_dashboard.py draws docs/dashboard.png from it).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from conftest import BUILD, ROOT, Sink, docker_client, run_playbook, streamcheck
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import process_alive, wait_until
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK

SYSTEM_PYTHON = "/usr/bin/python3"
PROMETHEUS = "/usr/bin/prometheus"
EXPORTER = "ansible_collections.scistream.gateway.plugins.module_utils.exporter.server"
S2CS = "ansible_collections.scistream.gateway.plugins.module_utils.s2cs.server"
CHAIN = os.path.join(ROOT, "tests", "integration", "playbooks", "chain.yml")
INFO = os.path.join(ROOT, "tests", "integration", "playbooks", "metrics_info.yml")
DASHBOARD = os.path.join(ROOT, "files", "grafana", "scistream.json")
RULES = os.path.join(ROOT, "files", "prometheus", "scistream.rules.yml")

PAYLOAD = 200 * 1024 * 1024
PACE = 25 * 1024 * 1024  # bytes per second: 8 s of transfer, several scrapes while it flows
PROM_PORT, EXPORTER_A, EXPORTER_B, S2CS_METRICS, EXPORTER_SECURE, S2CS_PORT = 43100, 43101, 43103, 43102, 43104, 43105
SINK_PORT = 43190

pytestmark = pytest.mark.skipif(not (os.path.exists(PROMETHEUS) and os.path.exists(SYSTEM_PYTHON)),
                                reason="needs Debian's prometheus and /usr/bin/python3")


# -- processes -------------------------------------------------------------------
class Process:
    """A child process with its log; stopped (and waited for) by :meth:`stop`."""

    def __init__(self, argv, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def text(self):
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def http_get(url, headers=None, context=None, timeout=5):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310 (loopback)
        return response.status, response.read().decode("utf-8")


def wait_http(url, proc, timeout=20, **kwargs):
    def answers():
        try:
            return http_get(url, **kwargs)[0] == 200
        except (OSError, urllib.error.URLError):
            return False
    if not wait_until(answers, timeout, 0.2):
        raise AssertionError("%s did not answer: %s" % (url, proc.text()))


def exporter_argv(state_dir, port, *extra):
    return [SYSTEM_PYTHON, "-m", EXPORTER, "--state_dir", state_dir, "--web.listen-address", "127.0.0.1:%d" % port,
            "--process_supervisor", "daemon"] + list(extra)


class Prometheus:
    def __init__(self, base):
        self.url = "http://127.0.0.1:%d" % PROM_PORT

    def query(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = "%.3f" % at
        dummy, body = http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode(params))
        answer = json.loads(body)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def value(self, expr):
        """The single value of ``expr`` now, or None when it has no series."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def query_error(self, expr):
        """The API's error for ``expr``, or None (HTTP 400 carries it in the body)."""
        try:
            http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
            return None
        except urllib.error.HTTPError as exc:
            return exc.read().decode("utf-8", "replace")

    def wait_for(self, expr, predicate, timeout=30):
        """Poll ``expr`` until ``predicate(value)``; return the last value."""
        last = [None]

        def check():
            last[0] = self.value(expr)
            return last[0] is not None and predicate(last[0])
        wait_until(check, timeout, 0.5)
        return last[0]

    def range(self, expr, start, end, step=2):
        params = {"query": expr, "start": "%.3f" % start, "end": "%.3f" % end, "step": str(step)}
        dummy, body = http_get(self.url + "/api/v1/query_range?" + urllib.parse.urlencode(params))
        return json.loads(body)["data"]["result"]


def make_tls(directory):
    """A self-signed certificate for 127.0.0.1 (cryptography), for the TLS exporter."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scistream-exporter test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    paths = {"cert": os.path.join(directory, "tls.crt"), "key": os.path.join(directory, "tls.key")}
    with open(paths["cert"], "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(paths["key"], 0o600)
    return paths


def bcrypt_hash(password):
    out = subprocess.run([SYSTEM_PYTHON, "-c", "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), "
                          "bcrypt.gensalt(rounds=6)).decode())", password], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def stack():
    """Prometheus, the two gateways' exporters, a TLS + basic auth exporter, and a control server with metrics."""
    # A short base: HAProxy's stats socket path must fit a Unix socket address (proxy_reports.MAX_SOCKET_PATH).
    base = tempfile.mkdtemp(prefix="metrics-")
    dirs = {name: os.path.join(base, name) for name in ("gateway-a", "gateway-b", "s2cs", "prometheus")}
    for path in dirs.values():
        os.makedirs(path)
    tls = make_tls(base)
    web_config = os.path.join(base, "web.yml")
    with open(web_config, "w", encoding="utf-8") as handle:
        handle.write("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: '%s'\n" % (
            tls["cert"], tls["key"], bcrypt_hash("scrape-secret")))
    password_file = os.path.join(base, "password")
    with open(password_file, "w", encoding="utf-8") as handle:
        handle.write("scrape-secret")
    tokens = os.path.join(base, "tokens")
    with open(tokens, "w", encoding="utf-8") as handle:
        handle.write("good-token\n")
    config = os.path.join(base, "prometheus.yml")
    with open(config, "w", encoding="utf-8") as handle:
        json.dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [RULES],
            "scrape_configs": [
                {"job_name": "scistream", "static_configs": [
                    {"targets": ["127.0.0.1:%d" % EXPORTER_A], "labels": {"gateway": "a"}},
                    {"targets": ["127.0.0.1:%d" % EXPORTER_B], "labels": {"gateway": "b"}}]},
                {"job_name": "scistream-s2cs", "static_configs": [{"targets": ["127.0.0.1:%d" % S2CS_METRICS]}]},
                {"job_name": "scistream-secure", "scheme": "https",
                 "basic_auth": {"username": "prometheus", "password_file": password_file},
                 "tls_config": {"ca_file": tls["cert"]},
                 "static_configs": [{"targets": ["127.0.0.1:%d" % EXPORTER_SECURE]}]},
            ]}, handle)  # JSON is YAML
    env = dict(os.environ, PYTHONPATH=BUILD)
    procs = {
        "prometheus": Process([PROMETHEUS, "--config.file", config, "--storage.tsdb.path", dirs["prometheus"],
                               "--web.listen-address", "127.0.0.1:%d" % PROM_PORT,
                               "--storage.tsdb.retention.time", "1h"], os.path.join(base, "prometheus.log")),
        "exporter_a": Process(exporter_argv(dirs["gateway-a"], EXPORTER_A), os.path.join(base, "exporter-a.log"), env),
        "exporter_b": Process(exporter_argv(dirs["gateway-b"], EXPORTER_B), os.path.join(base, "exporter-b.log"), env),
        "exporter_secure": Process(exporter_argv(dirs["gateway-a"], EXPORTER_SECURE, "--web.config.file", web_config),
                                   os.path.join(base, "exporter-secure.log"), env),
        "s2cs": Process([sys.executable, "-m", S2CS, "--insecure", "--listener_ip", "127.0.0.1", "--port",
                         str(S2CS_PORT), "--port_range", "43150-43159", "--state_dir", dirs["s2cs"],
                         "--process_supervisor", "daemon", "--tokens_file", tokens, "--metrics_port",
                         str(S2CS_METRICS), "--allowed_targets", ",".join(WITH_LOOPBACK)], os.path.join(base, "s2cs.log"), env),
    }
    started = time.time()
    try:
        wait_http("http://127.0.0.1:%d/-/ready" % PROM_PORT, procs["prometheus"])
        wait_http("http://127.0.0.1:%d/metrics" % EXPORTER_A, procs["exporter_a"])
        wait_http("http://127.0.0.1:%d/metrics" % EXPORTER_B, procs["exporter_b"])
        wait_http("http://127.0.0.1:%d/metrics" % S2CS_METRICS, procs["s2cs"])
        # Every target scraped once (the secure exporter's own test waits for it).
        assert Prometheus(base).wait_for('count(up{job=~"scistream|scistream-s2cs"} == 1)', lambda v: v == 3) == 3
        yield {"dirs": dirs, "procs": procs, "prometheus": Prometheus(base), "tls": tls, "base": base,
               "started": started}
        record = os.environ.get("SCISTREAM_DASHBOARD_DATA")
        if record:
            keep_dashboard_series(Prometheus(base), started, time.time(), record)
    finally:
        for proc in procs.values():
            proc.stop()
        shutil.rmtree(base, ignore_errors=True)


def keep_dashboard_series(prometheus, start, end, path):
    """Every panel's series over the module's run, for docs/plot_dashboard.py."""
    panels = []
    for panel in json.load(open(DASHBOARD, encoding="utf-8"))["panels"]:
        series = []
        for target in panel.get("targets", []):
            series.append({"legend": target.get("legendFormat", ""),
                           "result": prometheus.range(concrete(target["expr"]), start, end)})
        panels.append({"title": panel["title"], "type": panel["type"], "unit": panel["fieldConfig"]["defaults"]["unit"],
                       "series": series})
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"start": start, "end": end, "panels": panels}, handle)


def concrete(expr):
    """A dashboard expression with Grafana's variables as a Prometheus query sees them."""
    for variable, value in (("$__rate_interval", "4s"), ("$instance", ".*"), ("$uid", ".*"), ("$s2cs", ".*")):
        expr = expr.replace(variable, value)
    return expr


# -- a stream at a steady pace -------------------------------------------------------
def paced_send(host, port, size=PAYLOAD, pace=PACE):
    """Send ``size`` deterministic bytes at about ``pace`` bytes/s; returns count and SHA-256."""
    digest, sent = hashlib.sha256(), 0
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=30) as sock:
        for chunk in streamcheck.payload(size, 0):
            sock.sendall(chunk)
            digest.update(chunk)
            sent += len(chunk)
            ahead = sent / pace - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(30)
        while sock.recv(65536):
            pass
    return {"bytes": sent, "sha256": digest.hexdigest()}


def chain_vars(stack, uid, backend, runtime, state="present"):
    return {"uid": uid, "backend": backend, "runtime": runtime, "image": "scistream/%s:local" % backend,
            "num_conn": 1, "session_state": state, "producer_targets": ["127.0.0.1:%d" % SINK_PORT],
            "prod_port_range": "43110-43119", "cons_port_range": "43120-43129",
            "prod_state_dir": stack["dirs"]["gateway-a"], "cons_state_dir": stack["dirs"]["gateway-b"],
            "ansible_python_interpreter": SYSTEM_PYTHON}


def kill_prod_proxy(stack, uid, backend, runtime):
    if runtime == "docker":
        docker_client().containers.get("scistream-%s-prod-%s" % (backend, uid)).kill()
        return
    pid_file = os.path.join(stack["dirs"]["gateway-a"], "run", uid, "proxy", "proxy.pid")
    pid = int(open(pid_file, encoding="ascii").read().split()[0])
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not process_alive(pid), 5)


@pytest.mark.parametrize("runtime,backend", [
    ("process", "haproxy"), ("process", "nginx"), ("process", "stunnel"),
    pytest.param("docker", "haproxy", marks=pytest.mark.docker),
])
def test_prometheus_sees_the_stream_and_the_kill(stack, runtime, backend):
    prometheus = stack["prometheus"]
    uid = str(uuid.uuid4())
    rc, run = run_playbook(CHAIN, chain_vars(stack, uid, backend, runtime))
    assert rc == 0, run.failures()
    cons_listener = run.result("Consumer-side gateway")["listeners"][0]
    host, dummy, port = cons_listener.rpartition(":")
    selector = 'uid="%s", direction="in"' % uid
    try:
        assert prometheus.wait_for('scistream_session_up{uid="%s", role="CONS"}' % uid, lambda v: v == 1) == 1
        sink = Sink(port=SINK_PORT, timeout=60)
        sent = {}
        sender = threading.Thread(target=lambda: sent.update(paced_send(host, int(port))), daemon=True)
        sender.start()
        # While it flows: both gateways see bytes moving.
        for role in ("CONS", "PROD"):
            rate = prometheus.wait_for('rate(scistream_listener_bytes_total{%s, role="%s"}[4s])' % (selector, role),
                                       lambda v: v > 0, timeout=8)
            assert rate and rate > 0, (role, rate)
        assert sender.is_alive(), "the transfer ended before Prometheus saw it move: raise PAYLOAD or lower PACE"
        sender.join(60)
        received = sink.wait()
        assert received["bytes"] == sent["bytes"] == PAYLOAD and received["sha256"] == sent["sha256"]
        # Afterwards: what each gateway counted (whole packets, headers and TLS records included).
        for role in ("CONS", "PROD"):
            counted = prometheus.wait_for('scistream_listener_bytes_total{%s, role="%s"}' % (selector, role),
                                          lambda v: v >= PAYLOAD, timeout=10)
            assert PAYLOAD <= counted <= PAYLOAD * 1.05, (role, counted, counted / PAYLOAD)
        connections = prometheus.value('scistream_listener_connections_total{uid="%s", role="CONS"}' % uid)
        assert connections == 1
        # The PROD proxy dies: its session goes down, CONS stays up.
        kill_prod_proxy(stack, uid, backend, runtime)
        assert prometheus.wait_for('scistream_session_up{uid="%s", role="PROD"}' % uid, lambda v: v == 0,
                                   timeout=15) == 0
        assert prometheus.value('scistream_session_up{uid="%s", role="CONS"}' % uid) == 1
    finally:
        rc, run = run_playbook(CHAIN, chain_vars(stack, uid, backend, runtime, state="absent"))
        assert rc == 0, run.failures()


def test_dashboard_expressions_run_on_the_real_prometheus(stack):
    prometheus = stack["prometheus"]
    dashboard = json.load(open(DASHBOARD, encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    errors = {}
    for expr in exprs:
        if expr.startswith("label_values("):  # Grafana's function: check its selector instead
            expr = expr[len("label_values("):].rsplit(",", 1)[0]
        error = prometheus.query_error(concrete(expr))
        if error:
            errors[expr] = error
    assert not errors
    up = next(p for p in dashboard["panels"] if p["title"] == "Exporters and control servers up")
    assert len(prometheus.query(concrete(up["targets"][0]["expr"]))) == 3  # two exporters and the control server


def test_control_server_metrics(stack):
    from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import ControlCallError, ControlClient
    address = "127.0.0.1:%d" % S2CS_PORT
    with ControlClient(address, insecure=True, token="wrong-token", timeout=10) as client:
        with pytest.raises(ControlCallError) as err:
            client.release(str(uuid.uuid4()))
        assert err.value.code == "UNAUTHENTICATED"
    with ControlClient(address, insecure=True, token="good-token", timeout=10) as client:
        with pytest.raises(ControlCallError) as err:
            client.release(str(uuid.uuid4()))
        assert err.value.code == "NOT_FOUND"
        with pytest.raises(ControlCallError) as err:
            client.request("not a uid", "PROD", 1)
        assert err.value.code == "INVALID_ARGUMENT"
    dummy, text = http_get("http://127.0.0.1:%d/metrics" % S2CS_METRICS)
    assert 'scistream_s2cs_calls_total{code="NOT_FOUND",method="release"} 1.0' in text
    assert 'scistream_s2cs_calls_total{code="UNAUTHENTICATED",method="release"} 1.0' in text
    assert 'scistream_s2cs_calls_total{code="INVALID_ARGUMENT",method="req"} 1.0' in text
    assert "scistream_s2cs_auth_failures_total 1.0" in text
    assert 'scistream_s2cs_calls_in_progress{method="req"} 0.0' in text
    assert 'scistream_s2cs_call_duration_seconds_count{method="release"} 2.0' in text
    assert 'scistream_s2cs_sessions{role="PROD"} 0.0' in text
    prometheus = stack["prometheus"]
    assert prometheus.wait_for("scistream_s2cs_auth_failures_total", lambda v: v >= 1) == 1
    assert prometheus.value('up{job="scistream-s2cs"}') == 1


def test_exporter_with_tls_and_basic_auth(stack):
    context = ssl.create_default_context(cafile=stack["tls"]["cert"])
    url = "https://127.0.0.1:%d/metrics" % EXPORTER_SECURE
    wait_http(url, stack["procs"]["exporter_secure"], context=context,
              headers={"Authorization": "Basic " + base64.b64encode(b"prometheus:scrape-secret").decode()})
    for credentials in (None, b"prometheus:wrong", b"nobody:scrape-secret"):
        headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode()} if credentials else {}
        with pytest.raises(urllib.error.HTTPError) as err:
            http_get(url, headers=headers, context=context)
        assert err.value.code == 401
    with pytest.raises(OSError):  # plain HTTP is not answered (reset, or a TLS alert)
        http_get("http://127.0.0.1:%d/metrics" % EXPORTER_SECURE, timeout=3)
    assert stack["prometheus"].wait_for('up{job="scistream-secure"}', lambda v: v == 1) == 1


def test_info_counts_under_any_python(stack, sink):
    """Issue 22 item 3: s2ds_info under the venv's Python (no nftables binding of its own) reads the counters as
    the distribution's Python does (the adapter loads the system's binding)."""
    uid = str(uuid.uuid4())
    rc, run = run_playbook(CHAIN, chain_vars(stack, uid, "haproxy", "process"))
    assert rc == 0, run.failures()
    try:
        for interpreter in (SYSTEM_PYTHON, sys.executable):
            rc, run = run_playbook(INFO, {"state_dir": stack["dirs"]["gateway-a"], "uid": uid,
                                          "ansible_python_interpreter": interpreter})
            assert rc == 0, run.failures()
            session = run.result("Sessions of the gateway")["sessions"][0]
            assert session["healthy"] is True
            assert session["traffic"][0]["bytes_in"] >= 0 and "traffic_error" not in session, (interpreter, session)
            assert session["traffic"][0]["errors"] == dict.fromkeys(
                ("target", "tls_handshake", "reset", "request", "response"), 0)
    finally:
        rc, run = run_playbook(CHAIN, chain_vars(stack, uid, "haproxy", "process", state="absent"))
        assert rc == 0, run.failures()
