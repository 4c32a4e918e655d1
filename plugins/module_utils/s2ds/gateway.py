# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The S2DS of one gateway: start, update and release sessions.

Idempotence comes from comparison: ``present`` works out the wanted session
(ports, rendered config, key file), compares it with what is on disk and
what runs, and acts only on differences. In check mode it computes the same
actions and performs none.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from . import counting, shaping
from .backends import PSK_COMPAT, get_backend, render_config
from .errors import S2DSError, invalid
from .names import session_key
from .policy import TargetPolicy
from .ports import reserve_ports
from .session import SessionRecord, SessionSpec, format_rate
from .store import BrokenRecord, SessionStore, sha256_text, write_checked_files, write_file_atomic
from .runtimes.base import listening_ports, wait_for_listeners


@dataclasses.dataclass
class Outcome:
    """What a call did (or, in check mode, would do)."""

    changed: bool
    actions: list
    session: dict
    diff: dict = dataclasses.field(default_factory=dict)
    warnings: list = dataclasses.field(default_factory=list)
    #: The S2DSError that stopped this session, in a batch (``apply``); None when it went through.
    error: Exception = None


@dataclasses.dataclass(frozen=True)
class Release:
    """A request to release session ``uid`` (in a batch given to ``Gateway.apply``).

    ``runtime`` is where to look for the proxy of a session whose record is
    broken (a readable record names its own runtime).
    """

    uid: str
    runtime: str = "process"


def _class_moved(existing, wanted):
    """True when a rated session's first port, which names its class (shaping.minor_of), changes: its old class
    goes before the new one is made."""
    return bool(existing is not None and existing.rate and existing.ports[:1] != wanted.ports[:1])


