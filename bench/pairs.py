# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Trustworthy ratios on a noisy machine: alternate baseline and path, report the median ratio and its range.

One baseline sample divided into every path sample swings with the baseline
(direct loopback read 15.8 and 21.7 Gbit/s on one day). Instead each path
sample is paired with a baseline sample taken just before it::

    result = alternate(lambda: iperf(direct), lambda: iperf(path), pairs=3)
    result.cell()      # "0.97 (0.95-0.99)": median ratio (lowest-highest)

Shared by bench/run.py and bench/tls.py.
"""

from __future__ import annotations

import dataclasses
import statistics

MIN_PAIRS = 3


@dataclasses.dataclass
class Pairs:
    """(baseline, path) samples, in the order they were taken."""

    samples: list

    @property
    def ratios(self):
        return [path / base for base, path in self.samples if base]

    @property
    def ratio(self):
        return statistics.median(self.ratios)

    @property
    def low(self):
        return min(self.ratios)

    @property
    def high(self):
        return max(self.ratios)

    @property
    def baseline(self):
        return statistics.median(b for b, dummy in self.samples)

    @property
    def path(self):
        return statistics.median(p for dummy, p in self.samples)

    def cell(self, digits=2):
        """``median (low-high)`` of the ratios, for a Markdown table."""
        fmt = "%%.%df" % digits
        return ("%s (%s-%s)" % (fmt, fmt, fmt)) % (self.ratio, self.low, self.high)


def alternate(baseline, path, pairs=MIN_PAIRS):
    """Measure ``baseline()``, ``path()``, ``baseline()``, ``path()``... ``pairs`` times each."""
    if pairs < MIN_PAIRS:
        raise ValueError("at least %d pairs make a median with a range" % MIN_PAIRS)
    return Pairs([(baseline(), path()) for dummy in range(pairs)])


def loadavg():
    """The 1, 5 and 15 minute load averages, as /proc/loadavg has them: printed beside every table."""
    with open("/proc/loadavg", encoding="ascii") as handle:
        return " ".join(handle.read().split()[:3])
