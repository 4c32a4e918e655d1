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
"""

import glob
import json
import os
import sys

import nftables

TABLE = {"family": "inet", "name": "scistream"}
COUNT_TABLE = {"family": "inet", "name": "scistream-count"}


def load(path):
    with open(path, encoding="utf-8") as handle:
        return [c for c in json.load(handle)["nftables"] if "metainfo" not in c]


def main(state_dir):
    failed = False
    sessions = []
    for path in sorted(glob.glob(os.path.join(state_dir, "run", "*", "nftables.json"))):
        try:
            sessions.append((path, load(path)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print("%s: cannot be read: %s" % (path, exc), file=sys.stderr)
            failed = True
    nft = nftables.Nftables()
    reset = [{"add": {"table": TABLE}}, {"delete": {"table": TABLE}}]
    rc, dummy, error = nft.json_cmd({"nftables": reset + [c for dummy, commands in sessions for c in commands]})
    if rc != 0:
        print("one transaction failed (%s); loading the sessions one by one" % error.strip(), file=sys.stderr)
        nft.json_cmd({"nftables": reset})
        for path, commands in list(sessions):
            rc, dummy, error = nft.json_cmd({"nftables": commands})
            if rc != 0:
                print("%s: not loaded: %s" % (path, error.strip()), file=sys.stderr)
                sessions.remove((path, commands))
                failed = True
    print("scistream-nft-restore: %d session(s) in place from %s" % (len(sessions), state_dir))
    return 1 if failed or not restore_counting(nft, state_dir) else 0


def restore_counting(nft, state_dir):
    """Replace the table inet scistream-count with every counted session's part; False when one failed."""
    documents, ok = [], True
    for path in sorted(glob.glob(os.path.join(state_dir, "run", "*", "counting.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            documents.append((path, document["base"], document["session"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print("%s: cannot be read: %s" % (path, exc), file=sys.stderr)
            ok = False
    if not documents:
        return ok
    reset = [{"add": {"table": COUNT_TABLE}}, {"delete": {"table": COUNT_TABLE}}] + documents[0][1]
    rc, dummy, error = nft.json_cmd({"nftables": reset + [c for dummy, dummy2, session in documents for c in session]})
    if rc != 0:
        print("counters in one transaction failed (%s); one by one" % error.strip(), file=sys.stderr)
        nft.json_cmd({"nftables": reset})
        for path, dummy, session in documents:
            rc, dummy2, error = nft.json_cmd({"nftables": session})
            if rc != 0:
                print("%s: not loaded: %s" % (path, error.strip()), file=sys.stderr)
                ok = False
    print("scistream-nft-restore: counters of %d session(s) in place" % len(documents))
    return ok


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/var/lib/scistream"))
