# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One uid per session: the proxy uid pool.

Each session's proxy runs as a uid of its own, taken from ``proxy_uid_range``
(default 7400-8399), with the group of the same number as its only group. The
session's run dir is ``root:<gid> 0750``, its files ``root:<gid> 0640`` and
its ``proxy/`` dir ``<uid>:<gid> 0700``: the key and psk are readable by that
uid alone (no account and no other session has that gid), and a compromised
proxy can neither read another session's files nor signal another session's
proxy (a signal needs the same uid).

Allocation is like the ports': a uid is never held by two live sessions of
the host, whichever state dir they are kept in. The host-wide registry
(:data:`DEFAULT_REGISTRY`, a JSON file beside its ``flock`` lock, 0600
root) names, per uid, the state dir and session key that hold it. Why a
registry and not probing alone: a session's uid owns files only in its own
run dir and runs processes only while its proxy runs, so a probe cannot see
a session whose proxy is down; the registry can. The registry lives on disk
(not /run), since sessions outlive a reboot. A uid is handed out only when

* no live entry of the registry holds it (an entry whose session record is
  gone from its state dir is stale and reclaimed),
* no account and no group of this host has that number (``getpwuid`` /
  ``getgrgid``: the gid must give nobody else access), but the pool's own
  account for it (:func:`pool_account_name`: the systemd supervisor makes
  one, since systemd runs a unit only as a uid the user database knows), and
* no process of the host runs with it as real, effective, saved or file
  system uid (a registry lost or edited does not let two proxies share one).

The session record keeps its uid (``proxy_uid``); a record without one
(written before the pool) keeps working and gets a uid at its next change.

Pool accounts (``scistream-p<uid>``, group of the same name and number, no
member, no password, no home, no login shell) are made only under the
systemd supervisor, the first time a unit runs as that uid, and stay when
the session goes: the uid is still the pool's, and the next session that
gets it finds its account. Nothing but the pool's uid ever has that gid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import grp
import json
import os
import pwd
import re
import tempfile
import time

from .errors import PortsExhausted, S2DSError, invalid

__all__ = ["DEFAULT_PROXY_UID_RANGE", "DEFAULT_REGISTRY", "POOL_ACCOUNT_PREFIX", "PoolAccount", "UidPool", "UidsExhausted",
           "is_pool_account", "parse_uid_range", "is_pool_uid", "pool_account_name", "uids_in_use"]

DEFAULT_PROXY_UID_RANGE = "7400-8399"
#: In a directory of its own, so a sandboxed daemon (the S2CS unit, ProtectSystem=strict) can be given just that.
DEFAULT_REGISTRY = "/var/lib/scistream/proxy-uids/registry.json"
#: The largest uid the pool hands out: below 2**31 (no tool takes it for a negative number).
MAX_POOL_UID = 2 ** 31 - 2
#: Numbers a pool never covers: root, nobody / nogroup, the 16-bit "-1", and systemd's DynamicUser= range.
RESERVED_RANGES = ((0, 0, "root"), (65534, 65535, "nobody and the 16-bit -1"),
                   (61184, 65519, "systemd's DynamicUser= range"))
#: Seconds an entry counts as live before its session record exists (the record is written after the proxy starts).
CLAIM_GRACE = 600
#: Most uids one pool may hold (the registry and the process probe stay small).
MAX_POOL_SIZE = 65536
#: A pool account's user and group name is this and its number (``scistream-p7401``).
POOL_ACCOUNT_PREFIX = "scistream-p"
_RANGE_RE = re.compile(r"([1-9][0-9]{0,9})-([1-9][0-9]{0,9})")
_KEY_RE = re.compile(r"[A-Za-z0-9._-]{1,80}")


class UidsExhausted(PortsExhausted):
    """Every uid of the pool is held: like the ports running out, so a control server answers RESOURCE_EXHAUSTED."""


@dataclasses.dataclass(frozen=True)
class PoolAccount:
    """A session's proxy account: a bare uid and the gid of the same number (no name on the host)."""

    uid: int

    @property
    def gid(self):
        return self.uid

    @property
    def name(self):
        return str(self.uid)


