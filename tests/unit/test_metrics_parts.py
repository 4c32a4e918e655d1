# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""The parts of issue 15 that need no kernel: counting ruleset and listing, the gateway's counting
actions and per-session errors, the exporter's metrics and web config, proxy reports, control
server metrics. The real thing is tests/integration/test_metrics.py."""

from __future__ import annotations

import base64
import threading
import types

import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from ansible_collections.scistream.gateway.plugins.module_utils.exporter import collector, web
from ansible_collections.scistream.gateway.plugins.module_utils.s2cs import metrics as s2cs_metrics
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import counting, proxy_reports
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import Runtime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord, SessionSpec
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

UID = "4f6c1b7e-2a3d-4c5e-9f00-1234567890ab"
OTHER = "0b7a3c52-9d1e-4f6a-8b2c-3d4e5f607182"


def make_record(uid=UID, role="PROD", ports=(5100, 5101)):
    return SessionRecord(uid=uid, role=role, backend="haproxy", runtime="process", listener_ip="127.0.0.1",
                         ports=list(ports), targets=["127.0.0.1:5074"])


# -- counting: the ruleset as data, and reading it back ------------------------------------
def kernel_listing(key, ports, base=1000):
    """What libnftables lists after session_commands(key, ports), with counter values."""
    entries = [{"map": {"name": "%s-ports" % direction, "elem": [
        [p, {"jump": {"target": counting.session_chain(direction, key)}}] for p in ports]}} for direction in ("in", "out")]
    for command in counting.session_commands(key, ports):
        rule = command.get("add", {}).get("rule")
        if rule:
            kind, dummy, port = rule["comment"].partition(" ")
            value = base + int(port) if kind == "bytes" else 100
            counter = {"counter": {"packets": value // 100, "bytes": value}}
            entries.append({"rule": dict(rule, expr=rule["expr"][:-1] + [counter])})
        chain = command.get("add", {}).get("chain")
        if chain:
            entries.append({"chain": chain})
    return counting.Listing(entries)


def test_session_commands_count_each_port_in_both_directions():
    commands = counting.session_commands(("PROD", UID), [5100, 5101])
    rules = [c["add"]["rule"] for c in commands if "rule" in c.get("add", {})]
    assert {r["chain"] for r in rules} == {"in-prod-" + UID, "out-prod-" + UID}
    assert sorted(r["comment"] for r in rules if r["chain"].startswith("in-")) == [
        "bytes 5100", "bytes 5101", "rst 5100", "rst 5101", "syn 5100", "syn 5101"]
    assert all(r["table"] == "scistream-count" and r["family"] == "inet" for r in rules)
    assert all(r["expr"][-1] == {"counter": None} for r in rules)
    elements = [c["add"]["element"] for c in commands if "element" in c.get("add", {})]
    assert [e["name"] for e in elements] == ["in-ports", "out-ports"]
    # The chains are flushed before their rules: applying twice gives the same rules.
    assert {"flush": {"chain": {"family": "inet", "table": "scistream-count", "name": "in-prod-" + UID}}} in commands


def test_listing_reads_counts_and_tells_whether_a_session_is_counted():
    key = ("PROD", UID)
    listing = kernel_listing(key, [5100, 5101])
    assert listing.counts(key, [5100, 5101])
    assert not listing.counts(key, [5100, 5102])          # a port changed: counting is set up again
    assert not listing.counts(("CONS", UID), [5100, 5101])  # the same uid on the other role is another session
    assert listing.listener_counts(key, 5101) == {
        "bytes_in": 6101, "bytes_out": 6101, "packets_in": 61, "packets_out": 61, "connection_attempts": 1,
        "connections": 1, "resets_in": 1, "resets_out": 1}
    assert listing.listener_counts(key, 5999) is None
    assert sorted(listing.owned_elements(key)) == [("in", 5100), ("in", 5101), ("out", 5100), ("out", 5101)]
    assert counting.drop_elements(listing, ("PROD", OTHER), ports=[5100]) == [
        {"delete": {"element": {"family": "inet", "table": "scistream-count", "name": "in-ports", "elem": [5100]}}},
        {"delete": {"element": {"family": "inet", "table": "scistream-count", "name": "out-ports", "elem": [5100]}}}]


class FakeCounter:
    """A SessionCounter without a kernel: remembers what is counted."""

    available = True
    reason = None

    def __init__(self):
        self.counted = {}
        self.removed = []

    def counts(self, rec):
        return self.counted.get((rec.role, rec.uid)) == list(rec.ports)

    def install(self, rec):
        self.counted[(rec.role, rec.uid)] = list(rec.ports)

    def remove(self, uid, role=None, ports=()):
        self.removed.append((uid, role))
        self.counted.pop((role, uid), None)


class LocalRuntime(Runtime):
    """A runtime whose proxies 'run' as a flag, listeners on this host (so they are counted)."""

    name = "process"
    local_network = True

    def __init__(self):
        self.running = set()

    def paths(self, store, record):
        run = store.run_dir(record.uid)
        return {"run_dir": run, "pid_file": run + "/pid", "log_file": run + "/log", "psk_file": run + "/psk",
                "foreground": False}

    def check_config(self, backend, store, record, config_name):
        return None

    def is_running(self, backend, store, record):
        return record.uid in self.running

    def start(self, backend, store, record):
        self.running.add(record.uid)

    def stop(self, backend, store, record):
        self.running.discard(record.uid)


@pytest.fixture
def counted_gateway(tmp_path, monkeypatch):
    runtime = LocalRuntime()
    monkeypatch.setattr("ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway.wait_for_listeners",
                        lambda *a, **k: None)
    counter = FakeCounter()
    return Gateway(str(tmp_path), {"process": lambda s: runtime}, counter=counter, policy=LOOPBACK_POLICY), counter


def test_gateway_counts_a_new_session_once_and_stops_on_release(counted_gateway):
    gateway, counter = counted_gateway
    spec = SessionSpec.build(UID, "PROD", num_conn=2, port_range="43000-43010", targets=["127.0.0.1:5074"])
    assert gateway.present(spec, check_mode=True).actions[-1] == "count"
    assert not counter.counted
    first = gateway.present(spec)
    assert first.actions == ["reserve", "write_config", "start", "count"]
    assert counter.counted == {("PROD", UID): first.session["ports"]}
    assert gateway.present(spec).changed is False           # idempotent
    counter.counted.clear()                                   # the table was flushed by hand
    assert gateway.present(spec).actions == ["count"]
    gateway.absent(UID)
    assert counter.removed == [(UID, "PROD")]


def test_gateway_without_counter_never_counts(tmp_path, monkeypatch):
    runtime = LocalRuntime()
    monkeypatch.setattr("ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway.wait_for_listeners",
                        lambda *a, **k: None)
    gateway = Gateway(str(tmp_path), {"process": lambda s: runtime}, counter=None, policy=LOOPBACK_POLICY)
    spec = SessionSpec.build(UID, "PROD", num_conn=1, port_range="43000-43010", targets=["127.0.0.1:5074"])
    assert "count" not in gateway.present(spec).actions


def test_unreadable_counters_and_a_missing_runtime_are_per_session(tmp_path, monkeypatch):
    """Issue 15 item 7: one session's counters (or runtime) failing leaves the others' reports whole."""
    runtime = LocalRuntime()
    monkeypatch.setattr("ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway.wait_for_listeners",
                        lambda *a, **k: None)
    monkeypatch.setattr("ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway.listening_ports",
                        lambda protocol="tcp": set(range(43000, 43011)))

    def no_binding(session):
        raise S2DSError("runtime kernel needs the nftables Python binding", field="runtime", value="kernel")

    counter = FakeCounter()
    gateway = Gateway(str(tmp_path), {"process": lambda s: runtime, "kernel": no_binding}, counter=counter, policy=LOOPBACK_POLICY)
    gateway.present(SessionSpec.build(UID, "PROD", num_conn=1, port_range="43000-43010", targets=["127.0.0.1:5074"]))
    kernel = SessionRecord(uid=OTHER, role="PROD", backend="nftables", runtime="kernel", listener_ip="10.0.0.1",
                           ports=[43005], targets=["10.0.0.2:5074"])
    gateway.store.save(kernel)

    def unreadable(rec):
        raise counting.CountersUnavailable("counters of session %s: no binding" % rec.uid)

    counter.read = unreadable  # the Gateway's own counter is the one read (issue 21 item 1)
    by_uid = {s["uid"]: s for s in gateway.sessions()}
    assert by_uid[UID]["healthy"] is True and by_uid[UID]["traffic_error"] == "counters of session %s: no binding" % UID
    assert by_uid[OTHER]["healthy"] is False and "nftables Python binding" in by_uid[OTHER]["error"]


# -- the exporter's metric families ----------------------------------------------------------
SESSION = {
    "uid": UID, "role": "PROD", "backend": "haproxy", "runtime": "process", "encryption": "none",
    "listeners": ["127.0.0.1:5100", "127.0.0.1:5101"], "ports": [5100, 5101], "running": True, "healthy": False,
    "not_listening": [5101],
    "traffic": [{"listener": "127.0.0.1:5100", "port": 5100, "bytes_in": 209912345, "bytes_out": 1000,
                 "packets_in": 5, "packets_out": 6, "connection_attempts": 2, "connections": 2, "resets_in": 0,
                 "resets_out": 1, "active_connections": 1,
                 "errors": {"target": 3, "tls_handshake": 0, "reset": 0, "request": 0, "response": 0}}],
}


def scrape(sessions):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector.SessionCollector(types.SimpleNamespace(sessions=lambda: sessions)))
    return generate_latest(registry).decode("utf-8")


def test_exporter_metrics_follow_the_naming_rules():
    kernel = {"uid": OTHER, "role": "CONS", "backend": "nftables", "runtime": "kernel", "encryption": "none",
              "listeners": ["10.0.0.1:5200"], "ports": [5200], "running": True, "healthy": True,
              "traffic": [{"listener": "10.0.0.1:5200", "port": 5200, "bytes": 30, "packets": 3, "bytes_in": 20,
                           "bytes_out": 10, "packets_in": 2, "packets_out": 1}]}
    text = scrape([SESSION, kernel, {"uid": "broken-one", "broken": True}])
    labels = 'backend="haproxy",encryption="none",role="PROD",runtime="process",uid="%s"' % UID
    assert "scistream_session_up{%s} 0.0" % labels in text
    assert "scistream_session_running{%s} 1.0" % labels in text
    assert 'scistream_listener_bytes_total{backend="haproxy",direction="in",encryption="none",listener="127.0.0.1:5100"' \
           ',role="PROD",runtime="process",uid="%s"} 2.09912345e+08' % UID in text
    assert 'scistream_listener_bytes_total{backend="nftables",direction="out"' in text
    assert 'reason="target"' in text and "scistream_listener_connection_errors_total{" in text
    assert 'scistream_sessions{role="PROD"} 1.0' in text and 'scistream_sessions{role="CONS"} 1.0' in text
    assert 'scistream_session_up{backend="",encryption="",role="",runtime="",uid="broken-one"} 0.0' in text
    # Counters end in _total, and no label beyond the documented ones appears.
    for line in text.splitlines():
        if line.startswith("# TYPE") and line.endswith(" counter"):
            family = line.split()[2]
            family = family[:-len("_total")] if family.endswith("_total") else family
            samples = [x.split("{")[0] for x in text.splitlines() if x.startswith(family + "_") or x.startswith(family + "{")]
            assert samples and all(name.endswith(("_total", "_created")) for name in samples), family
        if line and not line.startswith("#") and "{" in line:
            names = {pair.split("=")[0] for pair in line[line.index("{") + 1:line.index("}")].split(",")}
            assert names <= set(collector.LISTENER_LABELS) | {"direction", "reason"}


def test_seconds_to_expiry_per_session():
    text = scrape([dict(SESSION, expires_in=1800, expires_reason="lifetime"), dict(SESSION, uid=OTHER, expires_in=None)])
    labels = 'backend="haproxy",encryption="none",reason="lifetime",role="PROD",runtime="process",uid="%s"' % UID
    assert "scistream_session_expires_in_seconds{%s} 1800.0" % labels in text
    assert OTHER not in "".join(line for line in text.splitlines() if line.startswith("scistream_session_expires_in"))


def test_the_rate_per_session():
    text = scrape([dict(SESSION, rate=500_000_000), dict(SESSION, uid=OTHER, rate=None)])
    labels = 'backend="haproxy",encryption="none",role="PROD",runtime="process",uid="%s"' % UID
    assert "scistream_session_rate_bits_per_second{%s} 5e+08" % labels in text
    assert OTHER not in "".join(line for line in text.splitlines() if line.startswith("scistream_session_rate"))


def test_the_exporter_loop_releases_expired_sessions(tmp_path, caplog):
    from ansible_collections.scistream.gateway.plugins.module_utils.exporter import server as exporter_server
    calls = []
    stop = threading.Event()

    class Gateway:
        def expire(self):
            calls.append(1)
            if len(calls) == 2:
                raise OSError("disk gone")
            if len(calls) >= 3:
                stop.set()
            return [{"uid": UID, "reason": "idle", "ports": [5100], "owner": None},
                    {"uid": OTHER, "reason": "lifetime", "ports": [5101], "owner": None, "error": "x\ny\x1b[31m"}]
    caplog.set_level("INFO", logger="scistream.exporter")
    exporter_server.expire_loop(Gateway(), 0.01, stop)
    assert len(calls) == 3
    assert "session %s expired (idle): released, ports 5100 freed" % UID in caplog.text
    assert "x\\x0ay\\x1b[31m" in caplog.text and "\x1b" not in caplog.text
    with pytest.raises(SystemExit, match="--expire_interval"):
        exporter_server.serve(exporter_server.parser().parse_args(["--expire_interval", "0.5"]))


def test_listener_up_is_per_port():
    text = scrape([SESSION])
    up = {line.split('listener="')[1].split('"')[0]: line.rsplit(" ", 1)[1]
          for line in text.splitlines() if line.startswith("scistream_listener_up{")}
    assert up == {"127.0.0.1:5100": "1.0", "127.0.0.1:5101": "0.0"}


@settings(max_examples=60, deadline=None)
@given(uid=st.text(min_size=1, max_size=40), listener=st.text(max_size=40))
def test_hostile_label_values_stay_escaped(uid, listener):
    """Whatever a record holds, the text format stays one sample per line (prometheus_client escapes)."""
    session = dict(SESSION, uid=uid, listeners=[listener, "x"], traffic=[dict(SESSION["traffic"][0], listener=listener)])
    text = scrape([session])
    samples = [line for line in text.splitlines() if line.startswith("scistream_listener_bytes_total{")]
    assert len(samples) == 2


# -- the web config ---------------------------------------------------------------------------
def write(tmp_path, text):
    path = tmp_path / "web.yml"
    path.write_text(text)
    return str(path)


def test_web_config_basic_auth(tmp_path):
    bcrypt = pytest.importorskip("bcrypt")
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    config = web.load_web_config(write(tmp_path, "basic_auth_users:\n  prometheus: '%s'\n" % hashed))

    def header(credentials):
        return "Basic " + base64.b64encode(credentials).decode()

    assert config.auth_required and config.tls_context is None
    assert config.authorized(header(b"prometheus:secret"))
    assert config.authorized(header(b"prometheus:secret"))  # remembered
    for bad in (None, "", "Bearer x", header(b"prometheus:wrong"), header(b"nobody:secret"), "Basic ***"):
        assert not config.authorized(bad)
    assert web.WebConfig().authorized(None)  # no users: auth off


@pytest.mark.parametrize("text,named", [
    ("listen: 1\n", "'listen'"),
    ("tls_server_config:\n  cert_file: a\n", "key_file"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n", "cipher_suites"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: VerifyClientCertIfGiven\n",
     "'VerifyClientCertIfGiven'"),
    ("basic_auth_users:\n  u: plaintext\n", "bcrypt"),
    ("- a\n", "mapping"),
])
def test_web_config_refuses_what_it_cannot_honour(tmp_path, text, named):
    with pytest.raises(web.WebConfigError) as err:
        web.load_web_config(write(tmp_path, text))
    assert named in str(err.value)


# -- proxy reports ----------------------------------------------------------------------------
def test_nginx_log_counts_per_listener(tmp_path):
    log = tmp_path / "proxy.log"
    log.write_text(
        '2026/12/01 10:00:00 [error] 7#7: *1 connect() failed (111: Connection refused) while connecting to upstream, '
        'client: 127.0.0.1, server: 127.0.0.1:5101, upstream: "127.0.0.1:5074", bytes from/to client:0/0\n'
        '2026/12/01 10:00:01 [error] 7#7: *2 SSL_do_handshake() failed (SSL: error) while SSL handshaking to upstream, '
        'client: 127.0.0.1, server: [::1]:5100, upstream: "[::1]:5074"\n'
        '2026/12/01 10:00:02 [notice] 7#7: signal process started\n')
    counts = proxy_reports.nginx_report({"run_dir": str(tmp_path), "log_file": str(log)}, [5100, 5101])
    assert counts[0]["tls_handshake"] == 1 and counts[1]["target"] == 1 and counts[0]["target"] == 0
    with open(log, "a", encoding="utf-8") as handle:  # read on from the last offset
        handle.write('2026/12/01 10:00:03 [error] 7#7: *3 connect() failed (111) client: 127.0.0.1, '
                     'server: 127.0.0.1:5101, upstream: "x"\n')
    assert proxy_reports.nginx_report({"run_dir": str(tmp_path), "log_file": str(log)}, [5100, 5101])[1]["target"] == 2
    assert proxy_reports.nginx_report({"run_dir": str(tmp_path), "log_file": "/dev/stderr"}, [5100]) is None  # not in the run dir


def test_stunnel_log_ties_connections_to_listeners(tmp_path):
    log = tmp_path / "proxy.log"
    log.write_text(
        "2026.12.01 10:00:00 LOG5[0]: Service [listener_1] accepted connection from 127.0.0.1:40000\n"
        "2026.12.01 10:00:00 LOG3[0]: s_connect: connect 127.0.0.1:5074: Connection refused (111)\n"
        "2026.12.01 10:00:01 LOG5[1]: Service [listener_0] accepted connection from 127.0.0.1:40002\n"
        "2026.12.01 10:00:01 LOG3[1]: SSL_accept: ssl/record/ssl3_record.c:354: error:0A00010B:SSL routines::wrong "
        "version number\n"
        "2026.12.01 10:00:02 LOG3[9]: s_connect: connect 127.0.0.1:5074: Connection refused (111)\n")
    counts = proxy_reports.stunnel_report({"run_dir": str(tmp_path), "log_file": str(log)}, [5100, 5101])
    assert counts[1]["target"] == 1 and counts[0]["tls_handshake"] == 1
    assert sum(sum(c.values()) for c in counts) == 2  # connection 9 was never tied to a listener


def test_haproxy_stats_socket_path_fits_a_unix_socket(tmp_path):
    assert proxy_reports.stats_socket_path("/var/lib/scistream/run/" + UID).endswith("/haproxy.sock")
    assert proxy_reports.stats_socket_path("/" + "x" * 100) is None
    no_socket = {"run_dir": str(tmp_path), "stats_socket": str(tmp_path / "none.sock")}
    assert proxy_reports.haproxy_report(no_socket, [5100]) is None  # no socket: no report


# -- control server metrics ---------------------------------------------------------------------
def test_call_metrics_count_codes_latency_and_auth_failures():
    call_metrics = s2cs_metrics.CallMetrics()
    with call_metrics.track("release", lambda: None):
        pass
    with pytest.raises(RuntimeError):
        with call_metrics.track("req", lambda: "UNAUTHENTICATED"):
            raise RuntimeError("aborted")
    text = generate_latest(call_metrics.registry).decode()
    assert 'scistream_s2cs_calls_total{code="OK",method="release"} 1.0' in text
    assert 'scistream_s2cs_calls_total{code="UNAUTHENTICATED",method="req"} 1.0' in text
    assert "scistream_s2cs_auth_failures_total 1.0" in text
    assert 'scistream_s2cs_calls_in_progress{method="req"} 0.0' in text
    assert 'scistream_s2cs_call_duration_seconds_count{method="req"} 1.0' in text
    assert s2cs_metrics.method_name("/scistream.Control/hello") == "hello"
    assert s2cs_metrics.method_name("/evil/" + "x" * 100) == "other"  # bounded label values


def test_install_without_metrics_port_adds_nothing():
    assert s2cs_metrics.install(types.SimpleNamespace(metrics_port=None), None) == []


def test_counter_without_binding_says_why(monkeypatch):
    monkeypatch.setattr(counting, "HAS_NFTABLES", False)  # the adapter finds the system's binding for any Python
    counter = counting.SessionCounter()
    assert not counter.available and "nftables" in counter.reason + "root"
    with pytest.raises(counting.CountersUnavailable) as err:
        counter.read(make_record())
    assert UID in str(err.value)


# -- fuzz: what arrives from outside (HTTP headers, proxy logs and stats) never breaks a reader ------------
@settings(max_examples=150, deadline=None)
@given(header=st.one_of(st.none(), st.text(max_size=200), st.binary(max_size=120).map(
    lambda raw: "Basic " + base64.b64encode(raw).decode())))
def test_any_authorization_header_is_refused_without_error(header):
    config = web.WebConfig(users={"prometheus": "$2b$04$" + "a" * 53})  # a malformed hash matches nothing
    assert config.authorized(header) is False


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.text(max_size=160).filter(lambda t: "\n" not in t and "\r" not in t), max_size=20))
def test_any_log_lines_give_bounded_counts(tmp_path_factory, lines):
    directory = tmp_path_factory.mktemp("log")
    log = directory / "proxy.log"
    log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    for report in (proxy_reports.nginx_report, proxy_reports.stunnel_report):
        counts = report({"run_dir": str(directory), "log_file": str(log)}, [5100, 5101])
        assert len(counts) == 2 and sum(sum(c.values()) for c in counts) <= len(lines)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.lists(st.text(alphabet="abc_019,FRONTEND", max_size=12), min_size=1, max_size=20), max_size=6))
def test_any_haproxy_stats_rows_are_read_without_error(rows):
    header = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp\n"
    text = header + "".join(",".join(row) + "\n" for row in rows)
    counts = proxy_reports.errors_from_stat(proxy_reports.parse_stat(text), 3)
    assert len(counts) == 3 and all(v >= 0 for c in counts for v in c.values())


def test_haproxy_stats_rows_map_to_listeners():
    text = ("# pxname,svname,ereq,econ,eresp\nlistener_1,FRONTEND,4,,\ntarget_1,BACKEND,,2,1\n"
            "target_9,BACKEND,,7,7\nstats,FRONTEND,9,,\n")
    counts = proxy_reports.errors_from_stat(proxy_reports.parse_stat(text), 2)
    assert counts[1] == {"target": 2, "tls_handshake": 0, "reset": 0, "request": 4, "response": 1}
    assert counts[0] == dict.fromkeys(proxy_reports.REASONS, 0)
