# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Encrypted streams: two encrypted gateway hops / direct, printed as Markdown (nothing is asserted).

    flock /tmp/scistream-bench.lock .venv/bin/python bench/tls.py [--seconds 3] [--pairs 3] [--only main|settings]
        [--match TEXT]

For each path (HAProxy with encryption tls, NGINX with encryption tls,
stunnel with its PSK, and plain HAProxy for reference) a CONS -> PROD chain
of two gateways (process runtime) runs on loopback in front of an iperf3
server. iperf3 runs direct and through the chain in turn, ``--pairs`` times,
and each pair gives one ratio; the table shows the median ratio and its
range, for 1 and 4 streams, and the 1-minute load average after the row
(the machine may be shared). ``settings`` then measures one stream for each
variant of the settings (ciphers, TLS version, record size, buffers,
threads), each against direct in the same alternating way.

Certificates (EC P-256, one CA) are made in a temporary directory with the
`cryptography` library. Traffic goes to 127.0.0.1 only, ports 30500-30799.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".build"))

# pylint: disable=wrong-import-position
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import backends  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.templates import stunnel  # noqa: E402

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)

IPERF_PORT = 30500
DEFAULT_TUNING = dict(backends.TUNING)

# (label, backend, encryption, tuning overrides, extra spec options, stunnel template edits)
MAIN = [
    ("haproxy, plain (reference)", "haproxy", "none", {}, {}),
    ("haproxy-tls", "haproxy", "tls", {}, {}),
    ("nginx-tls", "nginx", "tls", {}, {}),
    ("stunnel (PSK)", "stunnel", "none", {}, {}),
]

SETTINGS = [
    ("haproxy-tls, defaults (TLS 1.3, OpenSSL's suite order: AES-256-GCM)", "haproxy", "tls", {}, {}),
    ("haproxy-tls, TLS_AES_128_GCM_SHA256", "haproxy", "tls", {"tls_ciphersuites": "TLS_AES_128_GCM_SHA256"}, {}),
    ("haproxy-tls, TLS_CHACHA20_POLY1305_SHA256", "haproxy", "tls",
     {"tls_ciphersuites": "TLS_CHACHA20_POLY1305_SHA256"}, {}),
    ("haproxy-tls, TLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256", "haproxy", "tls",
     {"tls_ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"}, {"tls_version": "1.2"}),
    ("haproxy-tls, tune.ssl.maxrecord 4096", "haproxy", "tls", {"haproxy_ssl_maxrecord": 4096}, {}),
    ("haproxy-tls, tune.bufsize 16384 (HAProxy's default)", "haproxy", "tls", {"haproxy_bufsize": 16384}, {}),
    ("haproxy-tls, tune.bufsize 1048576", "haproxy", "tls", {"haproxy_bufsize": 1048576}, {}),
    ("haproxy-tls, nbthread 1", "haproxy", "tls", {"haproxy_nbthread": 1}, {}),
    ("nginx-tls, defaults (TLS 1.3, AES-256-GCM)", "nginx", "tls", {}, {}),
    ("nginx-tls, TLS_AES_128_GCM_SHA256", "nginx", "tls", {"tls_ciphersuites": "TLS_AES_128_GCM_SHA256"}, {}),
    ("nginx-tls, TLS_CHACHA20_POLY1305_SHA256", "nginx", "tls",
     {"tls_ciphersuites": "TLS_CHACHA20_POLY1305_SHA256"}, {}),
    ("nginx-tls, TLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256", "nginx", "tls",
     {"tls_ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"}, {"tls_version": "1.2"}),
    ("nginx-tls, proxy_buffer_size 16k (NGINX's default)", "nginx", "tls", {"nginx_buffer_size": "16k"}, {}),
    ("nginx-tls, proxy_buffer_size 1m", "nginx", "tls", {"nginx_buffer_size": "1m"}, {}),
    ("nginx-tls, 2 workers", "nginx", "tls", {"nginx_workers": 2}, {}),
    ("stunnel, defaults (TLSv1.2 PSK-AES128-GCM-SHA256)", "stunnel", "none", {}, {}),
    ("stunnel, PSK-AES256-GCM-SHA384", "stunnel", "none", {}, {"psk_cipher": "PSK-AES256-GCM-SHA384"}),
    ("stunnel, PSK-CHACHA20-POLY1305", "stunnel", "none", {}, {"psk_cipher": "PSK-CHACHA20-POLY1305"}),
    ("stunnel, TLS 1.3 (PSK, TLS_AES_128_GCM_SHA256)", "stunnel", "none", {},
     {"stunnel_edit": [("sslVersion = TLSv1.2", "sslVersion = TLSv1.3\nciphersuites = TLS_AES_128_GCM_SHA256")]}),
    ("stunnel, 4 MiB socket buffers both sides", "stunnel", "none", {},
     {"stunnel_edit": [("socket = r:TCP_NODELAY=1", "socket = r:TCP_NODELAY=1\nsocket = l:SO_SNDBUF=4194304\n"
                        "socket = l:SO_RCVBUF=4194304\nsocket = r:SO_SNDBUF=4194304\nsocket = r:SO_RCVBUF=4194304")]}),
]


