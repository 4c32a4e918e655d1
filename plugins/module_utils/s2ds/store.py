# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Session state on disk.

Layout under ``state_dir`` (0700, files 0600)::

    lock                    flock(2) taken for every change
    sessions/<key>.json     one record per session, replaced atomically
    run/<key>/              the session's rendered config, key file, pid and log

where <key> is ``session_key(uid)``: the uid itself for a UUID, a hash otherwise.

Records survive restarts; the lock makes parallel runs on one gateway see
each other's reservations. A record that cannot be read (truncated, edited
by hand) is *broken*: loading it is an error that names the file, and
listing the sessions reports it apart without stopping at it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile

from .backends import BACKENDS
from .errors import S2DSError
from .session import (ENCRYPTIONS, MAX_DURATION, MAX_RATE, MIN_RATE, ROLES, RUNTIMES, SessionRecord, parse_choice,
                      parse_hostname, parse_ip, parse_target, parse_uid, session_key)
from .uidpool import is_pool_uid


def sha256_text(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_file_atomic(path, content, mode=0o600):
    """Write ``content`` to ``path`` so readers see the old or the new file, never a mix."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_checked_files(directory, files, config_name, check):
    """Write ``files`` ({name: (content, mode)}) into ``directory``, the config last.

    The config is first written beside the live one as ``.<name>.new`` and
    given to ``check(candidate_name)`` (the proxy's own checker); only a
    config that passes replaces the live one.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name, (content, mode) in files.items():
        if name != config_name:
            write_file_atomic(os.path.join(directory, name), content, mode)
    if config_name in files:
        content, mode = files[config_name]
        candidate = "." + config_name + ".new"
        write_file_atomic(os.path.join(directory, candidate), content, mode)
        try:
            check(candidate)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, candidate))
        write_file_atomic(os.path.join(directory, config_name), content, mode)


