# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Put back the kernel data path of every S2DS session kept under a state dir (installed by scistream.gateway.gateway).

    /usr/bin/python3 scistream-nft-restore.py [STATE_DIR]     (default /var/lib/scistream)

The rules of each session of backend nftables are kept as
STATE_DIR/run/<uid>/nftables.json (libnftables JSON). One transaction
replaces the table inet scistream with all of them, so running this again
changes nothing and a half-loaded state is never seen. If that transaction
fails, each session is loaded alone, so one bad file does not keep the
others out; the exit status is then 1. Run at boot by
scistream-nft-restore.service, and again whenever nftables.service restarts.

The kernel counters of the proxies' sessions (table inet scistream-count,
docs/metrics.md) are put back the same way from STATE_DIR/run/<uid>/counting.json:
the table's base part once, then every session's chains and map elements.

The rated sessions (docs/rates.md) come back from STATE_DIR/run/<uid>/rate.json:
the table inet scistream-rate (its base once, then every session's map
elements) and each session's HTB class on its devices (the root qdisc made
where the device has the kernel's default, never over someone else's).

The table names, the binding and the one-or-each loading come from the
collection's nftables adapter (plugins/module_utils/s2ds/nft.py), which the
gateway role installs beside this file as scistream_nft.py; the classes from
its traffic-control adapter (s2ds/tc.py, installed as scistream_tc.py).
"""

import glob
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
#: Where the adapter is: beside this file (installed by the role), else in the collection this file is part of.
ADAPTER_PATHS = (os.path.join(HERE, "scistream_nft.py"),
                 os.path.join(HERE, "..", "..", "..", "plugins", "module_utils", "s2ds", "nft.py"))


TC_ADAPTER_PATHS = (os.path.join(HERE, "scistream_tc.py"),
                    os.path.join(HERE, "..", "..", "..", "plugins", "module_utils", "s2ds", "tc.py"))


def load_adapter(paths=ADAPTER_PATHS, name="scistream_nft"):
    for path in paths:
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise SystemExit("scistream-nft-restore: the %s adapter is missing (looked for %s)" % (name, ", ".join(paths)))


nft = load_adapter()


def report(text):
    print(text, file=sys.stderr)


def load(path):
    with open(path, encoding="utf-8") as handle:
        return nft.without_metainfo(json.load(handle)["nftables"])


def context(given=None):
    """The adapter's context (``given`` may be a libnftables context of the caller's)."""
    return given if isinstance(given, nft.Nft) else nft.Nft(given)


def main(state_dir):
    if not nft.HAS_NFTABLES:
        raise SystemExit("scistream-nft-restore: needs " + nft.MISSING_BINDING)
    failed = False
    sessions = []
    for path in sorted(glob.glob(os.path.join(state_dir, "run", "*", "nftables.json"))):
        try:
            sessions.append((path, load(path)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            report("%s: cannot be read: %s" % (path, exc))
            failed = True
    ctx = context()
    not_loaded = nft.load_in_one_or_each(ctx, nft.reset_table(nft.FORWARD_TABLE), sessions, report)
    print("scistream-nft-restore: %d session(s) in place from %s" % (len(sessions) - len(not_loaded), state_dir))
    counted = restore_counting(ctx, state_dir)
    rated = restore_rates(ctx, state_dir)
    return 1 if failed or not_loaded or not counted or not rated else 0


def restore_counting(given, state_dir):
    """Replace the table inet scistream-count with every counted session's part; False when one failed."""
    documents, ok = [], True
    for path in sorted(glob.glob(os.path.join(state_dir, "run", "*", "counting.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            documents.append((path, document["base"], document["session"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            report("%s: cannot be read: %s" % (path, exc))
            ok = False
    if not documents:
        return ok
    reset = nft.reset_table(nft.COUNT_TABLE) + documents[0][1]
    not_loaded = nft.load_in_one_or_each(context(given), reset, [(path, session) for path, dummy, session in documents],
                                         report)
    print("scistream-nft-restore: counters of %d session(s) in place" % len(documents))
    return ok and not not_loaded


def restore_rates(given, state_dir, control=None):
    """Replace the table inet scistream-rate with every rated session's part and give each its classes; False
    when one failed."""
    documents, ok = [], True
    for path in sorted(glob.glob(os.path.join(state_dir, "run", "*", "rate.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            documents.append((path, document["base"], document["session"], list(document["classes"])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            report("%s: cannot be read: %s" % (path, exc))
            ok = False
    if not documents:
        return ok
    tc = load_adapter(TC_ADAPTER_PATHS, "scistream_tc")
    if control is None and not tc.HAS_PYROUTE2:
        report("rates: not restored: needs %s" % tc.MISSING_PYROUTE2)
        return False
    control = control or tc.TrafficControl()
    for path, dummy, dummy2, classes in documents:
        for entry in classes:
            try:
                control.set_class(str(entry["device"]), int(entry["minor"]), int(entry["bytes_per_second"]))
            except (tc.ShapingError, KeyError, TypeError, ValueError) as exc:
                report("%s: class not restored: %s" % (path, exc))
                ok = False
    reset = nft.reset_table(nft.RATE_TABLE) + documents[0][1]
    parts = [(path, session) for path, dummy, session, dummy2 in documents]
    not_loaded = nft.load_in_one_or_each(context(given), reset, parts, report)
    print("scistream-nft-restore: rates of %d session(s) in place" % len(documents))
    return ok and not not_loaded


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/var/lib/scistream"))
