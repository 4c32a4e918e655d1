# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The SciStream control service (``scistream.Control``) on top of a Gateway.

Sessions live in the Gateway's state dir, so the ``s2ds`` and ``s2ds_info``
modules see them and a restarted server still knows and releases them. What
is only in memory is the wait of a ``req`` for its ``hello``: one
:class:`PendingSession` per uid, woken by an event (no polling, no sleeps).

The logic raises :class:`ControlError` with a gRPC status name; the gRPC
glue (:class:`ControlServicer`) turns that into ``context.abort``. This
module sits above the core: the core never imports it.
"""

from __future__ import annotations

import logging
import threading

try:
    import grpc
    from . import scistream_pb2
    HAS_GRPC = True
    GRPC_IMPORT_ERROR = None
except ImportError as exc:  # the Ansible modules report it through missing_required_lib
    grpc = scistream_pb2 = None
    HAS_GRPC = False
    GRPC_IMPORT_ERROR = exc

from ..s2ds.errors import PortsExhausted, S2DSError
from ..s2ds.session import SessionSpec, parse_target, parse_uid

LOG = logging.getLogger("scistream.s2cs")

# Trailing metadata keys: did req create the session, did update change it.
SESSION_KEY = "scistream-session"
CHANGED_KEY = "scistream-changed"


class ControlError(Exception):
    """A call the client gets an error status for: ``code`` is a grpc.StatusCode name."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _bad_input(exc, field=None):
    """INVALID_ARGUMENT from an S2DSError; its message names the field and value."""
    name = field or exc.field
    message = str(exc)
    if name and not message.startswith(name):
        message = "%s: %s" % (name, message)
    return ControlError("INVALID_ARGUMENT", message)


class PendingSession:
    """A ``req`` waiting for its ``hello``."""

    def __init__(self, role, num_conn):
        self.params = (role, num_conn)
        self.reserved = threading.Event()   # ports reserved (or the reservation failed)
        self.hello = threading.Event()      # hello arrived, or the session was released
        self.done = threading.Event()       # the req has its answer (or error)
        self.listeners = []
        self.prod_listeners = []
        self.released = False
        self.hello_received = False
        self.error = None