def read_text(path):
    """A file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


_SHA256_HEX = frozenset("0123456789abcdef")


#: Who made a session (``token-sha256:<hex>``, ``hook:<id>``, ``globus:<uuid>``, ``peer:<address>``):
#: printable ASCII without spaces, bounded.
_OWNER_RE = re.compile(r"[a-z0-9-]{1,16}:[!-~]{1,200}")


def check_record(record):
    """Raise S2DSError or ValueError unless every field of ``record`` is one a gateway could have written.

    A record is read back from disk, where anything may have been put; each
    value goes through session.py's own parse functions (the one grammar),
    and must come out unchanged, before any of it reaches a config, a unit,
    a command line or a kill. The other sessions are read on regardless.
    """
    if parse_uid(record.uid) != record.uid:
        raise ValueError("uid %r is not in its canonical form" % record.uid)
    parse_choice("role", record.role, ROLES)
    parse_choice("backend", record.backend, tuple(BACKENDS))
    parse_choice("runtime", record.runtime, RUNTIMES)
    if record.runtime not in BACKENDS[record.backend].runtimes:
        raise ValueError("runtime %r cannot run backend %r" % (record.runtime, record.backend))
    parse_choice("encryption", record.encryption, ENCRYPTIONS)
    if parse_ip("listener_ip", record.listener_ip) != record.listener_ip:
        raise ValueError("listener_ip %r is not in its canonical form" % record.listener_ip)
    if not isinstance(record.ports, list) or not all(
            _is_port(port) for port in record.ports) or len(set(record.ports)) != len(record.ports):
        raise ValueError("ports %r are not distinct whole numbers between 1 and 65535" % (record.ports,))
    if not isinstance(record.targets, list) or not all(isinstance(target, str) for target in record.targets):
        raise ValueError("targets %r are not a list of host:port texts" % (record.targets,))
    for target in record.targets:
        if str(parse_target(target)) != target:
            raise ValueError("target %r is not in its canonical form" % target)
    names = record.target_names
    if not isinstance(names, list) or (names and len(names) != len(record.targets)) or not all(
            name is None or (isinstance(name, str) and parse_hostname("target_names", name) == name) for name in names):
        raise ValueError("target_names %r are not host names, one per target" % (names,))
    digest = record.config_sha256
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _SHA256_HEX):
        raise ValueError("config_sha256 %r is not a SHA-256 hex digest" % (digest,))
    if not isinstance(record.runtime_state, dict):
        raise ValueError("runtime_state %r is not a mapping" % (record.runtime_state,))
    if record.owner is not None and not (isinstance(record.owner, str) and _OWNER_RE.fullmatch(record.owner)):
        raise ValueError("owner %r is not an identity a control server records" % (record.owner,))
    if not is_pool_uid(record.proxy_uid):
        raise ValueError("proxy_uid %r is not a uid a proxy uid pool hands out" % (record.proxy_uid,))
    for field in ("lifetime", "idle_timeout"):
        value = getattr(record, field)
        if value is not None and not (_is_whole(value) and 1 <= value <= MAX_DURATION):
            raise ValueError("%s %r is not a duration in seconds (1 to %d)" % (field, value, MAX_DURATION))
    for field in ("expires_at", "max_expires_at", "idle_since"):
        value = getattr(record, field)
        if value is not None and not (_is_whole(value) and 0 <= value < 2 ** 40):
            raise ValueError("%s %r is not a time in whole seconds since the epoch" % (field, value))
    if record.idle_bytes is not None and not (_is_whole(record.idle_bytes) and 0 <= record.idle_bytes < 2 ** 64):
        raise ValueError("idle_bytes %r is not a byte count" % (record.idle_bytes,))
    if record.rate is not None and not (_is_whole(record.rate) and MIN_RATE <= record.rate <= MAX_RATE):
        raise ValueError("rate %r is not a rate in bits per second (%d to %d)" % (record.rate, MIN_RATE, MAX_RATE))


def _is_whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_port(value):
    """A whole number 1-65535 as JSON gives it (``true`` is no port, though Python calls bool an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


class BrokenRecord:
    """A record file that cannot be read as a session: its uid, path and why."""

    def __init__(self, uid, path, reason):
        self.uid = uid
        self.path = path
        self.reason = reason

    def error(self):
        return S2DSError("session record %s is broken (%s); release the session with state=absent "
                         "or restore the file" % (self.path, self.reason), field="uid", value=self.uid)


class SessionStore:
    """The records and run directories of one gateway's sessions.

    Inside ``cached()`` (held with the lock, by calls that handle many
    sessions at once) the records are read from disk once and kept in memory;
    ``save`` and ``delete`` keep that copy current.
    """

    def __init__(self, state_dir):
        self.state_dir = os.path.abspath(state_dir)
        self.sessions_dir = os.path.join(self.state_dir, "sessions")
        self.run_root = os.path.join(self.state_dir, "run")
        self._cache = None

    def ensure_dirs(self):
        for path in (self.state_dir, self.sessions_dir, self.run_root):
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise S2DSError("state_dir %r cannot be created: %s" % (self.state_dir, exc.strerror),
                                field="state_dir", value=self.state_dir) from None

    @contextlib.contextmanager
    def locked(self, create=True):
        """Hold the gateway's lock: one change at a time, across processes.

        With ``create=False`` (check mode) a state dir that does not exist yet
        is not created: there is nothing to read and nobody to race with.
        """
        if not create and not os.path.isdir(self.state_dir):
            yield
            return
        self.ensure_dirs()
        with open(os.path.join(self.state_dir, "lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def record_path(self, uid):
        return os.path.join(self.sessions_dir, session_key(uid) + ".json")

    def run_dir(self, uid):
        return os.path.join(self.run_root, session_key(uid))

    def _read(self, uid, key=None):
        """The record of ``uid``, None when there is none, or a BrokenRecord.

        From a directory scan only the file's ``key`` is known: the record's
        own uid must map to it; a broken one is listed under the key.
        """
        path = os.path.join(self.sessions_dir, key + ".json") if key else self.record_path(uid)
        uid = uid or key
        try:
            text = read_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            return BrokenRecord(uid, path, str(exc))
        if text is None:
            return None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            record = SessionRecord.from_dict(data)
            check_record(record)
            if self.record_path(record.uid) != path or (not key and record.uid != uid):
                raise ValueError("uid %r does not match the file name" % record.uid)
            return record
        except (ValueError, TypeError, AttributeError, S2DSError) as exc:
            return BrokenRecord(uid, path, str(exc))

    def _scan(self):
        """{uid: record or BrokenRecord} for every record file."""
        if not os.path.isdir(self.sessions_dir):
            return {}
        entries = {}
        for name in sorted(os.listdir(self.sessions_dir)):
            if name.endswith(".json") and not name.startswith("."):
                entry = self._read(None, key=name[:-len(".json")])
                if entry is not None:
                    entries[entry.uid] = entry
        return entries

    @contextlib.contextmanager
    def cached(self):
        """Read every record once and serve later reads from memory until the block ends."""
        self._cache = self._scan()
        try:
            yield
        finally:
            self._cache = None

    def load_entry(self, uid):
        """Like ``load``, but a broken record is returned (a BrokenRecord) instead of raised."""
        if self._cache is not None:
            return self._cache.get(uid)
        return self._read(uid)

    def load(self, uid):
        entry = self.load_entry(uid)
        if isinstance(entry, BrokenRecord):
            raise entry.error()
        return entry

    def entries(self):
        """Every record and BrokenRecord, by uid."""
        entries = self._cache if self._cache is not None else self._scan()
        return [entries[uid] for uid in sorted(entries)]

    def all(self):
        """Every readable record (broken ones are left out: see ``entries``)."""
        return [entry for entry in self.entries() if not isinstance(entry, BrokenRecord)]

    def save(self, record):
        self.ensure_dirs()
        write_file_atomic(self.record_path(record.uid), json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n")
        if self._cache is not None:
            self._cache[record.uid] = SessionRecord.from_dict(record.to_dict())  # to_dict copies deeply

    def delete(self, uid):
        """Remove the record and the run directory of ``uid``."""
        shutil.rmtree(self.run_dir(uid), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.record_path(uid))
        if self._cache is not None:
            self._cache.pop(uid, None)

    def read_run_file(self, uid, name):
        return read_text(os.path.join(self.run_dir(uid), name))

    def remove_run_file(self, uid, name):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.run_dir(uid), name))