def parse_uid_range(value, field="proxy_uid_range"):
    """``"start-end"`` (inclusive, ASCII digits, no sign, space or leading zero) into (start, end).

    The range stays within 1-2147483646, holds at most 65536 uids and
    covers none of root, nobody (65534), 65535 or systemd's DynamicUser=
    range (61184-65519).
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise invalid(field, value, "must be a string such as %s" % DEFAULT_PROXY_UID_RANGE)
    match = _RANGE_RE.fullmatch(value)
    if not match:
        raise invalid(field, value, "must look like %s (first-last uid)" % DEFAULT_PROXY_UID_RANGE)
    start, end = int(match.group(1)), int(match.group(2))
    if end > MAX_POOL_UID:
        raise invalid(field, value, "uids must be at most %d" % MAX_POOL_UID)
    if start > end:
        raise invalid(field, value, "start is greater than end")
    if end - start + 1 > MAX_POOL_SIZE:
        raise invalid(field, value, "holds %d uids, more than %d" % (end - start + 1, MAX_POOL_SIZE))
    for low, high, what in RESERVED_RANGES:
        if start <= high and low <= end:
            raise invalid(field, value, "overlaps %d-%d (%s)" % (low, high, what))
    return start, end


def is_pool_uid(value):
    """True for a value a record's ``proxy_uid`` may hold: None (no pool uid yet) or a uid a pool could give."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_POOL_UID:
        return False
    return not any(low <= value <= high for low, high, dummy in RESERVED_RANGES)


def uids_in_use():
    """Every uid (real, effective, saved, file system) of a live process of this host."""
    used = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/status" % name, "rb") as handle:
                for line in handle.read(4096).splitlines():
                    if line.startswith(b"Uid:"):
                        used.update(int(field) for field in line.split()[1:5])
                        break
        except (OSError, ValueError):
            continue
    return used


def pool_account_name(uid):
    """The user and group name of the pool's own account for ``uid`` (made under the systemd supervisor)."""
    return "%s%d" % (POOL_ACCOUNT_PREFIX, uid)


def _lookup(lookup, key):
    try:
        return lookup(key)
    except KeyError:
        return None


def is_pool_account(uid, user=True, group=True):
    """True when what the user database has at ``uid`` is the pool's own account and nothing else: the user (if
    any, or required with ``user``) is ``pool_account_name(uid)`` with primary group ``uid``, the group (likewise
    with ``group``) has that name and no member. Anything else there (an operator's account) keeps the uid out."""
    name = pool_account_name(uid)
    entry, group_entry = _lookup(pwd.getpwuid, uid), _lookup(grp.getgrgid, uid)
    if (entry is None and user) or (group_entry is None and group):
        return False
    if entry is not None and (entry.pw_name != name or entry.pw_gid != uid):
        return False
    if group_entry is not None and (group_entry.gr_name != name or group_entry.gr_mem):
        return False
    # A member is also an account whose primary group it is (the group file does not list those).
    return not any(other.pw_gid == uid and other.pw_uid != uid for other in pwd.getpwall())


def _taken_by_host(uid):
    """True when an account or a group of this host has the number ``uid``, the pool's own account aside."""
    if _lookup(pwd.getpwuid, uid) is None and _lookup(grp.getgrgid, uid) is None:
        return False
    return not is_pool_account(uid, user=False, group=False)