class ControlService:
    """req / hello / update / release for the sessions of one Gateway.

    ``listener_ip``, ``port_range``, ``backend`` and ``runtime`` are the
    server's settings: the protocol does not carry them.
    """

    def __init__(self, gateway, listener_ip="0.0.0.0", port_range="5100-5200", backend="haproxy",
                 runtime="process", hello_timeout=10.0, hello_grace=5.0, psk=None):
        self.gateway = gateway
        self.listener_ip = listener_ip
        self.port_range = port_range
        self.backend = backend
        self.runtime = runtime
        self.hello_timeout = hello_timeout
        self.hello_grace = hello_grace
        self.psk = psk
        self._cond = threading.Condition()
        self._pending = {}
        self._hellos = {}  # uid -> prod_listeners of its hello (answers a repeated req)
        self._stopping = False
        # Settings checked once, at start: a bad one stops the server, not a request.
        self._spec("00000000-0000-0000-0000-000000000000", "PROD", 1)

    # -- helpers ---------------------------------------------------------------
    def _spec(self, uid, role, num_conn, targets=()):
        return SessionSpec.build(uid, role, num_conn=num_conn, listener_ip=self.listener_ip,
                                 port_range=self.port_range, targets=targets, backend=self.backend,
                                 runtime=self.runtime, psk=self.psk)

    @staticmethod
    def _uid(value):
        try:
            return parse_uid(value)
        except S2DSError as exc:
            raise _bad_input(exc) from None

    def _known(self, uid):
        return uid in self._pending or self.gateway.store.load(uid) is not None

    # -- req -------------------------------------------------------------------
    def req(self, uid, role, num_conn):
        """Reserve ports for ``uid``, wait for its hello; return (listeners, prod_listeners, created)."""
        uid = self._uid(uid)
        try:
            spec = self._spec(uid, role, num_conn)
        except S2DSError as exc:
            raise _bad_input(exc) from None
        params = (spec.role, spec.num_conn)
        with self._cond:
            pending = self._pending.get(uid)
            if pending is None:
                record = self.gateway.store.load(uid)
                if record is not None:
                    if (record.role, len(record.ports)) != params:
                        raise ControlError("ALREADY_EXISTS", "session %s already exists with role %s and num_conn %d" % (
                            uid, record.role, len(record.ports)))
                    prod_listeners = self._hellos.get(uid, list(record.targets) if record.role == "PROD" else [])
                    return record.listeners, prod_listeners, False
                pending = PendingSession(*params)
                self._pending[uid] = pending
                self._cond.notify_all()
                owner = True
            else:
                if pending.params != params:
                    raise ControlError("ALREADY_EXISTS", "session %s is being set up with role %s and num_conn %d" % (
                        uid, pending.params[0], pending.params[1]))
                owner = False
        if owner:
            self._reserve_and_wait(uid, spec, pending)
        pending.done.wait(self.hello_timeout + 30)
        if pending.error:
            raise pending.error
        return pending.listeners, pending.prod_listeners, owner

    def _reserve_and_wait(self, uid, spec, pending):
        try:
            try:
                outcome = self.gateway.present(spec)
            except PortsExhausted as exc:
                pending.error = ControlError("RESOURCE_EXHAUSTED", str(exc))
                return
            except S2DSError as exc:
                pending.error = _bad_input(exc)
                return
            finally:
                pending.reserved.set()
            pending.listeners = outcome.session["listeners"]
            LOG.debug("req %s: %s reserved %s, waiting for hello", uid, spec.role, ", ".join(pending.listeners))
            if not pending.hello.wait(self.hello_timeout):
                self._release_quietly(uid)
                pending.error = ControlError("DEADLINE_EXCEEDED", "no hello for session %s within %gs: its ports are released"
                                             % (uid, self.hello_timeout))
                LOG.warning("req %s: no hello within %gs, reservation released", uid, self.hello_timeout)
            elif self._stopping and not pending.hello_received:
                self._release_quietly(uid)
                pending.error = ControlError("UNAVAILABLE", "the server is stopping: session %s released" % uid)
            elif pending.released:
                pending.error = ControlError("ABORTED", "session %s was released before its hello arrived" % uid)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            LOG.exception("req %s failed", uid)
            pending.error = ControlError("INTERNAL", "session %s: %s" % (uid, exc))
        finally:
            with self._cond:
                if self._pending.get(uid) is pending:
                    del self._pending[uid]
            pending.done.set()

    def _release_quietly(self, uid):
        try:
            self.gateway.absent(uid)
        except Exception:  # pylint: disable=broad-exception-caught
            LOG.exception("releasing %s failed", uid)

    def shutdown(self):
        """Wake every waiting call: the server is stopping (reservations stay on disk)."""
        with self._cond:
            self._stopping = True
            pending = list(self._pending.values())
            self._cond.notify_all()
        for session in pending:
            session.hello.set()

    # -- hello -----------------------------------------------------------------
    def hello(self, uid, prod_listeners):
        """The application side's hello: wakes the matching req. Returns the session's listeners.

        A hello may overtake its req on the wire; it waits up to ``hello_grace``
        seconds for the req to arrive before answering NOT_FOUND.
        """
        uid = self._uid(uid)
        prod_listeners = [str(p).strip() for p in prod_listeners if str(p).strip()]
        with self._cond:
            if not self._cond.wait_for(lambda: self._stopping or self._known(uid), self.hello_grace) or self._stopping:
                raise ControlError("NOT_FOUND", "no session %s: send req first" % uid)
            pending = self._pending.get(uid)
        if pending is None:
            record = self.gateway.store.load(uid)
            if record is None:
                raise ControlError("NOT_FOUND", "no session %s" % uid)
            self._check_prod_listeners(record.role, prod_listeners)
            if prod_listeners:
                self._hellos[uid] = prod_listeners
            return record.listeners
        # The session's role comes from req: S2UC sends PROD in the hello of a CONS session.
        self._check_prod_listeners(pending.params[0], prod_listeners)
        pending.prod_listeners = prod_listeners if pending.params[0] == "PROD" else []
        self._hellos[uid] = pending.prod_listeners
        pending.hello_received = True
        pending.hello.set()
        pending.reserved.wait(self.hello_timeout)
        if pending.error:
            raise pending.error
        return pending.listeners

    @staticmethod
    def _check_prod_listeners(role, prod_listeners):
        if role != "PROD":
            return
        for value in prod_listeners:
            try:
                parse_target(value, field="prod_listeners")
            except S2DSError as exc:
                raise _bad_input(exc) from None

    # -- update ----------------------------------------------------------------
    def update(self, uid, remote_listeners):
        """Give the session its targets (listener i forwards to remote_listeners[i mod len]).

        Returns (listeners, changed).
        """
        uid = self._uid(uid)
        record = self.gateway.store.load(uid)
        if record is None:
            raise ControlError("NOT_FOUND", "no session %s" % uid)
        targets = [str(t).strip() for t in remote_listeners if str(t).strip()]
        if not targets:
            raise ControlError("INVALID_ARGUMENT", "remote_listeners: at least one ip:port is needed")
        try:
            for value in targets:
                parse_target(value, field="remote_listeners")
            spec = SessionSpec.build(uid, record.role, num_conn=len(record.ports), listener_ip=record.listener_ip,
                                     port_range=self.port_range, targets=targets, backend=record.backend,
                                     runtime=record.runtime, psk=self.psk)
            outcome = self.gateway.present(spec)
        except PortsExhausted as exc:
            raise ControlError("RESOURCE_EXHAUSTED", str(exc)) from None
        except S2DSError as exc:
            raise _bad_input(exc) from None
        LOG.debug("update %s: %s -> %s (%s)", uid, ", ".join(outcome.session["listeners"]), ", ".join(targets),
                  ", ".join(outcome.actions) or "unchanged")
        return outcome.session["listeners"], outcome.changed

    # -- release ---------------------------------------------------------------
    def release(self, uid):
        """Tear the session down and free its ports; returns the listeners it had."""
        uid = self._uid(uid)
        with self._cond:
            pending = self._pending.get(uid)
        if pending is not None:
            pending.released = True
            pending.reserved.wait(self.hello_timeout)  # never race the reservation itself
            pending.hello.set()
        try:
            outcome = self.gateway.absent(uid)
        except S2DSError as exc:
            raise ControlError("INTERNAL", str(exc)) from None
        if not outcome.changed and pending is None:
            raise ControlError("NOT_FOUND", "no session %s" % uid)
        self._hellos.pop(uid, None)
        LOG.debug("release %s", uid)
        return outcome.session.get("listeners", [])


