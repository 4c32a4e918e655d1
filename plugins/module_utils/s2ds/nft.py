# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one nftables adapter: the binding, a libnftables context, running and listing, counters, table names.

Used by the kernel runtime (the nftables backend's forwarding table), by
counting (the proxies' counting table) and by the gateway role's boot-time
restore, which the role installs with this file beside it: so this module
imports nothing but the standard library.

The binding is libnftables' own Python module (Debian ``python3-nftables``),
a thin ctypes wrapper installed for the distribution's Python only. A module
run by another Python (a virtualenv, an EE's) finds it anyway: when
``import nftables`` fails, the distribution's copy is loaded from its file
(:data:`SYSTEM_BINDINGS`), provided every directory and file on the way
belongs to root and is writable by root alone; its one module file is loaded
under a private name, never put on ``sys.path`` nor in ``sys.modules``, so
nothing else of the system's site packages comes along.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import stat
import sys

__all__ = ["COUNT_TABLE", "FAMILY", "FORWARD_TABLE", "HAS_NFTABLES", "MISSING_BINDING", "Nft", "RATE_TABLE", "counter_of",
           "dropping_forward_chains", "load_in_one_or_each", "reset_table", "table_ref", "without_metainfo"]

FAMILY = "inet"
#: The nftables backend's forwarding table (templates/nftables.py renders its rules).
FORWARD_TABLE = "scistream"
#: The counting table of the proxies' listeners (counting.py).
COUNT_TABLE = "scistream-count"
#: The rated sessions' classification (shaping.py).
RATE_TABLE = "scistream-rate"

#: Where distributions install the binding for their own Python (Debian and Ubuntu first).
SYSTEM_BINDINGS = ("/usr/lib/python3/dist-packages/nftables", "/usr/lib/python3*/site-packages/nftables",
                   "/usr/lib64/python3*/site-packages/nftables")
MISSING_BINDING = ("the nftables Python binding (Debian: python3-nftables; found in this Python or as the "
                   "distribution's copy under %s)" % SYSTEM_BINDINGS[0])


def _root_only(path):
    """True when ``path`` and every directory above it belong to root and only root may write them."""
    while True:
        try:
            info = os.lstat(path)
        except OSError:
            return False
        if stat.S_ISLNK(info.st_mode):
            try:
                target = os.path.realpath(path)
            except OSError:
                return False
            return target != path and _root_only(target)
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _load_system_binding():
    """The distribution's binding, loaded from its module file under a private name (never in sys.modules), or None."""
    for pattern in SYSTEM_BINDINGS:
        for directory in sorted(glob.glob(pattern)):
            # The package's __init__ only re-exports nftables.py, which imports nothing but the standard library.
            source = os.path.join(directory, "nftables.py")
            # Its compiled files too: Python would run a cached .pyc in place of its source.
            files = [source] + [path for pattern2 in ("*.py", "*.json", "__pycache__", os.path.join("__pycache__", "*"))
                                for path in glob.glob(os.path.join(directory, pattern2))]
            if not os.path.isfile(source) or not all(_root_only(path) for path in files):
                continue
            spec = importlib.util.spec_from_file_location("_scistream_system_nftables", source)
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # nothing written there
            try:
                spec.loader.exec_module(module)
            except Exception:  # pylint: disable=broad-exception-caught  # any failure: no binding
                continue
            finally:
                sys.dont_write_bytecode = writes_bytecode
            if hasattr(module, "Nftables"):
                return module
    return None


def _load_binding():
    try:
        import nftables  # pylint: disable=import-outside-toplevel
        return nftables
    except ImportError:
        return _load_system_binding()


binding = _load_binding()
HAS_NFTABLES = binding is not None


def table_ref(name, family=FAMILY):
    """``{"family", "table"}`` of the objects in table ``name``."""
    return {"family": family, "table": name}


def reset_table(name, family=FAMILY):
    """Commands that empty table ``name`` whether or not it exists (add, then delete)."""
    table = {"family": family, "name": name}
    return [{"add": {"table": table}}, {"delete": {"table": table}}]


def without_metainfo(entries):
    """A ruleset's entries less libnftables' ``metainfo`` header."""
    return [entry for entry in entries if "metainfo" not in entry]


def counter_of(rule):
    """A rule's counter (``{"packets", "bytes"}``), or None when it has none."""
    return next((x["counter"] for x in rule.get("expr", []) if isinstance(x, dict) and isinstance(x.get("counter"), dict)),
                None)


class Nft:
    """One libnftables context, JSON in and out, with handles in listings. Needs :data:`HAS_NFTABLES`
    (or ``context``, a libnftables ``Nftables`` of the caller's)."""

    def __init__(self, context=None):
        self.context = context if context is not None else binding.Nftables()
        self.context.set_handle_output(True)

    def run(self, commands, dry_run=False):
        """Run ``commands`` (a list, or ``{"nftables": [...]}``) as one transaction: (rc, output, error text)."""
        document = commands if isinstance(commands, dict) else {"nftables": list(commands)}
        if dry_run:
            self.context.set_dry_run(True)
        try:
            rc, output, error = self.context.json_cmd(document)
        finally:
            if dry_run:
                self.context.set_dry_run(False)
        return rc, output, (error or "")

    def list_table(self, name, family=FAMILY):
        """The entries of table ``name`` (chains, rules, maps), or [] when it does not exist."""
        rc, output, dummy = self.run([{"list": {"table": {"family": family, "name": name}}}])
        if rc != 0 or not isinstance(output, dict):
            return []
        return without_metainfo(output.get("nftables", []))

    def list_chains(self):
        """Every chain of every table (with its hook and policy where it is a base chain), or []."""
        rc, output, dummy = self.run([{"list": {"chains": {}}}])
        if rc != 0 or not isinstance(output, dict):
            return []
        return without_metainfo(output.get("nftables", []))


#: A table or chain name as it may appear in a message (the kernel's ruleset is written by other programs too).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
#: Which families' forward hooks a forwarded packet of each IP version passes.
_FORWARD_FAMILIES = {4: ("ip", "inet"), 6: ("ip6", "inet")}


def dropping_forward_chains(entries, version):
    """``family table chain`` of each base chain at the forward hook whose policy drops what no rule accepts, among
    ``entries`` (a listing of chains), for forwarded packets of IP ``version``. nftables runs every base chain at a
    hook: an accept in one does not save a packet that another drops (Docker's ``ip filter FORWARD`` is such a chain).
    """
    found = []
    for entry in entries:
        chain = entry.get("chain") if isinstance(entry, dict) else None
        if not isinstance(chain, dict) or chain.get("hook") != "forward" or chain.get("policy") != "drop":
            continue
        if chain.get("family") not in _FORWARD_FAMILIES[version]:
            continue
        names = [str(chain.get(key, "")) for key in ("family", "table", "name")]
        found.append(" ".join(name if _PLAIN_NAME.match(name) else "?" for name in names))
    return sorted(set(found))


def load_in_one_or_each(nft, reset, parts, report):
    """Load ``reset`` and every part (a list of (label, commands)) in one transaction; if that fails, ``reset``
    alone and then each part by itself, so one bad part keeps no other out.

    ``report(text)`` is told what failed. Returns the labels of the parts not loaded.
    """
    rc, dummy, error = nft.run(reset + [command for dummy2, commands in parts for command in commands])
    if rc == 0:
        return []
    report("one transaction failed (%s); loading them one by one" % error.strip())
    nft.run(reset)
    failed = []
    for label, commands in parts:
        rc, dummy, error = nft.run(commands)
        if rc != 0:
            report("%s: not loaded: %s" % (label, error.strip()))
            failed.append(label)
    return failed
