# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The client side of the SciStream control protocol (what S2UC does), for modules and tests.

No Ansible imports: the ``stream_request`` module, the tests and the
benchmark use it alike.
"""

from __future__ import annotations

from . import protocol

try:
    import grpc
    HAS_GRPC = protocol.HAS_PROTOBUF
    GRPC_IMPORT_ERROR = protocol.PROTOBUF_IMPORT_ERROR
except ImportError as exc:
    grpc = None
    HAS_GRPC = False
    GRPC_IMPORT_ERROR = exc

from ..s2ds.errors import S2DSError
from ..s2ds.policy import TargetPolicy
from ..s2ds.session import parse_target
from .text import untrusted_text

SESSION_KEY = "scistream-session"
CHANGED_KEY = "scistream-changed"


class ControlCallError(Exception):
    """A control call failed: ``code`` is the gRPC status name, ``server`` where.

    ``details`` is what the other server said: untrusted, so it is kept
    escaped (printable ASCII, repr-like) and cut to 300 characters before it
    goes into any message, warning or result; so is ``code``.
    """

    def __init__(self, server, method, code, details):
        code = untrusted_text(code, 40)
        details = untrusted_text(details)
        super().__init__("%s %s: %s %s" % (server, method, code, details))
        self.server = server
        self.method = method
        self.code = code
        self.details = details


class UntrustedAnswer(ControlCallError):
    """A server answered listeners that the grammar refuses (a hostile or broken partner gateway).

    ``field`` names what it answered (``prod_listeners``, ``listeners``).
    """

    def __init__(self, server, method, field, why):
        super().__init__(server, method, "INVALID_ANSWER", "%s: %s" % (field, why))
        self.field = field


class RefusedAnswer(ControlCallError):
    """A server answered listeners that the consumer side's target policy refuses (``code`` PERMISSION_DENIED)."""

    def __init__(self, server, method, field, why):
        super().__init__(server, method, "PERMISSION_DENIED", why)
        self.field = field


def consumer_policy(allowed_targets=None):
    """The policy ``open_stream`` applies to PROD's answers for the CONS side: ``allowed_targets`` rules, no
    host names (a gateway answers addresses), and no own addresses (the controller is not the CONS gateway;
    the CONS server checks its own again)."""
    return TargetPolicy(allow=allowed_targets, addresses=(), resolver=None, field="cons_allowed_targets")


def checked_listeners(server, method, field, values, most):
    """``values`` (what ``server`` answered) as canonical ``host:port`` texts, or UntrustedAnswer.

    What a partner gateway answers is untrusted input on this side: it goes
    through the core's grammar (session.py) before it is passed on to the
    other gateway or returned, and there are 1 to ``most`` of them.
    """
    values = list(values)
    if not 1 <= len(values) <= most:
        raise UntrustedAnswer(server, method, field, "%d listeners answered, expected 1 to %d" % (len(values), most))
    try:
        return [str(parse_target(value, field=field)) for value in values]
    except S2DSError as exc:
        raise UntrustedAnswer(server, method, field, str(exc)) from None


def _trailing(call, key):
    for k, v in call.trailing_metadata() or ():
        if k == key:
            return v
    return None


#: What S2UC sends as its token when it has none (a server with auth off ignores it).
NO_TOKEN = "INVALID_TOKEN"


