# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The SciStream control service (``scistream.Control``) on top of a Gateway.

Sessions live in the Gateway's state dir, so the ``s2ds`` and ``s2ds_info``
modules see them and a restarted server still knows and releases them. What
is only in memory is the wait of a ``req`` for its ``hello``: one
:class:`PendingSession` per uid holding an :class:`asyncio.Event`.

The service is asyncio code: a ``req`` waiting for its ``hello`` is a
suspended coroutine, not a parked thread, so a client that opens hundreds of
``req`` calls and never says hello costs memory (bounded by the limits
below), not the server's ability to answer others. The Gateway's calls
(files, locks, proxies) block, so they run in a small thread pool.

Every call carries a :class:`Caller` (who, from where); the limits of
:class:`Limits` and the ownership of sessions are checked against it. The
logic raises :class:`ControlError` with a gRPC status name; the gRPC glue
(:class:`ControlServicer`) turns that into an abort, and anything else into
INTERNAL with no server detail (the details go to the server's log).
This module sits above the core: the core never imports it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import logging
import os
import re
import time

from . import protocol

try:
    import grpc
    HAS_GRPC = protocol.HAS_PROTOBUF
    GRPC_IMPORT_ERROR = protocol.PROTOBUF_IMPORT_ERROR
except ImportError as exc:  # the Ansible modules report it through missing_required_lib
    grpc = None
    HAS_GRPC = False
    GRPC_IMPORT_ERROR = exc

from ..s2ds.errors import PortsExhausted, S2DSError, TargetRefused
from ..s2ds.session import (MAX_RATE, MIN_RATE, SessionSpec, format_rate, parse_port_range, parse_target, parse_uid,
                            protocol_rate)
from .text import LOG_LIMIT, untrusted_text

#: What the server does with the rate a client asks for (the protocol's Request.rate, kB/s): ``off`` ignores it
#: (S2UC sends 10000 by default, which must not slow every existing stream), ``honour`` applies it, ``cap``
#: applies the smaller of it and --max_rate (and --max_rate when none is asked).
RATE_POLICIES = ("off", "honour", "cap")

LOG = logging.getLogger("scistream.s2cs")

# Trailing metadata keys: did req create the session, did update change it.
SESSION_KEY = "scistream-session"
CHANGED_KEY = "scistream-changed"

# Where the server keeps its own files inside the state dir (the core's are sessions/ and run/).
SERVER_DIR = "s2cs"
PENDING_DIR = "pending"


class ControlError(Exception):
    """A call the client gets an error status for: ``code`` is a grpc.StatusCode name."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _bad_input(exc, field=None):
    """INVALID_ARGUMENT from an S2DSError (PERMISSION_DENIED from a target policy's refusal); its message names
    the field and value (and the rule)."""
    name = field or exc.field
    message = str(exc)
    if name and not message.startswith(name):
        message = "%s: %s" % (name, message)
    if isinstance(exc, TargetRefused):
        LOG.warning("%s", message)  # the value in it is quoted (escaped, bounded) by the grammar's errors
        return ControlError("PERMISSION_DENIED", message)
    return ControlError("INVALID_ARGUMENT", message)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one client may hold. Each refusal is RESOURCE_EXHAUSTED and names its limit (the server option).

    With authentication off the identity of a call is its peer address, so
    the per-identity limits are per address then; with it on, several
    identities share a host (a facility's login node) and the per-address
    cap is the larger one.
    """

    #: reqs (and early hellos, and token checks) waiting at once from one peer address, all identities together
    pending_per_peer: int = 128
    #: reqs (and early hellos) waiting at once for one identity
    pending_per_identity: int = 16
    #: reqs (and early hellos) waiting at once on the whole server
    max_pending: int = 256
    #: sessions (held and pending) of anonymous callers (authentication off) on the whole server
    max_anonymous_sessions: int = 128
    #: sessions one identity may hold (per peer address when auth is off)
    quota_sessions: int = 32
    #: listener ports one identity may hold; None: half the port range (one identity never takes it all)
    quota_ports: int = None
    #: a req for more than a quarter of the port range waits at most this long for its hello (seconds)
    large_req_hello_timeout: float = 20.0
    #: calls per second per peer address (a token bucket), and the bucket's size
    rate_per_peer: float = 50.0
    rate_burst: int = 100
    #: prod_listeners / remote_listeners may be as long as the session's num_conn, or this when that is smaller
    max_listeners: int = 16
    #: largest request message, bytes (gRPC's max_receive_message_length)
    max_message_bytes: int = 64 * 1024

    def list_cap(self, num_conn):
        return max(int(num_conn), self.max_listeners)

    def ports_quota(self, port_range):
        """The per-identity port quota for ``port_range``: the option, else half the range (at least 1)."""
        if self.quota_ports:
            return self.quota_ports
        start, end = parse_port_range(port_range)
        return max(1, (end - start + 1) // 2)

    @staticmethod
    def large_req(num_conn, port_range):
        """Whether a req of ``num_conn`` ports asks for more than a quarter of ``port_range``."""
        start, end = parse_port_range(port_range)
        return num_conn > max(1, (end - start + 1) // 4)


class RateLimiter:
    """A token bucket per peer address: ``rate`` calls a second, ``burst`` at once.

    ``allow(peer)`` takes one token or answers False. Buckets of quiet peers
    (full again) are dropped once there are many, so a scan from many
    addresses cannot grow the table without bound.
    """

    MAX_BUCKETS = 10000

    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self._buckets = {}   # peer -> [tokens, last]

    def allow(self, peer, cost=1.0):
        now = self.clock()
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[peer] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < cost:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - cost
        return True

    def _prune(self, now):
        full = [peer for peer, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * self.rate >= self.burst]
        for peer in full:
            del self._buckets[peer]
        if len(self._buckets) >= self.MAX_BUCKETS:  # all busy: forget the quietest half
            for peer in sorted(self._buckets, key=lambda p: self._buckets[p][1])[:len(self._buckets) // 2]:
                del self._buckets[peer]


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who makes a call: ``identity`` (token hash, Globus ``sub``, or the peer address when auth is off)."""

    identity: str
    peer: str
    admin: bool = False

    @classmethod
    def anonymous(cls, peer="local"):
        return cls(identity="peer:%s" % peer, peer=peer)


def peer_host(peer):
    """The address part of a gRPC peer (``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``): limits count per host."""
    text = str(peer or "unknown")
    if text.startswith(("ipv4:", "ipv6:")):
        text = text.split(":", 1)[1]
        host, sep, dummy = text.rpartition(":")
        text = host if sep else text
        return text.strip("[]").split("%", 1)[0] or "unknown"
    return text.split(":", 1)[0] or "unknown"


#: The fields of a call's own input: an S2DSError naming one of these is the client's to fix.
CLIENT_FIELDS = ("uid", "role", "num_conn", "prod_listeners", "remote_listeners", "targets")


def setup_failed(what, uid, exc):
    """The answer to a failure of the gateway itself (proxy, runtime, files): in the server's own words.

    What the proxy or its checker printed (its version, a log tail, file
    contents) never goes to a remote client; it goes to the server's log,
    escaped and cut.
    """
    LOG.error("%s %s failed: %s", what, uid, untrusted_text(str(exc), LOG_LIMIT))
    return ControlError("INTERNAL", "%s of session %s failed: the gateway could not set up its proxy; the server's "
                        "log has the details" % (what, uid))


_PATH = re.compile(r"(?<![\w.-])/(?:[\w.@+-]+/)+[\w.@+-]*")


def public_message(message):
    """``message`` without server paths (a remote client has no business knowing the state dir)."""
    return _PATH.sub("<path>", str(message))


class PendingSession:
    """A ``req`` waiting for its ``hello`` (events of the server's loop)."""

    def __init__(self, role, num_conn, caller):
        self.params = (role, num_conn)
        self.caller = caller
        self.reserved = asyncio.Event()   # ports reserved (or the reservation failed)
        self.hello = asyncio.Event()      # hello arrived, was refused, or the session was released
        self.done = asyncio.Event()       # the req has its answer (or error)
        self.listeners = []
        self.prod_listeners = []
        self.released = False
        self.hello_received = False
        self.hello_error = None
        self.error = None
        self.rate = None  # bits per second granted (counts against --max_rate_per_identity while pending)


class PendingMarks:
    """One file per reservation whose hello has not come yet (``<state>/s2cs/pending``).

    A server killed while a ``req`` waits leaves its mark; the next server
    on that state dir releases those sessions before it listens (their
    ``req`` died with the old server, so nobody knows their listeners).
    The file is named by the uid's hash, so any uid makes a safe name.
    """

    def __init__(self, state_dir):
        self.directory = os.path.join(os.path.abspath(state_dir), SERVER_DIR, PENDING_DIR)

    def _path(self, uid):
        return os.path.join(self.directory, hashlib.sha256(uid.encode("utf-8")).hexdigest())

    def add(self, uid):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        with open(os.open(self._path(uid), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                  encoding="utf-8") as handle:
            handle.write(uid)

    def remove(self, uid):
        try:
            os.unlink(self._path(uid))
        except FileNotFoundError:
            pass

    def left(self):
        """The uids marked (by a server that is gone)."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        uids = []
        for name in names:
            try:
                with open(os.path.join(self.directory, name), encoding="utf-8") as handle:
                    uids.append(handle.read())
            except OSError:
                continue
        return uids


class ControlService:
    """req / hello / update / release for the sessions of one Gateway.

    ``listener_ip``, ``port_range``, ``backend`` and ``runtime`` are the
    server's settings: the protocol does not carry them. With
    ``enforce_owner`` (authentication on) a session may be updated and
    released only by the identity that made it, or by an admin.

    Methods are coroutines of one event loop; state in memory is touched
    only from that loop, so it needs no lock.
    """

    def __init__(self, gateway, listener_ip="0.0.0.0", port_range="5100-5200", backend="haproxy",
                 runtime="process", hello_timeout=180.0, hello_grace=5.0, psk=None, limits=None,
                 enforce_owner=False, workers=4, psk_compat=None, session_lifetime=None, max_session_lifetime=None,
                 idle_timeout=None, rate_policy="off", max_rate=None, max_rate_per_identity=None):
        self.gateway = gateway
        self.listener_ip = listener_ip
        self.port_range = port_range
        self.backend = backend
        self.runtime = runtime
        self.hello_timeout = hello_timeout
        self.hello_grace = hello_grace
        self.psk = psk
        self.psk_compat = psk_compat
        self.limits = limits or Limits()
        self.enforce_owner = enforce_owner
        # Seconds (None: none) given to the sessions this server makes; renewed by their owner's req, hello and
        # update, never past max_session_lifetime from their creation.
        self.session_lifetime = session_lifetime or None
        self.max_session_lifetime = max_session_lifetime or None
        self.idle_timeout = idle_timeout or None
        # Bits per second (None: no limit); see RATE_POLICIES and _rate_for.
        if rate_policy not in RATE_POLICIES:
            raise S2DSError("rate_policy %r: must be one of %s" % (rate_policy, ", ".join(RATE_POLICIES)),
                            field="rate_policy", value=rate_policy)
        if rate_policy == "cap" and not max_rate:
            raise S2DSError("rate_policy cap needs --max_rate (the rate it caps at)", field="max_rate", value=None)
        self.rate_policy = rate_policy
        self.max_rate = max_rate or None
        self.max_rate_per_identity = max_rate_per_identity or None
        self.quota_ports = self.limits.ports_quota(port_range)
        self.marks = PendingMarks(gateway.store.state_dir)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s2cs-gateway")
        self._pending = {}
        self._early_hellos = {}   # identity -> (hellos waiting for their req, peer)
        self._arrival = None      # asyncio.Condition, made on the loop
        self._hellos = {}         # uid -> prod_listeners of its hello (answers a repeated req)
        self._stopping = False
        # Settings checked once, at start: a bad one stops the server, not a request.
        self._spec("00000000-0000-0000-0000-000000000000", "PROD", 1)

    # -- helpers ---------------------------------------------------------------
    def _spec(self, uid, role, num_conn, targets=(), record=None, rate=None):
        """The spec of a session from the server's settings; an existing ``record`` keeps its own
        listener address, backend, runtime, lifetime, idle timeout and rate (``rate``, bits per second, is a
        new session's, from :meth:`_rate_for`)."""
        bits = record.rate if record else rate
        return SessionSpec.build(uid, role, num_conn=num_conn,
                                 listener_ip=record.listener_ip if record else self.listener_ip,
                                 port_range=self.port_range, targets=targets,
                                 backend=record.backend if record else self.backend,
                                 runtime=record.runtime if record else self.runtime,
                                 psk=self.psk, psk_compat=self.psk_compat,
                                 lifetime=record.lifetime if record else self.session_lifetime,
                                 idle_timeout=record.idle_timeout if record else self.idle_timeout,
                                 max_lifetime=None if record else self.max_session_lifetime,
                                 rate=format_rate(bits) if bits else None)

    def _rate_for(self, asked, records, caller):
        """The rate (bits per second, None: not shaped) a new session of ``caller`` gets for the protocol's
        ``asked`` (kB/s; 0 or less: none asked), by --rate_policy; a refusal is RESOURCE_EXHAUSTED naming the limit.

        ``honour`` gives what was asked (or --max_rate when nothing was and a per-identity cap is set) and
        refuses more than --max_rate; ``cap`` gives the smaller of what was asked and --max_rate. Either way the
        identity's sessions together stay within --max_rate_per_identity: ``cap`` gives what is left of it,
        ``honour`` refuses more."""
        if self.rate_policy == "off":
            return None
        try:
            wanted = protocol_rate(asked) if asked is not None else None
        except S2DSError as exc:
            raise _bad_input(exc) from None
        if self.rate_policy == "honour":
            if wanted is not None and self.max_rate and wanted > self.max_rate:
                raise ControlError("RESOURCE_EXHAUSTED", "limit max_rate (--max_rate %s) reached: the session asks for "
                                   "%s" % (format_rate(self.max_rate), format_rate(wanted)))
            if wanted is None and self.max_rate_per_identity:
                wanted = self.max_rate
        else:
            wanted = min(wanted, self.max_rate) if wanted is not None else self.max_rate
        if self.max_rate_per_identity:
            held = sum(r.rate or 0 for r in records if getattr(r, "owner", None) == caller.identity)
            held += sum(p.rate or 0 for p in self._pending.values() if p.caller.identity == caller.identity)
            left = self.max_rate_per_identity - held
            if wanted is None or self.rate_policy == "cap":
                wanted = left if wanted is None else min(wanted, left)
            if wanted > left or wanted < MIN_RATE:
                raise ControlError("RESOURCE_EXHAUSTED", "limit max_rate_per_identity (--max_rate_per_identity %s) "
                                   "reached: this identity's sessions hold %s and this one asks for %s" % (
                                       format_rate(self.max_rate_per_identity), format_rate(held),
                                       format_rate(max(wanted or 0, 0))))
        if wanted is not None and not MIN_RATE <= wanted <= MAX_RATE:
            raise ControlError("INVALID_ARGUMENT", "rate %d kB/s: must be between %s and %s" % (
                asked, format_rate(MIN_RATE), format_rate(MAX_RATE)))
        return wanted

    async def _renew(self, uid, caller):
        """The owner's req, hello or update renews the session (its lifetime and idle time start again)."""
        try:
            await self._blocking(self.gateway.renew, uid)
        except (S2DSError, OSError) as exc:
            LOG.error("renewing session %s failed: %s", uid, untrusted_text(str(exc), LOG_LIMIT))

    # -- lifetimes -------------------------------------------------------------
    async def expire(self):
        """Release every session past its lifetime or idle timeout (Gateway.expire), but the ones being set up
        now; logs each. Returns what Gateway.expire returned."""
        released = await self._blocking(self.gateway.expire, keep=set(self._pending))
        for entry in released:
            self._hellos.pop(entry["uid"], None)
            if entry.get("error"):
                LOG.error("session %s expired (%s) but its release failed: %s", entry["uid"], entry["reason"],
                          untrusted_text(entry["error"], LOG_LIMIT))
            else:
                LOG.info("session %s of %s expired (%s): released, ports %s freed", entry["uid"],
                         untrusted_text(str(entry["owner"]), LOG_LIMIT), entry["reason"],
                         ",".join(str(port) for port in entry["ports"]))
        return released

    async def expire_loop(self, interval):
        """``expire`` every ``interval`` seconds until the server stops; a failure is logged and the loop goes on."""
        while not self._stopping:
            try:
                await self.expire()
            except Exception:  # pylint: disable=broad-exception-caught
                LOG.exception("expiring sessions failed")
            await asyncio.sleep(interval)

    async def _blocking(self, fn, *args, **kwargs):
        """Run a Gateway call (files, locks, proxies) off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _condition(self):
        if self._arrival is None:
            self._arrival = asyncio.Condition()
        return self._arrival

    @staticmethod
    def _uid(value):
        try:
            return parse_uid(value)
        except S2DSError as exc:
            raise _bad_input(exc) from None

    async def _load(self, uid):
        """The record of ``uid`` or None; a broken one is FAILED_PRECONDITION (release it)."""
        try:
            return await self._blocking(self.gateway.store.load, uid)
        except S2DSError as exc:
            LOG.error("session %s: %s", uid, exc)
            raise ControlError("FAILED_PRECONDITION", "session %s has a broken record on the server: release it" % uid) from None

    def _check_owner(self, uid, owner, caller, what):
        if self.enforce_owner and not caller.admin and owner != caller.identity:
            LOG.warning("%s %s refused: session belongs to another identity", what, uid)
            raise ControlError("PERMISSION_DENIED", "%s session %s: it belongs to another identity" % (what, uid))

    def _check_list(self, field, values, num_conn):
        cap = self.limits.list_cap(num_conn)
        if len(values) > cap:
            raise ControlError("RESOURCE_EXHAUSTED", "%s: %d entries, more than the limit of %d (the session's num_conn "
                               "or --max_listeners)" % (field, len(values), cap))

    @staticmethod
    def _clean_list(values):
        return [str(v).strip() for v in values if str(v).strip()]

    def recover(self):
        """Release what a crashed server left reserved (called before the server listens); returns the uids."""
        released = []
        for uid in self.marks.left():
            try:
                self.gateway.absent(uid)
                released.append(uid)
            except Exception:  # pylint: disable=broad-exception-caught
                LOG.exception("releasing the reservation %r left by a stopped server failed", uid)
            self.marks.remove(uid)
        if released:
            LOG.warning("released %d reservation(s) whose req died with the previous server: %s", len(released),
                        ", ".join(released))
        return released

    # -- limits ----------------------------------------------------------------
    def _check_pending(self, caller):
        """Calls waiting for their req or hello: per address, per identity, on the whole server."""
        limits = self.limits
        early = self._early_hellos
        total = len(self._pending) + sum(n for n, dummy in early.values())
        if total >= limits.max_pending:
            raise ControlError("RESOURCE_EXHAUSTED", "limit max_pending (--max_pending %d) reached: the server has %d "
                               "calls waiting for their req or hello" % (limits.max_pending, total))
        per_peer = sum(1 for p in self._pending.values() if p.caller.peer == caller.peer)
        per_peer += sum(n for n, peer in early.values() if peer == caller.peer)
        if per_peer >= limits.pending_per_peer:
            raise ControlError("RESOURCE_EXHAUSTED", "limit pending_per_peer (--max_pending_per_peer %d) reached: %s has "
                               "%d calls waiting for their req or hello" % (limits.pending_per_peer, caller.peer,
                                                                            per_peer))
        mine = sum(1 for p in self._pending.values() if p.caller.identity == caller.identity)
        mine += early.get(caller.identity, (0, None))[0]
        if mine >= limits.pending_per_identity:
            raise ControlError("RESOURCE_EXHAUSTED", "limit pending_per_identity (--max_pending_per_identity %d) "
                               "reached: this identity has %d calls waiting for their req or hello" % (
                                   limits.pending_per_identity, mine))

    def _check_quota(self, records, caller, num_conn):
        owned = {r.uid: len(r.ports) for r in records if getattr(r, "owner", None) == caller.identity}
        owned.update({u: p.params[1] for u, p in self._pending.items() if p.caller.identity == caller.identity})
        if len(owned) + 1 > self.limits.quota_sessions:
            raise ControlError("RESOURCE_EXHAUSTED", "limit quota_sessions (--quota_sessions %d) reached: this identity "
                               "holds %d sessions" % (self.limits.quota_sessions, len(owned)))
        if sum(owned.values()) + num_conn > self.quota_ports:
            raise ControlError("RESOURCE_EXHAUSTED", "limit quota_ports (--quota_ports %d) reached: this identity holds "
                               "%d ports and asks for %d more" % (self.quota_ports, sum(owned.values()), num_conn))
        if not self.enforce_owner:
            anonymous = {r.uid for r in records if str(getattr(r, "owner", None) or "peer:").startswith("peer:")}
            anonymous.update(self._pending)
            if len(anonymous) >= self.limits.max_anonymous_sessions:
                raise ControlError("RESOURCE_EXHAUSTED", "limit max_anonymous_sessions (--max_anonymous_sessions %d) "
                                   "reached: the server holds %d sessions of unauthenticated callers" % (
                                       self.limits.max_anonymous_sessions, len(anonymous)))

    def hello_timeout_for(self, num_conn):
        """A req for much of the port range holds it for a shorter while (``large_req_hello_timeout``)."""
        if Limits.large_req(num_conn, self.port_range):
            return min(self.hello_timeout, self.limits.large_req_hello_timeout)
        return self.hello_timeout

    # -- req -------------------------------------------------------------------
    async def req(self, uid, role, num_conn, caller=None, rate=None):
        """Reserve ports for ``uid``, wait for its hello; return (listeners, prod_listeners, created).

        ``rate`` is the protocol's (kB/s), applied by --rate_policy to a new session."""
        caller = caller or Caller.anonymous()
        uid = self._uid(uid)
        try:
            spec = self._spec(uid, role, num_conn)
        except S2DSError as exc:
            raise _bad_input(exc) from None
        params = (spec.role, spec.num_conn)
        pending = self._pending.get(uid)
        if pending is not None:
            return await self._join(uid, pending, params, caller)
        self._check_pending(caller)
        records = await self._blocking(self.gateway.store.all)
        record = next((r for r in records if r.uid == uid), None)
        pending = self._pending.get(uid)  # another req may have come while the records were read
        if pending is not None:
            return await self._join(uid, pending, params, caller)
        if record is not None:
            self._check_owner(uid, getattr(record, "owner", None), caller, "req for")
            if (record.role, len(record.ports)) != params:
                raise ControlError("ALREADY_EXISTS", "session %s already exists with role %s and num_conn %d" % (
                    uid, record.role, len(record.ports)))
            prod_listeners = self._hellos.get(uid, list(record.targets) if record.role == "PROD" else [])
            await self._renew(uid, caller)
            return record.listeners, prod_listeners, False
        self._check_pending(caller)
        self._check_quota(records, caller, spec.num_conn)
        granted = self._rate_for(rate, records, caller)
        if granted:
            try:
                spec = self._spec(uid, role, num_conn, rate=granted)
            except S2DSError as exc:
                raise _bad_input(exc) from None
        pending = PendingSession(spec.role, spec.num_conn, caller)
        pending.rate = granted
        self._pending[uid] = pending
        async with self._condition():
            self._arrival.notify_all()
        try:
            await self._reserve_and_wait(uid, spec, pending)
        finally:
            if self._pending.get(uid) is pending:
                del self._pending[uid]
            pending.done.set()
        if pending.error is not None:
            raise pending.error  # pylint: disable=raising-bad-type
        return pending.listeners, pending.prod_listeners, True

    async def _join(self, uid, pending, params, caller):
        """A second req for a uid being set up (a client that retried): the first one's answer."""
        if pending.params != params:
            raise ControlError("ALREADY_EXISTS", "session %s is being set up with role %s and num_conn %d" % (
                uid, pending.params[0], pending.params[1]))
        self._check_owner(uid, pending.caller.identity, caller, "req for")
        await pending.done.wait()
        if pending.error:
            raise pending.error
        return pending.listeners, pending.prod_listeners, False

    async def _reserve_and_wait(self, uid, spec, pending):
        try:
            await self._blocking(self.marks.add, uid)
            try:
                outcome = await self._blocking(self.gateway.present, spec, owner=pending.caller.identity)
            except PortsExhausted as exc:
                pending.error = ControlError("RESOURCE_EXHAUSTED", str(exc))
                await self._blocking(self.marks.remove, uid)
                return
            except S2DSError as exc:
                pending.error = _bad_input(exc) if exc.field in CLIENT_FIELDS and exc.field != "uid" else \
                    setup_failed("req", uid, exc)
                await self._blocking(self.marks.remove, uid)
                return
            except Exception:  # pylint: disable=broad-exception-caught
                # The req and a hello waiting beside it get the same answer; the details stay in the log.
                LOG.exception("req %s: reserving failed", uid)
                pending.error = ControlError("INTERNAL", "req failed inside the server; its log has the details")
                return
            finally:
                pending.reserved.set()
            pending.listeners = outcome.session["listeners"]
            LOG.debug("req %s: %s reserved %s, waiting for hello", uid, spec.role, ", ".join(pending.listeners))
            timeout = self.hello_timeout_for(spec.num_conn)
            try:
                await asyncio.wait_for(pending.hello.wait(), timeout)
            except asyncio.TimeoutError:
                pending.error = ControlError("DEADLINE_EXCEEDED", "no hello for session %s within %gs: its ports are "
                                             "released" % (uid, timeout))
                LOG.warning("req %s: no hello within %gs, reservation released", uid, timeout)
                await self._release_quietly(uid)
                return
            if pending.hello_error is not None:
                pending.error = pending.hello_error
                await self._release_quietly(uid)
            elif self._stopping and not pending.hello_received:
                # The mark stays: the next server on this state dir releases the reservation.
                pending.error = ControlError("UNAVAILABLE", "the server is stopping: session %s is not set up" % uid)
            elif pending.released:
                pending.error = ControlError("ABORTED", "session %s was released before its hello arrived" % uid)
            else:
                await self._blocking(self.marks.remove, uid)
                # Its lifetime starts again with the hello, not with the reservation.
                await self._renew(uid, pending.caller)
        except asyncio.CancelledError:
            # The client gave up (or the server stops): nobody will learn these listeners.
            if not pending.hello_received and not self._stopping:
                asyncio.get_running_loop().create_task(self._release_quietly(uid))
            raise

    async def _release_quietly(self, uid):
        try:
            await self._blocking(self.gateway.absent, uid)
        except Exception:  # pylint: disable=broad-exception-caught
            LOG.exception("releasing %s failed", uid)
        await self._blocking(self.marks.remove, uid)

    def shutdown(self):
        """Wake every waiting call: the server is stopping (reservations stay on disk, marked)."""
        self._stopping = True
        for session in list(self._pending.values()):
            session.hello.set()

    def close(self):
        """Once no call runs any more: let the gateway's threads go."""
        self._executor.shutdown(wait=False)

    # -- hello -----------------------------------------------------------------
    async def hello(self, uid, prod_listeners, caller=None):
        """The application side's hello: wakes the matching req. Returns the session's listeners.

        A hello may overtake its req on the wire; it waits up to ``hello_grace``
        seconds for the req to arrive before answering NOT_FOUND. A hello that
        is refused ends its waiting req at once, with the same error.
        """
        caller = caller or Caller.anonymous()
        uid = self._uid(uid)
        prod_listeners = self._clean_list(prod_listeners)
        pending = self._pending.get(uid)
        record = None
        if pending is None:
            record = await self._load(uid)
            pending = self._pending.get(uid)
        if pending is None and record is None:
            pending = await self._wait_for_req(uid, caller)
        if pending is None:
            self._check_owner(uid, getattr(record, "owner", None), caller, "hello for")
            await self._check_hello(record.role, len(record.ports), prod_listeners)
            if prod_listeners and record.role == "PROD":
                self._hellos[uid] = prod_listeners
            await self._renew(uid, caller)
            return record.listeners
        self._check_owner(uid, pending.caller.identity, caller, "hello for")
        # The session's role comes from req: S2UC sends PROD in the hello of a CONS session.
        try:
            await self._check_hello(pending.params[0], pending.params[1], prod_listeners)
        except ControlError as exc:
            if not pending.hello.is_set():
                pending.hello_error = exc
                pending.hello.set()
            raise
        pending.prod_listeners = prod_listeners if pending.params[0] == "PROD" else []
        self._hellos[uid] = pending.prod_listeners
        pending.hello_received = True
        pending.hello.set()
        await pending.reserved.wait()
        if pending.error:
            raise pending.error
        return pending.listeners

    async def _wait_for_req(self, uid, caller):
        """The pending req of ``uid`` once it arrives (within ``hello_grace``), else NOT_FOUND."""
        self._check_pending(caller)
        count, dummy = self._early_hellos.get(caller.identity, (0, caller.peer))
        self._early_hellos[caller.identity] = (count + 1, caller.peer)
        try:
            async with self._condition():
                await asyncio.wait_for(self._arrival.wait_for(lambda: self._stopping or uid in self._pending),
                                       self.hello_grace)
        except asyncio.TimeoutError:
            pass
        finally:
            count, peer = self._early_hellos[caller.identity]
            if count > 1:
                self._early_hellos[caller.identity] = (count - 1, peer)
            else:
                del self._early_hellos[caller.identity]
        pending = None if self._stopping else self._pending.get(uid)
        if pending is None:
            raise ControlError("NOT_FOUND", "no session %s: send req first" % uid)
        return pending

    async def _check_hello(self, role, num_conn, prod_listeners):
        """A hello's prod_listeners: the grammar, then the gateway's target policy for PROD targets (a name is
        resolved off the loop), so a refused producer ends the req before anything forwards."""
        self._check_list("prod_listeners", prod_listeners, num_conn)
        if role != "PROD":
            return
        try:
            targets = [parse_target(value, field="prod_listeners") for value in prod_listeners]
            await self._blocking(self.gateway.policy.check, targets, "PROD", "prod_listeners")
        except S2DSError as exc:
            raise _bad_input(exc) from None

    # -- update ----------------------------------------------------------------
    async def update(self, uid, remote_listeners, caller=None):
        """Give the session its targets (listener i forwards to remote_listeners[i mod len]).

        Returns (listeners, changed).
        """
        caller = caller or Caller.anonymous()
        uid = self._uid(uid)
        record = await self._load(uid)
        if record is None:
            raise ControlError("NOT_FOUND", "no session %s" % uid)
        self._check_owner(uid, getattr(record, "owner", None), caller, "update of")
        targets = self._clean_list(remote_listeners)
        if not targets:
            raise ControlError("INVALID_ARGUMENT", "remote_listeners: at least one ip:port is needed")
        self._check_list("remote_listeners", targets, len(record.ports))
        try:
            for value in targets:
                parse_target(value, field="remote_listeners")
            spec = self._spec(uid, record.role, len(record.ports), targets, record=record)
            outcome = await self._blocking(self.gateway.present, spec)
        except PortsExhausted as exc:
            raise ControlError("RESOURCE_EXHAUSTED", str(exc)) from None
        except S2DSError as exc:
            if exc.field in CLIENT_FIELDS and exc.field != "uid":
                raise _bad_input(exc) from None
            raise setup_failed("update", uid, exc) from None
        if not outcome.changed:  # a changed session was renewed by present itself
            await self._renew(uid, caller)
        LOG.debug("update %s: %s -> %s (%s)", uid, ", ".join(outcome.session["listeners"]), ", ".join(targets),
                  ", ".join(outcome.actions) or "unchanged")
        return outcome.session["listeners"], outcome.changed

    # -- release ---------------------------------------------------------------
    async def release(self, uid, caller=None):
        """Tear the session down and free its ports; returns the listeners it had."""
        caller = caller or Caller.anonymous()
        uid = self._uid(uid)
        pending = self._pending.get(uid)
        if pending is not None:
            self._check_owner(uid, pending.caller.identity, caller, "release of")
            pending.released = True
            await pending.reserved.wait()  # never race the reservation itself
            pending.hello.set()
        elif not os.path.lexists(self.gateway.store.record_path(uid)):
            # No record, nothing pending: answered on the loop, without the state-dir lock or a worker
            # thread, so a flood of made-up uids costs a stat each.
            raise ControlError("NOT_FOUND", "no session %s" % uid)
        else:
            # A broken record has no owner to read: with ownership on, only an admin may release it.
            record = await self._blocking(self.gateway.store.load_entry, uid)
            if record is not None:
                self._check_owner(uid, getattr(record, "owner", None), caller, "release of")
        try:
            outcome = await self._blocking(self.gateway.absent, uid)
        except S2DSError as exc:
            LOG.error("release %s failed: %s", uid, exc)
            raise ControlError("INTERNAL", "release of session %s failed; the server's log has the details" % uid) from None
        await self._blocking(self.marks.remove, uid)
        if not outcome.changed and pending is None:
            raise ControlError("NOT_FOUND", "no session %s" % uid)
        self._hellos.pop(uid, None)
        LOG.debug("release %s", uid)
        return outcome.session.get("listeners", [])


class ControlServicer:
    """The gRPC (asyncio) face of a ControlService (registered with protocol.add_control_servicer).

    ``authenticate(context)`` is a coroutine that returns the call's
    :class:`Caller` or raises ControlError (UNAUTHENTICATED).
    """

    def __init__(self, service, authenticate=None, rate=None):
        self.service = service
        self.authenticate = authenticate or self._anonymous
        limits = service.limits
        self.rate = rate or RateLimiter(limits.rate_per_peer, limits.rate_burst)

    @staticmethod
    async def _anonymous(context):
        return Caller.anonymous(peer_host(context.peer()))

    async def _call(self, context, method, *args, **kwargs):
        name = method.__name__
        try:
            peer = peer_host(context.peer())
            if not self.rate.allow(peer):
                raise ControlError("RESOURCE_EXHAUSTED", "limit rate_per_peer (--rate_per_peer %g, --rate_burst %g) "
                                   "reached: %s makes calls faster than that" % (self.rate.rate, self.rate.burst, peer))
            caller = await self.authenticate(context)
            return await method(*args, caller=caller, **kwargs)
        except ControlError as exc:
            error = exc
            LOG.debug("%s: %s %s", name, exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:  # pylint: disable=broad-exception-caught
            # A remote client gets a status it can act on, never UNKNOWN or a server path.
            LOG.exception("%s failed", name)
            error = ControlError("INTERNAL", "%s failed inside the server; its log has the details" % name)
        await context.abort(getattr(grpc.StatusCode, error.code), public_message(error.message))
        return None  # not reached: abort raises

    # Trailing metadata tells a client that cares (stream_request) whether anything changed;
    # the messages themselves stay exactly as the protocol has them.
    async def req(self, request, context):
        listeners, prod_listeners, created = await self._call(context, self.service.req, request.uid, request.role,
                                                              request.num_conn, rate=request.rate)
        context.set_trailing_metadata(((SESSION_KEY, "new" if created else "existing"),))
        return protocol.Response(listeners=listeners, prod_listeners=prod_listeners)

    async def hello(self, request, context):
        listeners = await self._call(context, self.service.hello, request.uid, list(request.prod_listeners))
        return protocol.AppResponse(message="hello received for session %s" % request.uid, listeners=listeners)

    async def update(self, request, context):
        listeners, changed = await self._call(context, self.service.update, request.uid,
                                              list(request.remote_listeners))
        context.set_trailing_metadata(((CHANGED_KEY, "true" if changed else "false"),))
        return protocol.Response(listeners=listeners)

    async def release(self, request, context):
        listeners = await self._call(context, self.service.release, request.uid)
        return protocol.Response(listeners=listeners)
