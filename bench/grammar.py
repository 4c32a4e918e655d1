# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the input grammar and the renderers' backstop cost, printed as a Markdown table (nothing is asserted).

    flock /tmp/scistream-heavy.lock .venv/bin/python bench/grammar.py [--pairs 5]

1. render: one session of 100 listeners rendered per backend with the
   backstop (the shared Jinja2 environment's ``finalize``) against the same
   template compiled without it, alternated; median ratio with its range.
2. parse: 1000 targets (IPv4, IPv6, names) through ``parse_target`` against
   ``ipaddress.ip_address`` on the same texts (what the old validation
   leaned on), alternated; and the time per target.

Pure CPU, no ports, no processes.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(os.path.dirname(HERE), ".build")
sys.path.insert(0, BUILD)
sys.path.insert(0, HERE)

from pairs import alternate  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import backends  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import (  # noqa: E402
    SessionRecord, parse_target)

ROUNDS = 50


def _record(name):
    targets = ["10.0.3.%d:%d" % (i % 250 + 1, 5000 + i) for i in range(50)] + \
              ["[2001:db8::%x]:%d" % (i + 1, 6000 + i) for i in range(25)] + \
              ["daq-%d.facility.example.org:%d" % (i, 7000 + i) for i in range(25)]
    return SessionRecord(uid="4f6c1b7e-2a3d-4c5e-9f00-1234567890ab", role="PROD", backend=name, runtime="process",
                         listener_ip="10.0.1.2", ports=list(range(5100, 5200)), targets=targets)


PATHS = {"run_dir": "/var/lib/scistream/run/x", "pid_file": "/var/lib/scistream/run/x/proxy.pid",
         "log_file": "/var/lib/scistream/run/x/proxy.log", "psk_file": "/var/lib/scistream/run/x/psk.txt",
         "foreground": False}


def _timed(call, rounds=ROUNDS):
    start = time.perf_counter()
    for dummy in range(rounds):
        call()
    return (time.perf_counter() - start) / rounds


def render_pairs(name, pairs):
    backend = backends.get_backend(name)
    record = _record(name)
    checked = backends._compiled(backend.template, backend.name, backend.unsafe_characters)  # pylint: disable=protected-access
    plain = backends._compiled(backend.template)  # pylint: disable=protected-access
    text = backends.render_config(backend, record, PATHS, "PSK-AES128-GCM-SHA256")
    assert checked is not plain and text

    def context():
        # What render_config hands the template, built once: only the rendering is timed.
        captured = {}
        original = backends.render_text
        backends.render_text = lambda t, variables, *a, **k: captured.update(variables) or ""
        try:
            backends.render_config(backend, record, PATHS, "PSK-AES128-GCM-SHA256")
        finally:
            backends.render_text = original
        return captured

    variables = context()
    return alternate(lambda: _timed(lambda: plain.render(variables)), lambda: _timed(lambda: checked.render(variables)),
                     pairs=pairs)


def parse_pairs(pairs):
    texts = ["10.0.3.%d:%d" % (i % 250 + 1, 5000 + i) for i in range(400)] + \
            ["[2001:db8::%x]:%d" % (i + 1, 6000 + i) for i in range(300)] + \
            ["daq-%d.facility.example.org:%d" % (i, 7000 + i) for i in range(300)]

    def old_style():
        for text in texts:
            host = text.rpartition(":")[0].strip("[]")
            try:
                ipaddress.ip_address(host)
            except ValueError:
                pass

    def grammar():
        for text in texts:
            parse_target(text)

    return alternate(lambda: _timed(old_style, 10), lambda: _timed(grammar, 10), pairs=pairs), len(texts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    print("| what | baseline ms | with grammar/backstop ms | ratio |")
    print("|---|---|---|---|")
    for name in ("haproxy", "nginx", "stunnel"):
        result = render_pairs(name, args.pairs)
        print("| render 100 listeners, %s (plain Jinja2 vs finalize) | %.3f | %.3f | %s |" % (
            name, result.baseline * 1e3, result.path * 1e3, result.cell()))
    result, count = parse_pairs(args.pairs)
    print("| parse %d targets (ipaddress only vs parse_target) | %.3f | %.3f | %s |" % (
        count, result.baseline * 1e3, result.path * 1e3, result.cell()))
    print("\nparse_target: %.2f us per target" % (result.path / count * 1e6))


if __name__ == "__main__":
    main()