class ControlClient:
    """One control server (``host:port``): TLS checked against ``ca_path`` unless ``insecure``.

    It speaks as SciStream's client (S2UC) does: the token as it is in the
    ``authorization`` metadata (``INVALID_TOKEN`` without one), req and
    hello at once, and hello with role PROD whatever the session's role.
    """

    def __init__(self, server, ca_path=None, token=None, timeout=30.0, insecure=False, server_name=None):
        self.server = server
        self.timeout = timeout
        self.metadata = (("authorization", token or NO_TOKEN),)
        if insecure:
            self.channel = grpc.insecure_channel(server)
        else:
            root = None
            if ca_path:
                with open(ca_path, "rb") as handle:
                    root = handle.read()
            options = (("grpc.ssl_target_name_override", server_name),) if server_name else ()
            self.channel = grpc.secure_channel(server, grpc.ssl_channel_credentials(root_certificates=root),
                                               options=options)
        self.stub = protocol.ControlStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _error(self, method, exc):
        return ControlCallError(self.server, method, exc.code().name, exc.details())

    def request(self, uid, role, num_conn, prod_listeners=(), rate=0):
        """req and hello together, as clients do: returns (listeners, prod_listeners, created)."""
        req = self.stub.req.future(protocol.Request(uid=uid, role=role, num_conn=num_conn, rate=rate),
                                   metadata=self.metadata, timeout=self.timeout)
        hello = self.stub.hello.future(protocol.Hello(uid=uid, role="PROD", prod_listeners=list(prod_listeners)),
                                       metadata=self.metadata, timeout=self.timeout)
        # The req's own error (bad input, exists, full) says more than the hello's NOT_FOUND that follows it.
        try:
            response = req.result()
        except grpc.RpcError as exc:
            hello.cancel()
            raise self._error("req", exc) from None
        try:
            hello.result()
        except grpc.RpcError as exc:
            raise self._error("hello", exc) from None
        return list(response.listeners), list(response.prod_listeners), _trailing(req, SESSION_KEY) == "new"

    def update(self, uid, remote_listeners, role=""):
        """Give the session its targets: returns (listeners, changed)."""
        try:
            response, call = self.stub.update.with_call(
                protocol.UpdateTargets(uid=uid, remote_listeners=list(remote_listeners), role=role),
                metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error("update", exc) from None
        return list(response.listeners), _trailing(call, CHANGED_KEY) != "false"

    def release(self, uid, missing_ok=False):
        """Release the session: its listeners, or None when the server had no such session and ``missing_ok``."""
        try:
            response = self.stub.release(protocol.Release(uid=uid), metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as exc:
            if missing_ok and exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise self._error("release", exc) from None
        return list(response.listeners)


def open_stream(prod, cons, uid, num_conn, producer_targets, cons_policy=None, rate=0):
    """The two-gateway flow: PROD req+hello+update to the producer, then CONS to PROD's listeners.

    ``prod`` and ``cons`` are ControlClients. Returns a dict with both sides'
    listeners and whether anything changed. A PROD session this call created
    is released again when the CONS side fails, so nothing is left half done.
    Every listener a server answers passes the grammar first (``checked_listeners``),
    and the listeners PROD answers pass ``cons_policy`` (a TargetPolicy; default
    ``consumer_policy()``, the strict default) before the CONS side is asked anything.
    ``rate`` (the protocol's, kB/s; 0: none) goes with both reqs.
    """
    cons_policy = cons_policy if cons_policy is not None else consumer_policy()
    prod_listeners, dummy, prod_created = prod.request(uid, "PROD", num_conn, prod_listeners=producer_targets,
                                                       rate=rate)
    try:
        checked_listeners(prod.server, "req", "listeners", prod_listeners, num_conn)
        prod_listeners, prod_changed = prod.update(uid, producer_targets, "PROD")
        # Checked before the consumer side is asked for anything: a bad answer creates nothing there.
        prod_listeners = checked_listeners(prod.server, "update", "prod_listeners", prod_listeners, num_conn)
        try:
            cons_policy.check([parse_target(value) for value in prod_listeners], "CONS", field="prod_listeners")
        except S2DSError as exc:
            raise RefusedAnswer(prod.server, "update", "prod_listeners", str(exc)) from None
        cons_listeners, dummy, cons_created = cons.request(uid, "CONS", num_conn, rate=rate)
        cons_listeners, cons_changed = cons.update(uid, prod_listeners, "CONS")
        cons_listeners = checked_listeners(cons.server, "update", "listeners", cons_listeners, num_conn)
    except ControlCallError:
        if prod_created:
            try:
                prod.release(uid, missing_ok=True)
            except ControlCallError:
                pass
        raise
    return {
        "listeners": cons_listeners,
        "prod_listeners": prod_listeners,
        "changed": bool(prod_created or prod_changed or cons_created or cons_changed),
    }


def close_stream(prod, cons, uid):
    """Release ``uid`` on both sides; returns whether either had it."""
    released = [side.release(uid, missing_ok=True) for side in (cons, prod)]
    return any(r is not None for r in released)
