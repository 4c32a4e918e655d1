# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Draw the dashboard's panels (files/grafana/scistream.json) from a real run, where Grafana is not at hand.

    SCISTREAM_DASHBOARD_DATA=/tmp/dashboard.json flock /tmp/scistream-heavy.lock \\
        .venv/bin/pytest tests/integration/test_metrics.py
    .venv/bin/python docs/plot_dashboard.py /tmp/dashboard.json docs/dashboard.png

The test keeps every panel's series from the real Prometheus (query_range
over the test module's run); this script only plots them (matplotlib).
"""

from __future__ import annotations

import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SCALE = {"bps": (1e9, "Gbit/s"), "decbytes": (2 ** 20, "MiB"), "s": (1, "s"), "reqps": (1, "calls/s"), "none": (1, "")}


def legend(template, labels):
    text = template
    for key, value in labels.items():
        text = text.replace("{{%s}}" % key, value[:8] if key == "uid" else value)
    return text.strip() or "value"


def plot(data, out):
    panels = [p for p in data["panels"] if p["type"] != "stat"]
    stats = [p for p in data["panels"] if p["type"] == "stat"]
    columns = 3
    rows = 1 + math.ceil(len(panels) / columns)
    figure = plt.figure(figsize=(18, 3.4 * rows))
    figure.suptitle("SciStream gateways (files/grafana/scistream.json), from a real test run", fontsize=14)
    for index, panel in enumerate(stats):
        axes = figure.add_subplot(rows, len(stats), index + 1)
        values = [float(s["result"][-1]["values"][-1][1]) for s in panel["series"] if s["result"]]
        axes.text(0.5, 0.4, "%g" % (values[0] if values else 0), ha="center", va="center", fontsize=28)
        axes.set_title(panel["title"] + " (at the end)")
        axes.axis("off")
    start = data["start"]
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, columns + index + 1)
        divisor, unit = SCALE.get(panel["unit"], (1, panel["unit"]))
        for series in panel["series"]:
            for result in series["result"][:8]:
                xs = [float(t) - start for t, dummy in result["values"]]
                ys = [float(v) / divisor for dummy, v in result["values"]]
                axes.plot(xs, ys, label=legend(series["legend"], result["metric"]), linewidth=1.2)
        axes.set_title(panel["title"], fontsize=10)
        axes.set_xlabel("seconds into the run", fontsize=8)
        axes.set_ylabel(unit, fontsize=8)
        axes.tick_params(labelsize=7)
        if axes.lines:
            axes.legend(fontsize=6, loc="upper left")
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(out, dpi=80)


if __name__ == "__main__":
    plot(json.load(open(sys.argv[1], encoding="utf-8")), sys.argv[2])