class UidPool:
    """The uids of ``uid_range`` and the host-wide registry that says who holds each.

    An owner is a state dir and a session key; ``claim`` and ``release`` are
    made under the registry's lock, so gateways of several state dirs (and
    parallel runs of one) never hand one uid out twice.
    """

    def __init__(self, uid_range=DEFAULT_PROXY_UID_RANGE, registry=DEFAULT_REGISTRY):
        self.start, self.end = parse_uid_range(uid_range) if isinstance(uid_range, str) else uid_range
        self.registry = registry

    @contextlib.contextmanager
    def _locked(self):
        directory = os.path.dirname(self.registry)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.registry + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self):
        """{uid: {"state_dir": ..., "key": ...}} from the registry; entries that do not parse are dropped."""
        try:
            with open(self.registry, "rb") as handle:
                data = json.loads(handle.read(16 * 1024 * 1024).decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise S2DSError("the proxy uid registry %s cannot be read (%s); remove it to rebuild it from the "
                            "running proxies" % (self.registry, exc), field="proxy_uid_range") from None
        entries = {}
        for uid, holder in (data.get("uids") or {}).items() if isinstance(data, dict) else ():
            if (uid.isdigit() and isinstance(holder, dict) and isinstance(holder.get("state_dir"), str)
                    and os.path.isabs(holder["state_dir"]) and isinstance(holder.get("key"), str)
                    and _KEY_RE.fullmatch(holder["key"])):
                since = holder.get("since")
                entries[int(uid)] = {"state_dir": holder["state_dir"], "key": holder["key"],
                                     "since": since if isinstance(since, int) and not isinstance(since, bool) else 0}
        return entries

    def _write(self, entries):
        text = json.dumps({"version": 1, "uids": {str(uid): entries[uid] for uid in sorted(entries)}},
                          indent=1, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.registry), prefix=".proxy-uids-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.registry)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _live(holder):
        """An entry is live while its session record exists in its state dir, or for CLAIM_GRACE seconds after
        it was claimed (the record is saved once the proxy runs)."""
        return (time.time() - holder.get("since", 0) < CLAIM_GRACE
                or os.path.exists(os.path.join(holder["state_dir"], "sessions", holder["key"] + ".json")))

    @staticmethod
    def _same(holder, me):
        return holder is not None and (holder["state_dir"], holder["key"]) == (me["state_dir"], me["key"])

    def claim(self, state_dir, key, keep=None, pending=()):
        """A uid for session ``key`` of ``state_dir``: ``keep`` (the record's) where it is still this session's
        or free, else the lowest free one. ``pending`` are uids this caller gave out and not yet recorded
        (a batch): they count as held even before their records are written."""
        if not _KEY_RE.fullmatch(key or ""):
            raise invalid("uid", key, "is not a session key")
        me = {"state_dir": os.path.abspath(state_dir), "key": key, "since": int(time.time())}
        with self._locked():
            entries = self._read()
            mine = [uid for uid, holder in entries.items() if self._same(holder, me)]
            wanted = keep if keep is not None and self.start <= keep <= self.end else (mine[0] if mine else None)
            if wanted is not None and wanted not in pending and (
                    self._same(entries.get(wanted), me)
                    # the registry lost it (or never had it): still the record's while nobody else took it
                    or (wanted not in entries and not _taken_by_host(wanted))):
                chosen = wanted
            else:
                chosen = self._free(entries, set(pending))
            for uid in mine:
                del entries[uid]
            entries[chosen] = me
            self._write(entries)
        return chosen

    def _free(self, entries, pending):
        busy = uids_in_use()
        stale = [uid for uid, holder in entries.items() if not self._live(holder)]
        for uid in stale:
            del entries[uid]
        for uid in range(self.start, self.end + 1):
            if uid in entries or uid in pending or uid in busy or _taken_by_host(uid):
                continue
            return uid
        raise UidsExhausted("proxy_uid_range %d-%d: every uid is held by a session, a process or an account of "
                            "this host" % (self.start, self.end), field="proxy_uid_range",
                            value="%d-%d" % (self.start, self.end))

    def release(self, state_dir, key):
        """Give back whatever uid session ``key`` of ``state_dir`` holds."""
        me = {"state_dir": os.path.abspath(state_dir), "key": key}
        with self._locked():
            entries = self._read()
            kept = {uid: holder for uid, holder in entries.items() if not self._same(holder, me)}
            if len(kept) != len(entries):
                self._write(kept)

    def holders(self):
        """{uid: (state_dir, key)} as the registry has them now."""
        with self._locked():
            return {uid: (holder["state_dir"], holder["key"]) for uid, holder in self._read().items()}
