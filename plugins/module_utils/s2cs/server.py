# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The S2CS process: command line, TLS, authentication, and the gRPC (asyncio) server.

    python -m ansible_collections.scistream.gateway.plugins.module_utils.s2cs.server \\
        --listener_ip 10.0.2.1 --port 5000 --type haproxy --port_range 5100-5200 \\
        --server_cert server.crt --server_key server.key --state_dir /var/lib/scistream

The command line of SciStream's own server (``s2cs`` 1.2.1) works as it is:
its options in either spelling (``--listener-ip`` / ``--listener_ip``),
``-t``, its type names (``HaproxySubprocess`` ...), ``--server_crt``,
``--ssl`` / ``--nossl``, ``--version`` and Globus Auth (``--client_id``,
``--client_secret``). ``s2cs --help`` lists them apart from this server's own.

Authentication is off unless tokens (``--tokens_file``), an introspection
hook (``--auth_hook``) or a Globus Auth client secret are given. With it on,
each session belongs to the identity that made it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import errno
import fcntl
import hashlib
import hmac
import importlib
import logging
import math
import os
import re
import signal
import sys
import threading
import time

from . import protocol

try:
    import grpc
    from grpc import aio as grpc_aio
    HAS_GRPC = protocol.HAS_PROTOBUF
except ImportError:  # reported by main()
    grpc = grpc_aio = None
    HAS_GRPC = False

from ..s2ds.backends import PSK_COMPAT
from ..s2ds.errors import S2DSError
from ..s2ds.policy import TargetPolicy
from ..s2ds.session import format_duration, parse_devices, parse_duration, parse_rate
from ..s2ds.runtimes.registry import make_gateway, options_of
from . import metrics
from .guard import GUARD_TABLE, ConnectionGuard, GuardError
from .control import (LOG, RATE_POLICIES, SERVER_DIR, Caller, ControlError, ControlService, ControlServicer, Limits,
                      peer_host)

#: This server's version (the collection's); it speaks the control protocol of SciStream 1.2.1.
VERSION = "0.1.0"
UPSTREAM_VERSION = "1.2.1"

# SciStream's data server types (its create_instance, and the classes of s2ds/other.py) -> (backend, runtime).
# Its plain names run the proxy in a Docker container, the *Subprocess ones as a child process.
UPSTREAM_TYPES = {
    "haproxy": ("haproxy", "docker"),
    "nginx": ("nginx", "docker"),
    "stunnel": ("stunnel", "docker"),
    "dockersock": ("haproxy", "docker"),  # upstream's Haproxy through /var/run/docker.sock: what runtime docker does
    "haproxysubprocess": ("haproxy", "process"),
    "stunnelsubprocess": ("stunnel", "process"),
    "nginxsubprocess": ("nginx", "process"),  # not upstream's: the obvious name for the process runtime's nginx
}
# Upstream names this server knows but cannot honour, and why.
UPSTREAM_UNSUPPORTED_TYPES = {
    "janus": "upstream's Janus type drives one hard-coded Janus controller; this server offers the process and "
             "docker runtimes only (the s2ds module has runtime janus)",
    "s2ds": "upstream's original S2DS was removed from SciStream itself; use HaproxySubprocess",
}
# This server's own names: the backend, with --runtime (default process).
OWN_BACKENDS = ("haproxy", "nginx", "stunnel")

#: Globus Auth's client id that SciStream's server uses when none is given (auth stays off without a secret).
UPSTREAM_DEFAULT_CLIENT_ID = "c42c0dac-0a52-408e-a04f-5d31bfe0aef8"


def server_type(text):
    """``--type`` as given: kept raw, resolved by resolve_type() once --runtime is known."""
    key = str(text).strip().lower()
    if key in UPSTREAM_UNSUPPORTED_TYPES:
        raise argparse.ArgumentTypeError("%r cannot be honoured: %s" % (text, UPSTREAM_UNSUPPORTED_TYPES[key]))
    if key not in UPSTREAM_TYPES and key not in OWN_BACKENDS:
        raise argparse.ArgumentTypeError("%r: must be one of haproxy, nginx, stunnel or upstream's Haproxy, Nginx, "
                                         "Stunnel, HaproxySubprocess, StunnelSubprocess" % text)
    return str(text).strip()


def resolve_type(type_name, runtime=None):
    """(backend, runtime) of ``--type`` and ``--runtime``; an upstream name brings its own runtime."""
    key = type_name.lower()
    if key in OWN_BACKENDS and type_name == key:
        return key, runtime or "process"
    backend, upstream_runtime = UPSTREAM_TYPES[key]
    if runtime and runtime != upstream_runtime:
        raise SystemExit("--type %s runs its proxy with runtime %s (as SciStream's server does); --runtime %s "
                         "contradicts it: use --type %s --runtime %s" % (type_name, upstream_runtime, runtime,
                                                                         backend, runtime))
    return backend, upstream_runtime


def parse_bool(text):
    """Fire's spellings of a boolean (``--ssl=False``), as SciStream's command line takes them."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError("%r is not a boolean (true or false)" % text)


def load_hook(path):
    """A callable from ``package.module:function`` (or ``package.module.function``)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, dummy, attr = path.rpartition(".")
    try:
        hook = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SystemExit("--auth_hook %r cannot be loaded: %s" % (path, exc)) from None
    if not callable(hook):
        raise SystemExit("--auth_hook %r is not callable" % path)
    return hook


def read_tokens(path, option="--tokens_file"):
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise SystemExit("%s %r cannot be read: %s" % (option, path, exc.strerror)) from None


# What an auth hook may name as an identity: it is stored in session records and shown by s2ds_info.
_HOOK_IDENTITY = re.compile(r"[A-Za-z0-9._@+-]{1,128}")


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def globus_identity(sub):
    """``globus:<uuid>`` for a Globus Auth ``sub``, else None.

    Only the canonical text (lower-case, hyphenated: what Globus sends) is
    an identity: ``uuid.UUID`` also reads ``{UPPER}``, ``urn:uuid:...`` and
    bare hex, and folding those onto one identity let another token act as
    its owner.
    """
    if not isinstance(sub, str) or not _CANONICAL_UUID.fullmatch(sub):
        return None
    return "globus:%s" % sub


