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
"""

import glob
import json
import os
import sys

import nftables

TABLE = {"family": "inet", "name": "scistream"}


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
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/var/lib/scistream"))