class ControlServicer:
    """The gRPC face of a ControlService (registered with add_ControlServicer_to_server)."""

    def __init__(self, service):
        self.service = service

    @staticmethod
    def _call(context, method, *args):
        try:
            return method(*args)
        except ControlError as exc:
            LOG.debug("%s: %s %s", method.__name__, exc.code, exc.message)
            context.abort(getattr(grpc.StatusCode, exc.code), exc.message)
        return None  # not reached: abort raises

    # Trailing metadata tells a client that cares (stream_request) whether anything changed;
    # the messages themselves stay exactly as the protocol has them.
    def req(self, request, context):
        listeners, prod_listeners, created = self._call(context, self.service.req, request.uid, request.role,
                                                        request.num_conn)
        context.set_trailing_metadata(((SESSION_KEY, "new" if created else "existing"),))
        return scistream_pb2.Response(listeners=listeners, prod_listeners=prod_listeners)

    def hello(self, request, context):
        listeners = self._call(context, self.service.hello, request.uid, list(request.prod_listeners))
        return scistream_pb2.AppResponse(message="hello received for session %s" % request.uid, listeners=listeners)

    def update(self, request, context):
        listeners, changed = self._call(context, self.service.update, request.uid, list(request.remote_listeners))
        context.set_trailing_metadata(((CHANGED_KEY, "true" if changed else "false"),))
        return scistream_pb2.Response(listeners=listeners)

    def release(self, request, context):
        listeners = self._call(context, self.service.release, request.uid)
        return scistream_pb2.Response(listeners=listeners)