def hook_identity(answer):
    """``hook:<text>`` when an auth hook named an identity of the identity grammar, else None."""
    if isinstance(answer, str) and _HOOK_IDENTITY.fullmatch(answer):
        return "hook:%s" % answer
    return None


def token_identity(token):
    """A token's identity as recorded and shown (its SHA-256: the token itself is never stored)."""
    return "token-sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def expiry(value):
    """An introspection's ``exp`` as a finite float, or None (a bool, text, NaN, Infinity, 1e400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def bound_globus_calls(client, timeout, retries, max_sleep):
    """Bound a globus-sdk client's calls: the timeout of one attempt, how many more, the pause between.

    globus-sdk 4 keeps the retry settings on the client (``retry_config``), 3 on its transport.
    """
    client.transport.http_timeout = timeout
    settings = getattr(client, "retry_config", client.transport)
    settings.max_retries = retries
    settings.max_sleep = max_sleep


class GlobusIntrospection:
    """Globus Auth token check by introspection (globus-sdk's ConfidentialAppAuthClient).

    A token is accepted when Globus says it is active, not expired, and
    carries SciStream's scope for this client id; the identity is its
    ``sub``. Accepted tokens are cached (by hash) until they expire, and
    calls with one token wait for one introspection, so a session's calls
    cost one. Refusals are not cached (a token may become valid). Globus-sdk finds Auth by its
    own environment variables (GLOBUS_SDK_ENVIRONMENT,
    GLOBUS_SDK_SERVICE_URL_AUTH): the tests point it at a local stand-in.
    """

    MAX_CACHED = 10000
    #: An accepted token is remembered this long at most (seconds), whatever its ``exp`` says.
    MAX_CACHE_SECONDS = 600.0
    #: An ``exp`` further ahead than this is not Globus' (its tokens live 48 hours): refused.
    MAX_LIFETIME = 30 * 24 * 3600.0
    #: One introspection waits this long per attempt (globus-sdk's default is 60 s) ...
    HTTP_TIMEOUT = 5.0
    #: ... and is tried again at most this often (globus-sdk's default is 5, with a back-off of up to 10 s):
    #: an auth thread, and the caller waiting on it, is held 11 s at most, and so is a stopping server.
    MAX_RETRIES = 1
    MAX_RETRY_SLEEP = 1.0

    def __init__(self, client_id, client_secret, clock=time.time):
        import globus_sdk  # pylint: disable=import-outside-toplevel
        self.globus_sdk = globus_sdk
        self.client = globus_sdk.ConfidentialAppAuthClient(client_id, client_secret)
        bound_globus_calls(self.client, self.HTTP_TIMEOUT, self.MAX_RETRIES, self.MAX_RETRY_SLEEP)
        self.scope = "https://auth.globus.org/scopes/%s/scistream" % client_id
        self.clock = clock
        self._cache = {}
        self._in_flight = {}
        self._lock = threading.Lock()

    def __call__(self, token):
        key = hashlib.sha256(token.encode("utf-8")).digest()
        with self._lock:
            # One introspection per token at a time: S2UC's req and hello arrive together, and a call that
            # waited for another's introspection takes its answer, refusal included (not asked twice).
            in_flight = self._in_flight.setdefault(key, [threading.Lock(), 0, []])
            in_flight[1] += 1
        try:
            with in_flight[0]:
                if not in_flight[2]:
                    in_flight[2].append(self._check(key, token))
                return in_flight[2][0]
        finally:
            with self._lock:
                in_flight[1] -= 1
                if not in_flight[1]:
                    del self._in_flight[key]

    def cached(self, token):
        """The identity of an accepted token that has not expired yet, without asking Globus; else None."""
        key = hashlib.sha256(token.encode("utf-8")).digest()
        with self._lock:
            hit = self._cache.get(key)
        return hit[0] if hit is not None and hit[1] > self.clock() else None

    def _check(self, key, token):
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            data = self.client.oauth2_token_introspect(token)
        except self.globus_sdk.GlobusAPIError as exc:
            LOG.warning("Globus Auth introspection refused (HTTP %s): the call is refused", exc.http_status)
            return None
        except self.globus_sdk.NetworkError as exc:
            LOG.error("Globus Auth cannot be reached (%s): the call is refused", type(exc).__name__)
            return None
        return self._accept(key, data, now)

    def _accept(self, key, response, now):
        """The identity of an introspection answer (untrusted JSON), or None with the reason logged."""
        data = getattr(response, "data", response)
        reason = None
        if not isinstance(data, dict):
            reason = "the answer is not a JSON object"
        elif data.get("active") is not True:
            reason = "not active"
        elif expiry(data.get("exp")) is None:
            reason = "its exp is not a finite number"
        elif expiry(data["exp"]) <= now:
            reason = "expired"
        elif expiry(data["exp"]) > now + self.MAX_LIFETIME:
            reason = "its exp is more than %d days ahead" % (self.MAX_LIFETIME // 86400)
        elif not isinstance(data.get("scope"), str) or self.scope not in data["scope"].split():
            reason = "without the scope %s" % self.scope
        elif globus_identity(data.get("sub")) is None:
            reason = "without an identity (sub) that is a UUID"
        if reason:
            LOG.warning("Globus Auth token refused: %s", reason)
            return None
        expires = min(expiry(data["exp"]), now + self.MAX_CACHE_SECONDS)
        identity = globus_identity(data["sub"])
        with self._lock:
            if len(self._cache) >= self.MAX_CACHED:
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) < self.MAX_CACHED:
                self._cache[key] = (identity, expires)
        return identity


class TokenChecker:
    """Who a token is: accepted tokens, admin tokens, a hook, Globus Auth. Never logs a token.

    ``identify(token)`` returns (identity, admin) or None. A hook returns
    true to accept (the identity is then the token's hash) or a string
    (that identity). ``__call__`` is the plain yes / no.
    """

    def __init__(self, tokens=(), hook=None, admin_tokens=(), globus=None):
        self.tokens = [t.encode("utf-8") for t in tokens]
        self.admin_tokens = [t.encode("utf-8") for t in admin_tokens]
        self.hook = hook
        self.globus = globus

    @property
    def enabled(self):
        return bool(self.tokens or self.admin_tokens) or self.hook is not None or self.globus is not None

    @staticmethod
    def _listed(raw, known_tokens):
        # Compare with every token, so the time taken does not say which one nearly matched.
        matched = False
        for known in known_tokens:
            matched |= hmac.compare_digest(raw, known)
        return matched

    def known(self, token):
        """(identity, admin) when the token is settled without asking anyone (a listed or cached token)."""
        if not token:
            return None
        raw = token.encode("utf-8")
        if self._listed(raw, self.admin_tokens):
            return token_identity(token), True
        if self._listed(raw, self.tokens):
            return token_identity(token), False
        cached = self.globus.cached(token) if self.globus is not None else None
        return (cached, False) if cached else None

    @property
    def asks(self):
        """Whether some tokens take a call to a hook or to Globus (which may block)."""
        return self.hook is not None or self.globus is not None

    def identify(self, token):
        found = self.known(token)
        if found is not None or not token:
            return found
        if self.hook is not None:
            try:
                answer = self.hook(token)
            except Exception:  # pylint: disable=broad-exception-caught
                LOG.exception("auth hook failed; the call is refused")
                answer = None
            if isinstance(answer, str):
                if hook_identity(answer) is None:
                    LOG.warning("auth hook named an identity outside [A-Za-z0-9._@+-]{1,128}; the call is refused")
                    return None
                return hook_identity(answer), False
            if answer is True:
                return token_identity(token), False
        if self.globus is not None:
            identity = self.globus(token)
            if identity:
                return identity, False
        return None

    def __call__(self, token):
        return self.identify(token) is not None


def bearer_token(metadata):
    """The token of the ``authorization`` metadata (``Bearer`` prefix optional, as S2UC sends none)."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            value = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return value[7:].strip() if value.lower().startswith("bearer ") else value.strip()
    return ""


def authenticator(checker, executor, per_peer=16):
    """The servicer's ``authenticate(context)``: the Caller, or UNAUTHENTICATED.

    Listed and cached tokens are settled on the loop at once; only the
    others wait for the hook or Globus, in ``executor``, at most
    ``per_peer`` at a time per client address (RESOURCE_EXHAUSTED beyond),
    so a flood of made-up tokens cannot hold up clients already known.
    """
    asking = {}

    async def ask(peer, token):
        if asking.get(peer, 0) >= per_peer:
            raise ControlError("RESOURCE_EXHAUSTED", "limit pending_per_peer (--max_pending_per_peer %d) reached: %s "
                               "has that many token checks under way" % (per_peer, peer))
        asking[peer] = asking.get(peer, 0) + 1
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, checker.identify, token)
        finally:
            asking[peer] -= 1
            if not asking[peer]:
                del asking[peer]

    async def authenticate(context):
        peer = peer_host(context.peer())
        if not checker.enabled:
            return Caller.anonymous(peer)
        token = bearer_token(context.invocation_metadata())
        found = checker.known(token)
        if found is None and token and checker.asks:
            found = await ask(peer, token)
        if found is None:
            LOG.warning("call from %s refused: missing or invalid token", peer)
            raise ControlError("UNAUTHENTICATED", "missing or invalid token in the authorization metadata")
        return Caller(identity=found[0], peer=peer, admin=found[1])

    return authenticate


#: The runtimes a control server offers.
SERVER_RUNTIMES = ("process", "docker")


def build_gateway(args):
    """A Gateway over ``--state_dir`` with the runtimes a control server offers, from its runtime options,
    and its target policy."""
    return make_gateway(args.state_dir, vars(args), runtimes=SERVER_RUNTIMES, policy=policy_of(args),
                        rate_devices=getattr(args, "rate_devices", None))


class StateDirLock:
    """The server's hold on its state dir: one live S2CS per state dir.

    Two servers on one state dir would share uids (a PROD and a CONS
    session of one stream on one host collide) and release each other's
    reservations, so the second refuses to start. The lock is an flock on
    ``<state>/s2cs/server.lock``, kept open for the life of the process:
    the kernel drops it when the process dies, however it dies.
    """

    def __init__(self, state_dir):
        self.path = os.path.join(os.path.abspath(state_dir), SERVER_DIR, "server.lock")
        self.handle = None

    def acquire(self):
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            handle = open(self.path, "a+", encoding="ascii")  # pylint: disable=consider-using-with
        except OSError as exc:
            raise SystemExit("--state_dir: %s cannot be opened: %s" % (self.path, exc.strerror)) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise SystemExit("--state_dir %s is held by another running S2CS (pid %s): give each instance a state "
                             "dir of its own" % (os.path.dirname(os.path.dirname(self.path)), holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write("%d\n" % os.getpid())
        handle.flush()
        self.handle = handle
        return self

    def release(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class _Parser(argparse.ArgumentParser):
    """Reads ``@FILE``: one option per line; blank lines and ``#`` comments are skipped."""

    def convert_arg_line_to_args(self, arg_line):
        line = arg_line.strip()
        return [] if not line or line.startswith("#") else [line]


def _spellings(*names):
    """``--a_b`` and ``--a-b`` (SciStream's command line, read by Fire, takes both)."""
    result = []
    for name in names:
        for spelling in (name, name.replace("_", "-")):
            if spelling not in result:
                result.append(spelling)
    return result


#: argparse ``type`` of each Ansible option type.
_OPTION_TYPES = {"bool": parse_bool, "int": int, "str": str, "path": str}


def add_runtime_options(group, runtimes):
    """Every option the ``runtimes`` declare (runtimes/registry.py), as ``--name`` with its type, default and choices."""
    for name, spec in options_of(*runtimes).items():
        group.add_argument(*_spellings("--" + name), dest=name, type=_OPTION_TYPES[spec["type"]], default=spec.get("default"),
                           choices=spec.get("choices"), metavar=name.upper() if not spec.get("choices") else None,
                           help="see the s2ds module's %s%s" % (name, " (default %(default)s)" if "default" in spec else ""))


def parser():
    p = _Parser(prog="s2cs", fromfile_prefix_chars="@",
                description="SciStream control server (S2CS) on the collection's S2DS core. "
                            "@FILE reads options from FILE, one per line. Options take _ or - alike.")
    up = p.add_argument_group("SciStream's s2cs options (as upstream %s takes them)" % UPSTREAM_VERSION)
    up.add_argument(*_spellings("--listener_ip") + ["-l"], dest="listener_ip", default="0.0.0.0",
                    help="address the sessions' listeners bind to and advertise; the control server binds it too "
                         "unless --control_ip (default %(default)s)")
    up.add_argument("--port", type=int, default=5000, help="control server port (default %(default)s)")
    up.add_argument(*_spellings("--port_range"), dest="port_range", default="5100-5200",
                    help="listener ports, start-end (default %(default)s)")
    up.add_argument("--type", "-t", dest="type", type=server_type, default="haproxy",
                    help="data server: haproxy, nginx, stunnel (with --runtime), or upstream's Haproxy, Nginx, Stunnel "
                         "(runtime docker), HaproxySubprocess, StunnelSubprocess (runtime process) "
                         "(default %(default)s)")
    up.add_argument("--verbose", "--v", "-v", dest="verbose", nargs="?", const=True, default=False, type=parse_bool,
                    metavar="BOOL", help="log every call (--verbose, or Fire's --verbose=True)")
    up.add_argument(*_spellings("--server_crt", "--server_cert"), dest="server_cert", default="server.crt",
                    help="TLS certificate, PEM (default %(default)s)")
    up.add_argument(*_spellings("--server_key"), dest="server_key", default="server.key",
                    help="TLS private key, PEM (default %(default)s)")
    up.add_argument("--ssl", dest="ssl", nargs="?", const=True, default=True, type=parse_bool, metavar="BOOL",
                    help="TLS on the control channel (default); --ssl=False or --nossl: plaintext, for tests only")
    up.add_argument("--nossl", dest="ssl", action="store_false", help=argparse.SUPPRESS)
    up.add_argument(*_spellings("--client_id"), dest="client_id", default=UPSTREAM_DEFAULT_CLIENT_ID,
                    help="Globus Auth client id: tokens need the scope https://auth.globus.org/scopes/<id>/scistream "
                         "(default: SciStream's)")
    up.add_argument(*_spellings("--client_secret"), dest="client_secret", default="",
                    help="Globus Auth client secret: turns Globus Auth on (visible in ps: prefer --client_secret_file)")
    version = "s2cs, version: %s (scistream.gateway; speaks SciStream %s's control protocol)" % (
        VERSION, UPSTREAM_VERSION)
    up.add_argument("--version", action="version", version=version)

    own = p.add_argument_group("this server's options")
    own.add_argument(*_spellings("--control_ip"), dest="control_ip",
                     help="address the control server binds to (default: --listener_ip)")
    own.add_argument("--runtime", choices=["process", "docker"],
                     help="how proxies run (default: the --type's, else process)")
    own.add_argument("--image", help="proxy image for runtime docker (default: the backend's)")
    own.add_argument(*_spellings("--state_dir"), dest="state_dir", default="/var/lib/scistream",
                     help="session state; one running server per state dir (default %(default)s)")
    own.add_argument("--insecure", dest="ssl", action="store_false", help="plaintext control channel: for tests only")
    own.add_argument(*_spellings("--client_secret_file"), dest="client_secret_file",
                     help="file holding the Globus Auth client secret (mode 0600)")
    own.add_argument(*_spellings("--tokens_file"), dest="tokens_file",
                     help="accepted bearer tokens, one per line")
    own.add_argument(*_spellings("--admin_tokens_file"), dest="admin_tokens_file",
                     help="tokens that may update and release any session, one per line")
    own.add_argument(*_spellings("--auth_hook"), dest="auth_hook",
                     help="token introspection: package.module:function(token) -> bool or identity string")
    own.add_argument(*_spellings("--psk_file"), dest="psk_file",
                     help="stunnel pre-shared key (default: derived from each session's uid)")
    own.add_argument(*_spellings("--psk_compat"), dest="psk_compat", choices=sorted(PSK_COMPAT),
                     help="stunnel sessions speak what upstream SciStream's own stunnel sessions speak, to pair with "
                          "an upstream gateway: authenticated, NOT encrypted (off by default)")
    own.add_argument(*_spellings("--hello_timeout"), dest="hello_timeout", type=float, default=180.0,
                     help="seconds a req waits for its hello (default %(default)s, as SciStream's server: a manual "
                          "prod-req and a hello minutes later still meet)")
    life = p.add_argument_group("session lifetimes (durations: 90s, 30m, 12h, 7d, or bare seconds; 0 = none)")
    life.add_argument(*_spellings("--session_lifetime"), dest="session_lifetime", type=duration_type("--session_lifetime"),
                      default=DEFAULT_SESSION_LIFETIME,
                      help="a session this server makes is released this long after its owner's last req, hello or "
                           "update (default 12h, as AWS IoT secure tunneling; 0: never)")
    life.add_argument(*_spellings("--max_session_lifetime"), dest="max_session_lifetime",
                      type=duration_type("--max_session_lifetime"), default=0,
                      help="no renewal keeps a session past this long after its creation (default 0: no bound)")
    life.add_argument(*_spellings("--idle_timeout"), dest="idle_timeout", type=duration_type("--idle_timeout"), default=0,
                      help="release a session when no byte was counted through its listeners for this long (the "
                           "kernel counters; root with the nftables binding). Default 0: never idle")
    life.add_argument(*_spellings("--expire_interval"), dest="expire_interval", type=float, default=5.0,
                      help="seconds between two passes of the loop that releases expired sessions (1-300, default "
                           "%(default)s)")
    rates = p.add_argument_group("rates (the protocol's Request.rate, kB/s; enforced in the kernel, docs/rates.md; "
                                 "values with units: 500Mbit, 2Gbit, 20MB/s)")
    rates.add_argument(*_spellings("--rate_policy"), dest="rate_policy", choices=list(RATE_POLICIES), default="off",
                       help="off: ignore the rate clients ask for (default: S2UC asks 10000, 80 Mbit/s, unless told "
                            "otherwise); honour: apply it; cap: apply the smaller of it and --max_rate")
    rates.add_argument(*_spellings("--max_rate"), dest="max_rate", type=rate_type("--max_rate"), default=0,
                       help="the most one session gets (honour: more is refused; cap: the rate given when none or "
                            "more is asked; default 0: no limit, which cap does not take)")
    rates.add_argument(*_spellings("--max_rate_per_identity"), dest="max_rate_per_identity",
                       type=rate_type("--max_rate_per_identity"), default=0,
                       help="the most one identity's sessions get together (honour: more is refused; cap: a new "
                            "session gets what is left; default 0: no limit)")
    rates.add_argument(*_spellings("--rate_devices"), dest="rate_devices", type=devices_type, default=None,
                       help="comma-separated egress devices rates are enforced on (default: the devices of the "
                            "default routes)")
    own.add_argument(*_spellings("--pid_file"), dest="pid_file", help="write the server's pid here once it listens")
    own.add_argument("--daemon", action="store_true", help="detach; exit 0 once the server listens (use with --pid_file)")
    own.add_argument(*_spellings("--log_file"), dest="log_file", help="log here instead of stderr")
    own.add_argument(*_spellings("--metrics_port"), dest="metrics_port", type=int,
                     help="serve Prometheus metrics of the calls on this port (off by default)")
    own.add_argument(*_spellings("--metrics_address"), dest="metrics_address", default="127.0.0.1",
                     help="address of --metrics_port (default %(default)s)")

    pol = p.add_argument_group("target policy (where sessions may forward; each refusal is PERMISSION_DENIED naming "
                               "the target and the rule)")
    pol.add_argument(*_spellings("--allowed_targets"), dest="allowed_targets", action="append", default=None,
                     metavar="RULES",
                     help="rules, comma-separated or repeated: 10.0.3.0/24, 10.0.3.10/32:5074-5075, "
                          "[2001:db8::/32]:5000. Default 0.0.0.0/0 and ::/0; loopback, unspecified, link-local, "
                          "multicast, broadcast and this host's own addresses pass only a rule inside their class "
                          "(127.0.0.0/8 opens loopback)")
    pol.add_argument(*_spellings("--allowed_prod_targets"), dest="allowed_prod_targets", action="append",
                     default=None, metavar="RULES",
                     help="rules for PROD sessions' targets (the producers: hello's prod_listeners, update), "
                          "instead of --allowed_targets")
    pol.add_argument(*_spellings("--allowed_cons_targets"), dest="allowed_cons_targets", action="append",
                     default=None, metavar="RULES",
                     help="rules for CONS sessions' targets (the PROD gateways' listeners), instead of "
                          "--allowed_targets")
    pol.add_argument(*_spellings("--protected_ports"), dest="protected_ports", action="append", default=None,
                     metavar="PORTS",
                     help="ports of this host's services no session may forward to on a loopback or own address, "
                          "whatever the rules (an exporter's; this server's --port and --metrics_port are added); "
                          "default 5000,9787")

    run = p.add_argument_group("the runtimes' options (as the scistream.gateway.s2ds module's, from its runtime registry)")
    add_runtime_options(run, SERVER_RUNTIMES)

    lim = p.add_argument_group("limits (each refusal is RESOURCE_EXHAUSTED naming its limit)")
    defaults = Limits()
    lim.add_argument(*_spellings("--max_pending_per_peer"), dest="max_pending_per_peer", type=int,
                     default=defaults.pending_per_peer,
                     help="reqs waiting for their hello (and hellos for their req) per client address, all its "
                          "identities together; token checks by the hook or Globus under way per address count "
                          "against the smaller of this and --max_pending_per_identity (default %(default)s)")
    lim.add_argument(*_spellings("--max_pending_per_identity"), dest="max_pending_per_identity", type=int,
                     default=defaults.pending_per_identity,
                     help="reqs waiting for their hello (and hellos for their req) per identity; with "
                          "authentication off the identity is the client address (default %(default)s)")
    lim.add_argument(*_spellings("--max_pending"), dest="max_pending", type=int, default=defaults.max_pending,
                     help="reqs waiting for their hello (and hellos for their req) on the whole server "
                          "(default %(default)s)")
    lim.add_argument(*_spellings("--max_anonymous_sessions"), dest="max_anonymous_sessions", type=int,
                     default=defaults.max_anonymous_sessions,
                     help="sessions, held and pending, of all unauthenticated callers together (authentication off) "
                          "(default %(default)s)")
    lim.add_argument(*_spellings("--quota_sessions"), dest="quota_sessions", type=int, default=defaults.quota_sessions,
                     help="sessions per identity (per client address when auth is off) (default %(default)s)")
    lim.add_argument(*_spellings("--quota_ports"), dest="quota_ports", type=int, default=defaults.quota_ports,
                     help="listener ports per identity (default: half of --port_range, so one identity never holds "
                          "every port)")
    lim.add_argument(*_spellings("--large_req_hello_timeout"), dest="large_req_hello_timeout", type=float,
                     default=defaults.large_req_hello_timeout,
                     help="seconds a req for more than a quarter of --port_range waits for its hello, when shorter "
                          "than --hello_timeout (default %(default)s)")
    lim.add_argument(*_spellings("--rate_per_peer"), dest="rate_per_peer", type=float, default=defaults.rate_per_peer,
                     help="calls per second per client address, on average (a token bucket) (default %(default)s)")
    lim.add_argument(*_spellings("--rate_burst"), dest="rate_burst", type=int, default=defaults.rate_burst,
                     help="calls per client address at once before --rate_per_peer applies (default %(default)s)")
    lim.add_argument(*_spellings("--max_connections"), dest="max_connections", type=int, default=MAX_CONNECTIONS,
                     help="TCP connections the control server holds at once, in total; never more than its open-file "
                          "limit allows (raised to the hard limit at start) less a reserve for proxies and files "
                          "(default %(default)s)")
    lim.add_argument(*_spellings("--max_connections_per_peer"), dest="max_connections_per_peer", type=int,
                     default=MAX_CONNECTIONS_PER_PEER,
                     help="TCP connections to the control port at once per client IPv4 address or IPv6 /64, and "
                          "--max_connections in all, capped in the kernel (nftables ct count, table inet "
                          "scistream-guard; needs CAP_NET_ADMIN and nftables): a connection beyond is reset before "
                          "the server sees it; 0: no kernel caps (grpcio's --max_connections alone) "
                          "(default %(default)s)")
    lim.add_argument(*_spellings("--handshake_timeout"), dest="handshake_timeout", type=float,
                     default=HANDSHAKE_TIMEOUT,
                     help="seconds a new connection has for its TLS and HTTP/2 handshake, else it is closed "
                          "(an idle connection holds a descriptor) (default %(default)s)")
    lim.add_argument(*_spellings("--max_connection_idle"), dest="max_connection_idle", type=float,
                     default=MAX_CONNECTION_IDLE,
                     help="seconds a connection may stay without calls before the server closes it "
                          "(default %(default)s)")
    lim.add_argument(*_spellings("--max_concurrent_streams"), dest="max_concurrent_streams", type=int,
                     default=MAX_CONCURRENT_STREAMS,
                     help="calls at once on one connection (HTTP/2 streams) (default %(default)s)")
    lim.add_argument(*_spellings("--max_listeners"), dest="max_listeners", type=int, default=defaults.max_listeners,
                     help="prod_listeners and remote_listeners may be as long as the session's num_conn, or this "
                          "(default %(default)s)")
    lim.add_argument(*_spellings("--max_message_bytes"), dest="max_message_bytes", type=int,
                     default=defaults.max_message_bytes, help="largest request message (default %(default)s)")
    lim.add_argument(*_spellings("--max_workers"), dest="max_workers", type=int, default=4,
                     help="threads for the gateway's blocking work (proxies, files); waiting calls hold none "
                          "(default %(default)s)")
    return p


#: What --session_lifetime gives a session by default: 12 hours.
DEFAULT_SESSION_LIFETIME = 12 * 3600


def grammar_type(parse, option, name):
    """An argparse type from one of the grammar's parsers (session.py): ``parse(option, text)``, its error naming the
    option and the value; ``name`` is what argparse calls the type in its own messages."""
    def convert(text):
        try:
            return parse(option, text)
        except S2DSError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = name
    return convert


def rate_type(option):
    """The grammar's rate, with units (500Mbit, 20MB/s)."""
    return grammar_type(parse_rate, option, "rate")


def duration_type(option):
    """The grammar's duration (90s, 30m, 12h, 7d or bare seconds)."""
    return grammar_type(parse_duration, option, "duration")


#: Comma-separated network device names (the grammar's parse_devices).
devices_type = grammar_type(parse_devices, "--rate_devices", "devices")


def parse_args(argv=None):
    """The options, with --type resolved to backend and runtime, and the limits checked."""
    p = parser()
    args = p.parse_args(argv)
    try:
        args.backend, args.runtime = resolve_type(args.type, args.runtime)
    except SystemExit as exc:
        p.error(str(exc.code))
    for name in ("max_pending_per_peer", "max_pending_per_identity", "max_pending", "max_anonymous_sessions",
                 "quota_sessions", "quota_ports", "max_listeners", "max_message_bytes", "max_workers", "rate_burst",
                 "max_connections", "max_concurrent_streams"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error("--%s %r: must be at least 1" % (name, getattr(args, name)))
    if args.max_connections_per_peer < 0:
        p.error("--max_connections_per_peer %r: must be 0 (no kernel caps) or more" % args.max_connections_per_peer)
    for name in ("rate_per_peer", "large_req_hello_timeout", "handshake_timeout", "max_connection_idle"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            p.error("--%s %r: must be a positive, finite number" % (name, getattr(args, name)))
    if not (math.isfinite(args.expire_interval) and 1 <= args.expire_interval <= 300):
        p.error("--expire_interval %r: must be between 1 and 300 seconds" % args.expire_interval)
    if args.max_session_lifetime and args.session_lifetime > args.max_session_lifetime:
        p.error("--session_lifetime %s is longer than --max_session_lifetime %s" % (
            format_duration(args.session_lifetime), format_duration(args.max_session_lifetime)))
    if args.client_secret_file and args.client_secret:
        p.error("--client_secret and --client_secret_file: give one")
    args.insecure = not args.ssl
    try:
        policy_of(args)
    except S2DSError as exc:
        p.error(str(exc))
    return args


def read_secret(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise SystemExit("%s cannot be read: %s" % (path, exc.strerror)) from None


def _joined(values):
    """Repeated, comma-separated option values as one list (None when the option was not given)."""
    return None if values is None else [v for value in values for v in value.split(",") if v]


def policy_of(args):
    """The target policy of the command line: its rules, and this server's own ports protected."""
    policy = TargetPolicy(allow=_joined(args.allowed_targets), prod_allow=_joined(args.allowed_prod_targets),
                          cons_allow=_joined(args.allowed_cons_targets), protected_ports=_joined(args.protected_ports),
                          field="--allowed_targets")
    policy.add_protected(args.port, args.metrics_port)
    return policy


def limits_of(args):
    return Limits(pending_per_peer=args.max_pending_per_peer, pending_per_identity=args.max_pending_per_identity,
                  max_pending=args.max_pending, max_anonymous_sessions=args.max_anonymous_sessions,
                  quota_sessions=args.quota_sessions, quota_ports=args.quota_ports,
                  large_req_hello_timeout=args.large_req_hello_timeout, rate_per_peer=args.rate_per_peer,
                  rate_burst=args.rate_burst, max_listeners=args.max_listeners,
                  max_message_bytes=args.max_message_bytes)


#: Connection defaults of the control server (see --max_connections and the rest).
MAX_CONNECTIONS = 4096
#: Connections one client address (an IPv6 /64) may hold at once: a client multiplexes its calls on one.
MAX_CONNECTIONS_PER_PEER = 64
HANDSHAKE_TIMEOUT = 10.0
MAX_CONNECTION_IDLE = 300.0
MAX_CONCURRENT_STREAMS = 64
#: Descriptors kept for everything but connections (proxies started, state files, the exporter's reads).
FD_RESERVE = 256


def raise_nofile(resource_module=None):
    """Raise the soft open-file limit to the hard one (a unit without LimitNOFILE gives 1,024); return the soft one."""
    try:
        import resource  # pylint: disable=import-outside-toplevel
    except ImportError:  # not on Linux
        return None
    resource_module = resource_module or resource
    soft, hard = resource_module.getrlimit(resource_module.RLIMIT_NOFILE)
    if hard == resource_module.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource_module.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource_module.setrlimit(resource_module.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            LOG.warning("open-file limit stays %d: raising it to %d failed (%s)", soft, wanted, exc)
    return soft


def connection_cap(wanted, nofile):
    """``--max_connections`` bounded by what the descriptors allow (at least 16)."""
    if nofile is None or nofile == -1:
        return wanted
    return max(16, min(wanted, int(nofile) - FD_RESERVE))


def grpc_options(args, nofile=None):
    """The gRPC server's channel options: message size, connection count, handshake and idle timeouts."""
    cap = connection_cap(args.max_connections, nofile)
    return [("grpc.max_receive_message_length", args.max_message_bytes),
            ("grpc.max_allowed_incoming_connections", cap),
            ("grpc.server_handshake_timeout_ms", int(args.handshake_timeout * 1000)),
            ("grpc.max_connection_idle_ms", int(args.max_connection_idle * 1000)),
            ("grpc.max_concurrent_streams", args.max_concurrent_streams),
            # Pings without calls cost the server nothing it must answer: refuse a flood of them.
            ("grpc.http2.min_ping_interval_without_data_ms", 10000),
            ("grpc.http2.max_ping_strikes", 2)]


def check_rates(args, gateway):
    """A server told to apply rates (--rate_policy honour or cap) that cannot enforce them does not start: its
    sessions would be refused one by one, or worse, run unshaped."""
    if args.rate_policy != "off" and not gateway.shaper.available:
        raise SystemExit("--rate_policy %s: rates cannot be enforced here: %s (or --rate_policy off)" % (
            args.rate_policy, gateway.shaper.reason))


def connection_guard(args, host, port, total):
    """The kernel's caps on connections to the control port (guard.py), in place; None with
    --max_connections_per_peer 0. A server that cannot have them does not start."""
    if not args.max_connections_per_peer:
        LOG.warning("no kernel caps on connections (--max_connections_per_peer 0): one address may hold up to "
                    "--max_connections %d", total)
        return None
    guard = ConnectionGuard(args.state_dir, port, args.max_connections_per_peer, total, address=host)
    try:
        guard.install()
    except GuardError as exc:
        raise SystemExit("--max_connections_per_peer %d: the kernel caps cannot be put in place (%s); the server "
                         "needs CAP_NET_ADMIN and nftables (Debian: nftables, python3-nftables), or "
                         "--max_connections_per_peer 0 to go without them" % (args.max_connections_per_peer, exc)) from None
    LOG.info("connections to port %d: at most %d per address (IPv6: per /64) and %d in all, reset by the kernel "
             "(nftables inet %s, chain %s)", port, args.max_connections_per_peer, total, GUARD_TABLE, guard.chain)
    return guard


def build_checker(args):
    tokens = read_tokens(args.tokens_file) if args.tokens_file else []
    admin_tokens = read_tokens(args.admin_tokens_file, "--admin_tokens_file") if args.admin_tokens_file else []
    secret = read_secret(args.client_secret_file) if args.client_secret_file else args.client_secret
    globus = None
    if secret:
        try:
            globus = GlobusIntrospection(args.client_id, secret)
        except ImportError:
            raise SystemExit("--client_secret: Globus Auth needs globus-sdk in the server's environment "
                             "(pip install globus-sdk)") from None
    checker = TokenChecker(tokens, load_hook(args.auth_hook) if args.auth_hook else None, admin_tokens, globus)
    return checker, len(tokens), len(admin_tokens)


def describe_auth(args, checker, counts):
    if not checker.enabled:
        LOG.warning("authentication is OFF: every client is accepted and the authorization metadata is ignored "
                    "(clients may show INVALID_TOKEN: that is their placeholder, not an error)")
        return
    parts = ["%d token(s)" % counts[0], "%d admin token(s)" % counts[1]]
    if args.auth_hook:
        parts.append("hook %s" % args.auth_hook)
    if checker.globus is not None:
        parts.append("Globus Auth (scope %s)" % checker.globus.scope)
    LOG.info("authentication on: %s; each session belongs to the identity that made it", ", ".join(parts))


async def serve_async(args, ready=None, interceptors=()):
    """Run the server until SIGTERM / SIGINT; ``ready`` (has .set()) is told once it listens.

    ``interceptors`` are grpc.aio server interceptors (e.g. metrics).
    """
    lock = StateDirLock(args.state_dir).acquire()
    gateway = build_gateway(args)
    check_rates(args, gateway)
    checker, *counts = build_checker(args)
    try:
        service = ControlService(gateway, listener_ip=args.listener_ip, port_range=args.port_range,
                                 backend=args.backend, runtime=args.runtime, hello_timeout=args.hello_timeout,
                                 psk=read_secret(args.psk_file) if args.psk_file else None, psk_compat=args.psk_compat,
                                 limits=limits_of(args),
                                 enforce_owner=checker.enabled, workers=args.max_workers,
                                 session_lifetime=args.session_lifetime, max_session_lifetime=args.max_session_lifetime,
                                 idle_timeout=args.idle_timeout, rate_policy=args.rate_policy,
                                 max_rate=args.max_rate, max_rate_per_identity=args.max_rate_per_identity)
    except S2DSError as exc:
        raise SystemExit("bad setting: %s" % exc) from None
    service.recover()
    auth_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="s2cs-auth")
    nofile = raise_nofile()
    cap = connection_cap(args.max_connections, nofile)
    if cap < args.max_connections:
        LOG.warning("--max_connections %d lowered to %d: the open-file limit is %s", args.max_connections, cap, nofile)
    guarded = []  # the connection guard, once it is in place (it needs the bound port)
    server = grpc_aio.server(interceptors=metrics.install(args, gateway, lambda: guarded[0].refused() if guarded else {})
                             + list(interceptors), options=grpc_options(args, nofile))
    # A caller whose token is still being checked has no identity yet: its address gets the smaller cap.
    authenticate = authenticator(checker, auth_pool, per_peer=min(args.max_pending_per_peer,
                                                                  args.max_pending_per_identity))
    protocol.add_control_servicer(ControlServicer(service, authenticate), server)
    host = args.control_ip or args.listener_ip
    address = "[%s]:%d" % (host, args.port) if ":" in host else "%s:%d" % (host, args.port)
    if args.insecure:
        LOG.warning("control channel is NOT encrypted (--ssl=False / --insecure): for tests only")
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials([(read_secret(args.server_key).encode() + b"\n",
                                                    read_secret(args.server_cert).encode() + b"\n")])
        bound = server.add_secure_port(address, credentials)
    if not bound:
        raise SystemExit("cannot listen on %s" % address)
    describe_auth(args, checker, counts)
    LOG.info("target policy: %s", gateway.policy.describe())
    guard = connection_guard(args, host, bound, cap)
    guarded.extend([guard] if guard is not None else [])
    await server.start()
    LOG.info("S2CS listening on %s: backend %s, runtime %s, listeners %s ports %s, state %s, hello timeout %gs",
             address, args.backend, args.runtime, args.listener_ip, args.port_range, args.state_dir,
             args.hello_timeout)
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    expiring = asyncio.get_running_loop().create_task(service.expire_loop(args.expire_interval))
    LOG.info("session lifetime %s (at most %s from creation), idle timeout %s; expired sessions released every %gs",
             format_duration(args.session_lifetime) if args.session_lifetime else "none",
             format_duration(args.max_session_lifetime) if args.max_session_lifetime else "no bound",
             format_duration(args.idle_timeout) if args.idle_timeout else "none", args.expire_interval)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        LOG.info("stopping (sessions stay; a restarted server takes them over)")
        expiring.cancel()
        service.shutdown()
        await server.stop(grace=2)
        if guard is not None:
            guard.remove()
        service.close()
        auth_pool.shutdown(wait=False)
        lock.release()


def serve(args, ready=None, interceptors=()):
    asyncio.run(serve_async(args, ready, interceptors))


def daemonize(log_file):
    """Detach (double fork); returns a function the daemon calls with None (started) or an error text.

    The parent waits for that word and exits 0 only once the server listens,
    so a supervisor (the s2cs role) sees start-up errors.
    """
    read_fd, write_fd = os.pipe()
    if os.fork():
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            word = pipe.read().decode("utf-8", "replace")
        if word != "ok":
            sys.stderr.write((word or "the server exited during start-up") + "\n")
            os._exit(1)  # pylint: disable=protected-access
        os._exit(0)  # pylint: disable=protected-access
    os.close(read_fd)
    os.setsid()
    if os.fork():
        os._exit(0)  # pylint: disable=protected-access
    devnull = os.open(os.devnull, os.O_RDWR)
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_file else devnull
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    pipe = os.fdopen(write_fd, "wb")

    def report(error=None):
        if not pipe.closed:
            pipe.write(b"ok" if error is None else str(error).encode("utf-8"))
            pipe.close()

    return report


class _Started:
    """The ``ready`` of serve(): writes the pid file, then tells a waiting parent."""

    def __init__(self, pid_file, report=None):
        self.pid_file = pid_file
        self.report = report

    def set(self):
        if self.pid_file:
            with open(self.pid_file, "w", encoding="ascii") as handle:
                handle.write("%d\n" % os.getpid())
        if self.report:
            self.report()


def main(argv=None):
    args = parse_args(argv)
    report = daemonize(args.log_file) if args.daemon else None
    # A daemon's stderr already goes to --log_file.
    where = {"filename": args.log_file} if args.log_file and not args.daemon else {"stream": sys.stderr}
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", **where)
    # Start-up facts (address, auth on or off) always; every call with --verbose.
    LOG.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        if not HAS_GRPC:
            raise SystemExit("the S2CS needs grpcio and protobuf: pip install grpcio protobuf")
        serve(args, ready=_Started(args.pid_file, report))
    except SystemExit as exc:
        if report:
            report(exc.code)
        raise
    except BaseException as exc:
        if report:
            report("%s: %s" % (type(exc).__name__, exc))
        raise
    finally:
        if args.pid_file and os.path.exists(args.pid_file):
            try:
                with open(args.pid_file, encoding="ascii") as handle:
                    mine = handle.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(args.pid_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