# -- certificates ---------------------------------------------------------------
def make_pki(directory):
    now = datetime.datetime.now(datetime.timezone.utc)

    def write(name, data, mode=0o644):
        path = os.path.join(directory, name)
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, mode)
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    paths = {"tls_ca": write("ca.crt", ca.public_bytes(serialization.Encoding.PEM))}
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("127.0.0.1"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths["tls_cert"] = write("gateway.crt", cert.public_bytes(serialization.Encoding.PEM))
    paths["tls_key"] = write("gateway.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
    return paths


# -- iperf3 ---------------------------------------------------------------------------
class IperfServer:
    """iperf3 -s on 127.0.0.1:``port``, started again if it dies (it exits on some client errors)."""

    def __init__(self, port):
        self.port = port
        self.proc = None

    def ensure(self):
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


SERVER = IperfServer(IPERF_PORT)


def iperf(port, seconds, streams, tries=10):
    """Gbit/s received; waits while the server finishes the previous test, restarts a server that died."""
    for dummy in range(tries):
        SERVER.ensure()
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-P", str(streams),
                              "-J"], capture_output=True, text=True, timeout=seconds + 30, check=False)
        data = json.loads(out.stdout)
        error = data.get("error", "")
        if "busy" not in error and "unable to connect" not in error and "unable to receive" not in error:
            break
        time.sleep(1)
    if "error" in data:
        raise RuntimeError(data["error"])
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


# -- chains -----------------------------------------------------------------------------
@contextlib.contextmanager
def chain(workdir, pki, backend, encryption, tuning, options):
    """PROD (-> iperf3 server) and CONS (-> PROD) on this host; yields the CONS port."""
    backends.TUNING.clear()
    backends.TUNING.update(DEFAULT_TUNING, **tuning)
    options = dict(options)
    edits = options.pop("stunnel_edit", None)
    if edits:
        text = stunnel.TEMPLATE
        for old, new in edits:
            assert old in text, old
            text = text.replace(old, new)
        options["template"] = os.path.join(workdir, "stunnel-variant.j2")
        with open(options["template"], "w", encoding="utf-8") as handle:
            handle.write(text)
    uid = str(uuid.uuid4())
    runtimes = {"process": lambda spec: ProcessRuntime("daemon")}
    prod = Gateway(os.path.join(workdir, uid, "a"), runtimes, policy=LOOPBACK_POLICY)
    cons = Gateway(os.path.join(workdir, uid, "b"), runtimes, policy=LOOPBACK_POLICY)
    common = dict(uid=uid, num_conn=1, listener_ip="127.0.0.1", backend=backend, encryption=encryption, **options)
    if encryption == "tls":
        common.update(pki)
    if backend == "stunnel":
        common["psk"] = "b" * 32
    try:
        p = prod.present(SessionSpec.build(role="PROD", port_range="30600-30649",
                                           targets=["127.0.0.1:%d" % IPERF_PORT], **common))
        c = cons.present(SessionSpec.build(role="CONS", port_range="30650-30699",
                                           targets=p.session["listeners"], **common))
        yield c.session["ports"][0]
    finally:
        prod.absent(uid)
        cons.absent(uid)
        backends.TUNING.clear()
        backends.TUNING.update(DEFAULT_TUNING)


def alternate(port, seconds, streams, pairs):
    """``pairs`` times: direct, then the path; returns (path Gbit/s list, ratios)."""
    path, ratios = [], []
    for dummy in range(pairs):
        direct = iperf(IPERF_PORT, seconds, streams)
        through = iperf(port, seconds, streams)
        path.append(through)
        ratios.append(through / direct)
    return path, ratios


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def fmt(ratios):
    return "%.2f (%.2f-%.2f)" % (median(ratios), min(ratios), max(ratios))


def loadavg():
    with open("/proc/loadavg", encoding="ascii") as handle:
        return handle.read().split()[0]


def bench(rows, args, workdir, pki, streams_list):
    lines = []
    for label, backend, encryption, tuning, options in rows:
        if args.match and args.match not in label:
            continue
        with chain(workdir, pki, backend, encryption, tuning, options) as port:
            cells = [label]
            for streams in streams_list:
                rates, ratios = alternate(port, args.seconds, streams, args.pairs)
                cells += ["%.1f" % median(rates), fmt(ratios)]
        cells.append(loadavg())
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--only", choices=["main", "settings"])
    parser.add_argument("--match", help="only the rows whose label contains this text")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sstls-bench-") as workdir:
        pki = make_pki(workdir)
        print("# scistream.gateway TLS bench, %s, %d cores, load average %s at start, %ds per iperf3 run, %d pairs\n" % (
            time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), loadavg(), args.seconds, args.pairs))
        try:
            if args.only in (None, "main"):
                print("| path (two hops, process runtime) | 1 stream Gbit/s | ratio, median (range) "
                      "| 4 streams Gbit/s | ratio, median (range) | load avg |")
                print("|---|---|---|---|---|---|")
                print("\n".join(bench(MAIN, args, workdir, pki, (1, 4))) + "\n")
            if args.only in (None, "settings"):
                print("| setting (two hops, 1 stream) | Gbit/s | ratio, median (range) | load avg |")
                print("|---|---|---|---|")
                print("\n".join(bench(SETTINGS, args, workdir, pki, (1,))) + "\n")
        finally:
            SERVER.stop()
        print("load average at the end: %s" % loadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
