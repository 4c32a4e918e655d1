# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Push bytes through a stream and prove they arrived: a sink and a source, SHA-256 at both ends.

    streamcheck.py sink --listen 127.0.0.1:7000 [--udp] [--timeout 60]
    streamcheck.py send --to 127.0.0.1:5100 --bytes 200M [--udp]

Each prints one JSON object (bytes, sha256, seconds, gbit_s). Python 3 standard
library only, so it runs on any gateway or application host. Every wait is
bounded by --timeout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sys
import time

CHUNK = 1 << 20
DATAGRAM = 1024
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text):
    text = text.strip().upper().rstrip("B")
    unit = text[-1] if text and text[-1] in UNITS else ""
    return int(float(text[:len(text) - len(unit)]) * UNITS[unit])


def parse_endpoint(text):
    host, dummy, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def payload(size, seed):
    """Deterministic pseudo-random chunks adding up to ``size`` bytes."""
    rng = random.Random(seed)
    block = rng.randbytes(CHUNK)
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        # Vary each chunk cheaply so that a reordered or repeated chunk shows in the digest.
        head = sent.to_bytes(8, "big")
        yield (head + block[8:])[:n]
        sent += n


def result(nbytes, digest, seconds, **extra):
    out = {"bytes": nbytes, "sha256": digest, "seconds": round(seconds, 3),
           "gbit_s": round(nbytes * 8 / seconds / 1e9, 3) if seconds > 0 else None}
    out.update(extra)
    return out


def open_sink(host, port, udp=False):
    """A bound (and, for TCP, listening) socket; the caller passes it to ``receive``."""
    sock = socket.socket(family_of(host), socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    if not udp:
        sock.listen(4)
    return sock


def receive(sock, udp=False, timeout=60.0, idle=2.0):
    """Read one TCP connection to its end (or UDP datagrams until ``idle`` s of silence)."""
    sock.settimeout(timeout)
    digest, nbytes = hashlib.sha256(), 0
    if udp:
        datagrams = 0
        data, dummy = sock.recvfrom(65536)
        start = time.monotonic()
        sock.settimeout(idle)
        while True:
            digest.update(data)
            nbytes += len(data)
            datagrams += 1
            try:
                data, dummy = sock.recvfrom(65536)
            except socket.timeout:
                break
        return result(nbytes, digest.hexdigest(), time.monotonic() - start, datagrams=datagrams)
    conn, dummy = sock.accept()
    start = time.monotonic()
    with conn:
        conn.settimeout(timeout)
        while True:
            data = conn.recv(CHUNK)
            if not data:
                break
            digest.update(data)
            nbytes += len(data)
    return result(nbytes, digest.hexdigest(), time.monotonic() - start)


def send(host, port, size, udp=False, seed=0, timeout=60.0):
    """Send ``size`` deterministic bytes to ``host:port``; returns what was sent and its digest."""
    digest, nbytes = hashlib.sha256(), 0
    if udp:
        with socket.socket(family_of(host), socket.SOCK_DGRAM) as sock:
            start = time.monotonic()
            for chunk in payload(size, seed):
                for i in range(0, len(chunk), DATAGRAM):
                    piece = chunk[i:i + DATAGRAM]
                    sock.sendto(piece, (host, port))
                    digest.update(piece)
                    nbytes += len(piece)
                    time.sleep(0.0005)  # stay far below the socket buffers: loss is not what is tested
            return result(nbytes, digest.hexdigest(), time.monotonic() - start)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        start = time.monotonic()
        for chunk in payload(size, seed):
            sock.sendall(chunk)
            digest.update(chunk)
            nbytes += len(chunk)
        sock.shutdown(socket.SHUT_WR)
        # Wait for the far end to close, so the clock includes delivery.
        sock.settimeout(timeout)
        while sock.recv(CHUNK):
            pass
        return result(nbytes, digest.hexdigest(), time.monotonic() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sink_p = sub.add_parser("sink", help="receive one stream and print its digest")
    sink_p.add_argument("--listen", required=True, help="ip:port to listen on")
    send_p = sub.add_parser("send", help="send bytes and print their digest")
    send_p.add_argument("--to", required=True, help="ip:port to send to")
    send_p.add_argument("--bytes", default="100M", help="how much, e.g. 200M")
    send_p.add_argument("--seed", type=int, default=0)
    for p in (sink_p, send_p):
        p.add_argument("--udp", action="store_true")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds any single wait may take")
    args = parser.parse_args(argv)
    if args.command == "sink":
        host, port = parse_endpoint(args.listen)
        with open_sink(host, port, args.udp) as sock:
            print("listening", file=sys.stderr, flush=True)
            out = receive(sock, args.udp, args.timeout)
    else:
        host, port = parse_endpoint(args.to)
        out = send(host, port, parse_size(args.bytes), args.udp, args.seed, args.timeout)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
