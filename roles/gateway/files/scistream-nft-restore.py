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

The table names, the binding and the one-or-each loading come from the
collection's nftables adapter (plugins/module_utils/s2ds/nft.py), which the
gateway role installs beside this file as scistream_nft.py.
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


def load_adapter():
    for path in ADAPTER_PATHS:
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location("scistream_nft", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise SystemExit("scistream-nft-restore: the nftables adapter is missing (looked for %s)" % ", ".join(ADAPTER_PATHS))


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
    return 1 if failed or not_loaded or not restore_counting(ctx, state_dir) else 0


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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/var/lib/scistream"))