class Gateway:
    """All sessions kept under one ``state_dir``.

    ``runtimes`` maps a runtime name to a factory ``f(spec) -> Runtime``; the
    caller decides which runtimes exist (and with which options).
    ``counter`` keeps the kernel counters of the sessions' listeners
    (:mod:`.counting`): by default the process's own, which is inactive
    where it cannot work (no nftables binding, not root); None turns
    counting off. ``policy`` (a :class:`.policy.TargetPolicy`) says where sessions may
    forward: by default the strict default (no loopback, no own address, ...), never open.
    ``clock`` gives the time in seconds since the epoch (``time.time``; the tests give a fake one): the
    sessions' deadlines are kept on disk in it.
    """

    def __init__(self, state_dir, runtimes, counter="default", policy=None, clock=None, shaper=None):
        self.store = SessionStore(state_dir)
        #: Enforces the sessions' rates in the kernel (shaping.py); made on first use when not given.
        self._shaper = shaper
        self.runtimes = runtimes
        self.counter = counting.shared_counter(state_dir) if counter == "default" else counter
        self.policy = policy if policy is not None else TargetPolicy()
        self.clock = clock or time.time

    def now(self):
        return int(self.clock())

    @property
    def shaper(self):
        if self._shaper is None:
            self._shaper = shaping.Shaper()
        return self._shaper

    def runtime_for(self, spec_or_record):
        name = spec_or_record.runtime
        if name not in self.runtimes:
            raise invalid("runtime", name, "is not available here (have: %s)" % ", ".join(sorted(self.runtimes)))
        return self.runtimes[name](spec_or_record)

    # -- many at once ------------------------------------------------------------
    def apply(self, requests, check_mode=False):
        """Apply ``requests`` (SessionSpec for present, Release for absent) in order, under one lock.

        The records are read once for the whole batch. Each request gets its
        own Outcome; one that fails carries its S2DSError in ``error`` (and
        leaves nothing half done, as alone), and the others still go through.
        """
        outcomes = []
        with self.store.locked(create=not check_mode), self.store.cached():
            for request in requests:
                try:
                    if isinstance(request, SessionSpec):
                        outcomes.append(self._present(request, check_mode))
                    else:
                        outcomes.append(self._absent(request.uid, check_mode, request.runtime))
                except S2DSError as exc:
                    outcomes.append(Outcome(changed=False, actions=[], session={"uid": request.uid}, error=exc))
                except OSError as exc:
                    # Say which session, and keep the results of the others.
                    error = S2DSError("session %s: %s" % (request.uid, exc), field="uid", value=request.uid)
                    outcomes.append(Outcome(changed=False, actions=[], session={"uid": request.uid}, error=error))
        return outcomes

    # -- present -------------------------------------------------------------
    def present(self, spec, check_mode=False, owner=None):
        """Make ``spec`` so. ``owner`` is recorded for a new session (an existing one keeps its own)."""
        with self.store.locked(create=not check_mode):
            return self._present(spec, check_mode, owner)

    def _present(self, spec, check_mode, owner=None):
        backend = get_backend(spec.backend)
        if spec.targets:
            # Before anything is reserved or written: a refused target leaves nothing behind. Names are
            # resolved here, once, and the session forwards to the address that was checked.
            spec = dataclasses.replace(spec, targets=self.policy.check(spec.targets, spec.role))
        existing = self.store.load(spec.uid)
        if existing is not None:
            for field in ("role", "backend", "runtime"):
                if getattr(existing, field) != getattr(spec, field):
                    raise invalid(field, getattr(spec, field), "session %s already exists with %s %s; release it first" % (
                        spec.uid, field, getattr(existing, field)))
        runtime = self.runtime_for(spec)
        # Ports are never shared between sessions, whatever address they listen on.
        taken = {p for r in self.store.all() if r.uid != spec.uid for p in r.ports}
        keep = existing.ports if existing is not None and existing.listener_ip == spec.listener_ip else ()
        ports = reserve_ports(spec.num_conn, spec.port_range, spec.listener_ip, taken=taken, keep=keep,
                              protocols=backend.protocols_for(spec.encryption))

        # Like its ports, a session's proxy uid (where the runtime has a pool) is its own on this host.
        pool = getattr(runtime, "uid_pool", None)
        proxy_uid = existing.proxy_uid if existing is not None else None
        if pool is not None and not check_mode:
            proxy_uid = pool.claim(self.store.state_dir, session_key(spec.uid), keep=proxy_uid)
        try:
            return self._present_with(spec, check_mode, owner, backend, existing, runtime, ports, proxy_uid, pool)
        except Exception:
            if existing is None and pool is not None and not check_mode:
                pool.release(self.store.state_dir, session_key(spec.uid))
            raise

    def _present_with(self, spec, check_mode, owner, backend, existing, runtime, ports, proxy_uid, pool):
        wanted = SessionRecord(uid=spec.uid, role=spec.role, backend=spec.backend, runtime=spec.runtime,
                               listener_ip=spec.listener_ip, ports=ports, targets=[str(t) for t in spec.targets],
                               runtime_state=dict(existing.runtime_state) if existing else {},
                               encryption=spec.encryption, owner=existing.owner if existing else owner,
                               proxy_uid=proxy_uid,
                               target_names=[t.name for t in spec.targets] if any(t.name for t in spec.targets) else [],
                               lifetime=spec.lifetime, idle_timeout=spec.idle_timeout, rate=spec.rate)
        if existing is not None:
            for field in SessionRecord.BOOKKEEPING:
                setattr(wanted, field, getattr(existing, field))
        # A proxy moving to another uid (a record from before the pool gets one) is restarted, never reloaded.
        if check_mode:
            uid_changes = existing is not None and pool is not None and existing.proxy_uid is None
        else:
            uid_changes = existing is not None and existing.proxy_uid != proxy_uid
        wanted.runtime_state.update(runtime.remembered(wanted))
        files = {}
        if spec.targets:
            files[backend.config_name] = render_config(backend, wanted, runtime.paths(self.store, wanted),
                                                       spec.psk_cipher, spec.template_text, tls=spec.tls,
                                                       psk_identity=spec.psk_identity)
            files.update(backend.key_files(spec))
        wanted.config_sha256 = sha256_text("".join(files[k] for k in sorted(files))) if files else None

        actions = []
        if existing is None:
            actions.append("reserve")
        elif existing.to_dict() != dict(wanted.to_dict(), runtime_state=existing.runtime_state) or uid_changes:
            actions.append("update")
        old_config = self.store.read_run_file(spec.uid, backend.config_name) or ""
        changed_files = [name for name, text in files.items() if self.store.read_run_file(spec.uid, name) != text]
        # Key files no longer wanted (encryption turned off) are removed with the write.
        changed_files += [name for name in backend.key_file_names()
                          if name not in files and self.store.read_run_file(spec.uid, name) is not None]
        if changed_files:
            actions.append("write_config")
        running = existing is not None and runtime.is_running(backend, self.store, existing)
        if not files:
            if running or old_config:
                actions.append("stop")
        elif not running:
            actions.append("start")
        elif uid_changes:
            actions.append("restart")
        elif changed_files or (existing.config_sha256 != wanted.config_sha256):
            actions.append("reload" if backend.reloadable else "restart")

        if files and self._counts(runtime) and not self.counter.counts(wanted):
            actions.append("count")
        if wanted.rate:
            self._check_shapeable(runtime, wanted)
        # Shaped while it has targets (a stream to shape), as it is counted.
        was_shaped = existing is not None and existing.rate and self.store.read_run_file(
            wanted.uid, shaping.RESTORE_FILE) is not None
        if wanted.rate and files:
            if not self.shaper.shapes(wanted) or (was_shaped and _class_moved(existing, wanted)):
                actions.append("shape")
        elif was_shaped:
            actions.append("unshape")

        diff = {}
        new_config = files.get(backend.config_name, "")
        if old_config != new_config:
            diff = {"before": old_config, "after": new_config,
                    "before_header": "%s (%s)" % (backend.config_name, spec.uid),
                    "after_header": "%s (%s)" % (backend.config_name, spec.uid)}
        warnings = []
        if spec.psk_compat is not None and spec.targets:
            warnings.append(PSK_COMPAT[spec.psk_compat].warning % spec.uid)
        elif backend.uses_psk and spec.psk_is_derived and spec.targets:
            warnings.append("psk for session %s is derived from its uid and is only as secret as the uid; "
                            "give both gateways a psk of their own" % spec.uid)
        if files and actions:
            # Told on the run that puts the session in place or changes it, not on every run.
            warnings.extend(runtime.warnings_for(wanted))
        if actions:
            # A run that makes or changes the session renews it (a run that changes nothing does not).
            if existing is None and spec.max_lifetime:
                wanted.max_expires_at = self.now() + spec.max_lifetime
            renew_record(wanted, self.now())
        if not check_mode and actions:
            self._apply(runtime, backend, existing, wanted, files, actions)
        return Outcome(changed=bool(actions), actions=actions, session=self.describe(wanted), diff=diff,
                       warnings=warnings)

    def _apply(self, runtime, backend, existing, wanted, files, actions):
        """Carry out ``actions``; a new session that fails leaves nothing behind."""
        try:
            if "write_config" in actions:
                # A new session has no live config to protect; where starting the proxy
                # checks its config anyway (and a failure discards the session), the
                # separate check is skipped: a batch of 100 new sessions starts 100 fewer processes.
                skip_check = existing is None and "start" in actions and runtime.start_checks_config
                write_checked_files(self.store.run_dir(wanted.uid),
                                    {name: (text, backend.file_mode(name)) for name, text in files.items()},
                                    backend.config_name,
                                    (lambda candidate: None) if skip_check else
                                    (lambda candidate: runtime.check_config(backend, self.store, wanted, candidate)))
                for name in backend.key_file_names():
                    if name not in files:
                        self.store.remove_run_file(wanted.uid, name)
            if "stop" in actions:
                runtime.stop(backend, self.store, existing)
                for name in [backend.config_name] + backend.key_file_names():
                    self.store.remove_run_file(wanted.uid, name)
            if "start" in actions:
                runtime.start(backend, self.store, wanted)
            elif "reload" in actions:
                runtime.reload(backend, self.store, wanted)
            elif "restart" in actions:
                runtime.restart(backend, self.store, wanted)
            if files and runtime.local_network and set(actions) & {"start", "reload", "restart"}:
                wait_for_listeners(runtime, backend, self.store, wanted)
            if "unshape" in actions or ("shape" in actions and _class_moved(existing, wanted)):
                self.shaper.remove(existing)
                self.store.remove_run_file(wanted.uid, shaping.RESTORE_FILE)
            if "shape" in actions:
                devices = self.shaper.install(wanted)
                # Kept for the boot-time restore, as counting.json is: root's alone.
                write_file_atomic(os.path.join(self.store.run_dir(wanted.uid), shaping.RESTORE_FILE),
                                  json.dumps(shaping.restore_document(wanted, devices)) + "\n", mode=0o600)
            if "count" in actions:
                self.counter.install(wanted)
                # Kept for the boot-time restore (the gateway role's scistream-nft-restore, root): root's alone.
                write_file_atomic(os.path.join(self.store.run_dir(wanted.uid), counting.RESTORE_FILE),
                                  json.dumps(self._restore_document(wanted)) + "\n", mode=0o600)
            self.store.save(wanted)
        except Exception:
            if existing is None:
                self._discard(runtime, backend, wanted)
            raise

    def _discard(self, runtime, backend, record):
        try:
            runtime.stop(backend, self.store, record)
        finally:
            try:
                if record.rate:
                    self.shaper.remove(record)
            finally:
                self._stop_counting(record.uid, record.role, record.ports)
                self.store.delete(record.uid)
            self._release_uid(runtime, record.uid)

    def _release_uid(self, runtime, uid):
        """Give the session's proxy uid back to the runtime's pool (after its proxy is stopped)."""
        pool = getattr(runtime, "uid_pool", None)
        if pool is not None:
            pool.release(self.store.state_dir, session_key(uid))

    def _restore_document(self, record):
        """The session's part of the counting table for the boot-time restore (with this gateway's chain names)."""
        return counting.restore_document(record, getattr(self.counter, "instance", None))

    def _check_shapeable(self, runtime, record):
        """Refuse a rate that cannot be enforced here (a session is never run unshaped when it asked for one)."""
        egress_here = runtime.local_network if runtime.egress_here is None else runtime.egress_here
        if not egress_here:
            raise invalid("rate", format_rate(record.rate), "runtime %s sends from another host's network stack; "
                          "rates are enforced on this host's egress only" % record.runtime)
        if not self.shaper.available:
            raise invalid("rate", format_rate(record.rate), "cannot be enforced here: %s" % self.shaper.reason)

    def _counts(self, runtime):
        """True where this gateway keeps kernel counters for the runtime's sessions (listeners on this host)."""
        return self.counter is not None and self.counter.available and runtime.local_network

    def _stop_counting(self, uid, role=None, ports=()):
        if self.counter is not None and self.counter.available:
            if ports:
                self.counter.remove(uid, role, ports=ports)
            else:
                self.counter.remove(uid, role)

    # -- absent ----------------------------------------------------------------
    def absent(self, uid, check_mode=False, runtime="process"):
        """Release ``uid``. ``runtime`` is where to look for the proxy of a broken record."""
        with self.store.locked(create=not check_mode):
            return self._absent(uid, check_mode, runtime)

    def _absent(self, uid, check_mode, runtime="process"):
        record = self.store.load_entry(uid)
        if record is None:
            return Outcome(changed=False, actions=[], session={"uid": uid})
        if isinstance(record, BrokenRecord):
            return self._release_broken(record, check_mode, runtime)
        backend = get_backend(record.backend)
        old_config = self.store.read_run_file(uid, backend.config_name) or ""
        diff = {"before": old_config, "after": ""} if old_config else {}
        if not check_mode:
            self._discard(self.runtime_for(record), backend, record)
        return Outcome(changed=True, actions=["stop", "release"], session=self.describe(record), diff=diff)

    def _release_broken(self, broken, check_mode, runtime_name):
        """Free what a session with an unreadable record held: its proxy (found by uid), run dir and record."""
        warnings = ["session record %s was broken (%s): released what could be found by its uid" % (
            broken.path, broken.reason)]
        if not check_mode:
            runtime = self.runtime_for(Release(broken.uid, runtime_name))
            removed = runtime.release_orphan(self.store, broken.uid)
            if removed:
                warnings.append("stopped %s" % ", ".join(removed))
            self._stop_counting(broken.uid)
            self.store.delete(broken.uid)
            self._release_uid(runtime, broken.uid)
        return Outcome(changed=True, actions=["stop", "release"], warnings=warnings,
                       session={"uid": broken.uid, "broken": True, "record_path": broken.path})

    def describe(self, record):
        """The public view of a session: the record less runtime internals, plus its config path and when it
        expires (``expires_in`` seconds from now, ``expires_reason`` lifetime or idle; None for never)."""
        info = record.public()
        config_name = get_backend(record.backend).config_name
        info["config_path"] = os.path.join(self.store.run_dir(record.uid), config_name) if record.targets else None
        when, reason = record.deadline()
        info["expires_in"] = None if when is None else max(0, when - self.now())
        info["expires_reason"] = reason
        return info

    # -- lifetimes -----------------------------------------------------------------
    def renew(self, uid, owner=None):
        """Renew session ``uid`` (its owner's req, hello or update): its lifetime and idle timeout start again.

        With ``owner`` given, only a session of that owner is renewed. Returns the renewed record, or None
        (no such session, another owner's, or a broken record)."""
        with self.store.locked(create=False):
            record = self.store.load_entry(uid)
            if not isinstance(record, SessionRecord) or (owner is not None and record.owner != owner):
                return None
            renew_record(record, self.now())
            self.store.save(record)
            return record

    def expire(self, now=None, keep=()):
        """Release every session past its lifetime, or idle past its idle timeout, exactly as ``absent`` would.

        Idle is measured with the kernel's counters of the session's listeners (the counting table, or the
        kernel runtime's own): each call notes the bytes counted, and a count that moved since the last
        call makes the session busy again; where a session's bytes cannot be counted (no counters here,
        a remote Docker engine) it is never idle, and only its lifetime ends it. The bookkeeping is written
        to the records, so a restart keeps every deadline. Nothing here opens a path the proxy can write but
        what ``absent`` opens to stop it.

        Returns one dict per session released: ``uid``, ``owner``, ``reason`` (lifetime or idle),
        ``deadline`` and the ``ports`` freed, and ``error`` for one whose release failed (it is tried again
        at the next call). Sessions in ``keep`` (uids a caller is setting up right now) are left alone."""
        now = self.now() if now is None else int(now)
        if not os.path.isdir(self.store.sessions_dir):
            return []
        released = []
        with self.store.locked(create=False), self.store.cached():
            for record in self.store.all():
                if record.uid in keep or (record.lifetime is None and record.idle_timeout is None
                                          and record.expires_at is None):
                    continue
                try:
                    reason, when = self._expiry(record, now)
                except S2DSError as exc:
                    released.append({"uid": record.uid, "owner": record.owner, "reason": None, "error": str(exc)})
                    continue
                if reason is None:
                    continue
                entry = {"uid": record.uid, "owner": record.owner, "reason": reason, "deadline": when,
                         "ports": list(record.ports)}
                try:
                    self._discard(self.runtime_for(record), get_backend(record.backend), record)
                except (S2DSError, OSError) as exc:
                    entry["error"] = "session %s: %s" % (record.uid, exc)
                released.append(entry)
        return released

    def _expiry(self, record, now):
        """``(reason, deadline)`` when ``record`` is due at ``now``, else ``(None, None)``, after noting its bytes
        (the record is saved when its bookkeeping moved)."""
        idle_known = False
        if record.idle_timeout:
            seen = self._bytes_seen(record)
            idle_known = seen is not None
            if seen is not None and (record.idle_bytes is None or seen != record.idle_bytes or record.idle_since is None):
                # Busy (or counted for the first time): the idle timeout runs from now.
                record.idle_bytes, record.idle_since = seen, now
                self.store.save(record)
            elif seen is None and record.idle_since is None:
                record.idle_since = now
                self.store.save(record)
        when, reason = record.deadline() if idle_known else (record.expires_at, "lifetime")
        if when is not None and now >= when:
            return reason, when
        return None, None

    def _bytes_seen(self, record):
        """All bytes the kernel counted through ``record``'s listeners so far, or None where it counts none here.

        Read from the kernel alone (nftables), never from a file the proxy can write."""
        try:
            if record.runtime == "kernel":
                runtime = self.runtime_for(record)
                listeners = runtime.traffic(get_backend(record.backend), self.store, record, counter=self.counter)
            elif self.counter is not None and self.counter.available and record.targets:
                listeners = self.counter.read(record)
            else:
                return None
        except counting.CountersUnavailable:
            return None
        if not listeners:
            return None
        # The counting table gives each direction (bytes_in, bytes_out); the kernel runtime its total too.
        return sum(int(entry["bytes_in"]) + int(entry["bytes_out"]) if "bytes_in" in entry else int(entry.get("bytes", 0))
                   for entry in listeners)

    # -- info --------------------------------------------------------------------
    def sessions(self, uid=None):
        """Every session (or the one ``uid``) with ``healthy``: proxy running and every listener listening,
        and its ``traffic`` (or ``traffic_error``, for that session alone, when its counters cannot be read)."""
        with counting.one_listing():
            return self._sessions(uid)

    def _sessions(self, uid):
        records = self.store.entries() if uid is None else [r for r in [self.store.load_entry(uid)] if r]
        listening_now = None  # read once, and only if a local session needs it
        result = []
        for record in records:
            if isinstance(record, BrokenRecord):
                result.append({"uid": record.uid, "broken": True, "record_path": record.path,
                               "error": str(record.error()), "running": False, "healthy": False})
                continue
            backend = get_backend(record.backend)
            info = self.describe(record)
            if not record.targets:
                info["running"] = False
                info["healthy"] = True  # ports reserved, nothing to run yet
            else:
                try:
                    runtime = self.runtime_for(record)
                    info["running"] = runtime.is_running(backend, self.store, record)
                    self._add_traffic(info, runtime, backend, record)
                    listening = True
                    if runtime.local_network:
                        listening_now = listening_ports("tcp") if listening_now is None else listening_now
                        listening = set(record.ports) <= listening_now
                        info["not_listening"] = sorted(set(record.ports) - listening_now)
                except S2DSError as exc:
                    info["running"], listening, info["error"] = False, False, str(exc)
                info["healthy"] = bool(info["running"] and listening)
            result.append(info)
        return result

    def _add_traffic(self, info, runtime, backend, record):
        """``traffic`` of a session (counters outlive a dead proxy); one whose counters cannot be read gets
        ``traffic_error``."""
        try:
            traffic = runtime.traffic(backend, self.store, record, counter=self.counter)
        except counting.CountersUnavailable as exc:
            info["traffic_error"] = str(exc)
            return
        if traffic is not None:
            info["traffic"] = traffic


def renew_record(record, now):
    """Start ``record``'s lifetime and idle timeout again at ``now`` (never past its ``max_expires_at``)."""
    record.expires_at = now + record.lifetime if record.lifetime else None
    if record.max_expires_at is not None:
        record.expires_at = min(record.expires_at or record.max_expires_at, record.max_expires_at)
    record.idle_since = now
