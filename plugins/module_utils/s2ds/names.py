# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one mapping from a session's uid to the name it has on the host.

Kept apart from session.py (which re-exports it) so that the templates and
runtimes can import it without an import cycle.
"""

from __future__ import annotations

import hashlib
import re

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_canonical_uuid(uid):
    """``uid`` is a lower-case 8-4-4-4-12 UUID (the form parse_uid folds UUIDs to)."""
    return _UUID_RE.fullmatch(uid) is not None


def session_key(uid):
    """The name of session ``uid`` in file, unit, container, nftables chain and Janus names.

    A canonical UUID is its own key: the names sessions always had, so
    existing sessions are found. Any other uid (upstream clients may send
    '.', '..', '-x', 'A' beside 'a', 64 characters...) gets ``s-`` and 32 hex
    digits of its SHA-256: safe in every kind of name, short enough for all
    of them, stable, and never equal to a UUID's key or to another uid's.
    """
    if is_canonical_uuid(uid):
        return uid
    return "s-" + hashlib.sha256(uid.encode("utf-8")).hexdigest()[:32]
