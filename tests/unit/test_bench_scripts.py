# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every benchmark in bench/ still imports and answers --help (bench/limits.py and bench/s2cs.py once imported
helpers from a test module that had moved, and nothing noticed until a benchmark was run)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from conftest import ROOT

#: Not command-line programs: nsgw.py is fed JSON by bench/run.py inside a namespace; pairs.py is a library.
HELPERS = {"nsgw.py", "pairs.py"}
SCRIPTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "bench", "*.py"))
                 if os.path.basename(p) not in HELPERS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_answers_help(script):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), proc.stderr[-2000:]
