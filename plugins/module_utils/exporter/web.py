# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The exporter-toolkit web config (``--web.config.file``), as Prometheus' own exporters read it.

Supported keys (others are refused, naming the key, rather than ignored)::

    tls_server_config:
      cert_file: /etc/scistream/exporter/tls.crt
      key_file: /etc/scistream/exporter/tls.key
      client_ca_file: /etc/scistream/exporter/ca.crt       # optional
      client_auth_type: RequireAndVerifyClientCert        # or NoClientCert (default)
      min_version: TLS12                                  # or TLS13 (default TLS12)
    basic_auth_users:
      prometheus: $2y$10$...                              # bcrypt (htpasswd -B), as in exporter-toolkit

Passwords are checked with the ``bcrypt`` library (Debian python3-bcrypt);
a check that succeeded is remembered (by a SHA-256 of the header) so a
scrape every few seconds does not pay bcrypt's cost each time.

:class:`MetricsHTTPServer` is the one HTTP server of the collection's
metrics (the exporter's ``/metrics`` and the S2CS's ``--metrics_port``).
It is built to stay up for the one client that matters (Prometheus) while
others misbehave: one thread accepts and reads every request head without
blocking (TLS handshake included), with a deadline for the whole head from
the moment of accept (a slowloris client that sends a byte a second is
closed at the deadline, and holds no thread meanwhile), a size bound for
it, a cap on connections in total and per client address (at the cap the
address holding most connections gives way), and only complete requests go
to a small, fixed pool of worker threads. The standard library's
ThreadingHTTPServer (and prometheus_client's start_http_server, built on
it) gives each connection a thread of its own for as long as the client
likes: about a thousand slow connections held every scrape off.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import hashlib
import http.server
import io
import logging
import selectors
import socket
import ssl
import threading
import time

try:
    import yaml
    HAS_YAML = True
except ImportError:  # reported by load_web_config
    yaml = None
    HAS_YAML = False

try:
    import bcrypt
    HAS_BCRYPT = True
except ImportError:  # reported by load_web_config
    bcrypt = None
    HAS_BCRYPT = False

TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


class WebConfigError(ValueError):
    """A web config that cannot be used; the message names the key and the value."""


class WebConfig:
    """TLS context (or None) and the basic auth users (name -> bcrypt hash)."""

    def __init__(self, tls_context=None, users=None):
        self.tls_context = tls_context
        self.users = {name: hashed.encode("utf-8") for name, hashed in (users or {}).items()}
        self._accepted = set()
        self._lock = threading.Lock()

    @property
    def auth_required(self):
        return bool(self.users)

    def authorized(self, header):
        """True for an ``Authorization: Basic ...`` header of a configured user (or when auth is off)."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        digest = hashlib.sha256(header.encode("utf-8")).digest()
        with self._lock:
            if digest in self._accepted:
                return True
        try:
            user, dummy, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        # Check a password even for an unknown user, so the time taken does not say which users exist.
        try:
            ok = bcrypt.checkpw(password.encode("utf-8"), hashed or _dummy_hash()) and hashed is not None
        except ValueError:  # a malformed hash in the config
            ok = False
        if ok:
            with self._lock:
                self._accepted.add(digest)
        return ok


_DUMMY = {}


def _dummy_hash():
    if "hash" not in _DUMMY:
        _DUMMY["hash"] = bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=10))
    return _DUMMY["hash"]


def load_web_config(path):
    """A WebConfig from the YAML file at ``path``; WebConfigError on anything it cannot use."""
    if not HAS_YAML:
        raise WebConfigError("--web.config.file needs PyYAML (Debian: python3-yaml)")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WebConfigError("web config %r cannot be read: %s" % (path, exc)) from None
    if not isinstance(data, dict):
        raise WebConfigError("web config %r: must be a mapping" % path)
    unknown = sorted(set(data) - {"tls_server_config", "basic_auth_users"})
    if unknown:
        raise WebConfigError("web config %r: unsupported key %r" % (path, unknown[0]))
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict) or not all(isinstance(v, str) and v.startswith("$2") for v in users.values()):
        raise WebConfigError("web config %r: basic_auth_users must map user names to bcrypt hashes ($2...)" % path)
    if users and not HAS_BCRYPT:
        raise WebConfigError("web config %r: basic_auth_users needs the bcrypt library (Debian: python3-bcrypt)" % path)
    tls = data.get("tls_server_config")
    return WebConfig(tls_context(tls, path) if tls else None, {str(k): v for k, v in users.items()})


def tls_context(tls, path):
    if not isinstance(tls, dict):
        raise WebConfigError("web config %r: tls_server_config must be a mapping" % path)
    unknown = sorted(set(tls) - TLS_KEYS)
    if unknown:
        raise WebConfigError("web config %r: unsupported key tls_server_config.%s" % (path, unknown[0]))
    for key in ("cert_file", "key_file"):
        if not tls.get(key):
            raise WebConfigError("web config %r: tls_server_config.%s is required" % (path, key))
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise WebConfigError("web config %r: tls_server_config.client_auth_type %r: must be one of %s" % (
            path, auth, ", ".join(sorted(CLIENT_AUTH))))
    version = tls.get("min_version", "TLS12")
    if version not in VERSIONS:
        raise WebConfigError("web config %r: tls_server_config.min_version %r: must be TLS12 or TLS13" % (path, version))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[version]
    try:
        context.load_cert_chain(tls["cert_file"], tls["key_file"])
        if tls.get("client_ca_file"):
            context.load_verify_locations(tls["client_ca_file"])
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError("web config %r: TLS files cannot be loaded: %s" % (path, exc)) from None
    context.verify_mode = CLIENT_AUTH[auth]
    if auth != "NoClientCert" and not tls.get("client_ca_file"):
        raise WebConfigError("web config %r: client_auth_type %s needs client_ca_file" % (path, auth))
    return context


LOG = logging.getLogger("scistream.exporter")

#: What a metrics client may take (see MetricsHTTPServer).
DEFAULT_WORKERS = 4
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_MAX_PER_PEER = 16
DEFAULT_REQUEST_DEADLINE = 10.0
MAX_HEAD_BYTES = 16 * 1024


def metrics_handler(render, web=None, name="scistream-exporter"):
    """A request handler: GET /metrics (``render()`` -> (body, content type)) and / for a pointer; basic auth
    where ``web`` (a WebConfig) has users."""
    web = web or WebConfig()

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = name
        sys_version = ""
        # Every answer, errors included, with a status line and headers (the standard library's default is
        # HTTP/0.9: a bare body for a request line of one or two words).
        default_request_version = "HTTP/1.0"

        def do_GET(self):  # noqa: N802 (the standard library's name)
            if not web.authorized(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="%s"' % name)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, kind = render()
            elif path == "/":
                body, kind = ("%s: metrics at /metrics\n" % name).encode("ascii"), "text/plain; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # pylint: disable=arguments-differ
            LOG.debug("%s %s", self.address_string(), fmt % args)

    return Handler


class _Connection:
    """A connection whose request head is still being read (on the server's selector thread)."""

    __slots__ = ("sock", "peer", "started", "buffer", "handshaking")

    def __init__(self, sock, peer, started, handshaking):
        self.sock = sock
        self.peer = peer
        self.started = started
        self.buffer = bytearray()
        self.handshaking = handshaking


class MetricsHTTPServer:
    """A bounded HTTP(S) server for ``handler`` (a BaseHTTPRequestHandler class); IPv6 where the address is one.

    * ``workers``: threads that answer complete requests (each request gets
      ``request_deadline`` seconds to write its answer too);
    * ``max_connections`` / ``max_per_peer``: connections open at once, in
      total and per client address; at the total cap the address holding
      most connections loses its oldest one that is still sending its head;
    * ``request_deadline``: seconds from accept to a complete request head
      (TLS handshake included); ``MAX_HEAD_BYTES`` at most.

    The interface is socketserver's: ``server_address``, ``serve_forever()``,
    ``shutdown()``, ``server_close()``.
    """

    def __init__(self, address, handler, tls_context=None, workers=DEFAULT_WORKERS,
                 max_connections=DEFAULT_MAX_CONNECTIONS, max_per_peer=DEFAULT_MAX_PER_PEER,
                 request_deadline=DEFAULT_REQUEST_DEADLINE, clock=time.monotonic):
        self.handler = handler
        self.tls_context = tls_context
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.request_deadline = request_deadline
        self.clock = clock
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(128)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="metrics-http")
        self._selector = selectors.DefaultSelector()
        self._reading = collections.OrderedDict()   # fd -> _Connection, oldest first
        self._per_peer = collections.Counter()       # address -> connections open (reading or answered)
        self._lock = threading.Lock()                # _per_peer is touched by the workers too
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.refused = 0    # connections closed at accept or evicted (for tests and benches)

    # -- bookkeeping -------------------------------------------------------
    def _open_count(self):
        with self._lock:
            return sum(self._per_peer.values())

    def _forget(self, peer):
        with self._lock:
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]

    def _drop(self, conn):
        """Close a connection still reading its head."""
        self._reading.pop(conn.sock.fileno(), None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        _close(conn.sock)
        self._forget(conn.peer)

    def _make_room(self, peer):
        """At the total cap: evict the oldest head-reading connection of the address holding most; False when the
        newcomer's own address is that one (or nothing can be evicted)."""
        with self._lock:
            counts = dict(self._per_peer)
        readers = collections.Counter(conn.peer for conn in self._reading.values())
        if not readers:
            return False
        top = max(readers, key=lambda p: (counts.get(p, 0), readers[p]))
        if counts.get(peer, 0) + 1 >= counts.get(top, 0):
            return False
        victim = next(conn for conn in self._reading.values() if conn.peer == top)
        self._drop(victim)
        self.refused += 1
        return True

    # -- the selector thread -------------------------------------------------
    def _accept(self):
        for dummy in range(64):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: the next round may do better
                LOG.warning("accept failed: %s", exc)
                return
            peer = address[0]
            with self._lock:
                mine = self._per_peer.get(peer, 0)
            if mine >= self.max_per_peer or (self._open_count() >= self.max_connections and not self._make_room(peer)):
                self.refused += 1
                _close(sock)
                continue
            with self._lock:
                self._per_peer[peer] += 1
            sock.setblocking(False)
            handshaking = False
            if self.tls_context is not None:
                try:
                    sock = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ssl.SSLError):
                    _close(sock)
                    self._forget(peer)
                    continue
                handshaking = True
            conn = _Connection(sock, peer, self.clock(), handshaking)
            self._reading[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self._advance(conn)

    def _advance(self, conn):
        """Read what there is; hand a complete head to the workers."""
        try:
            if conn.handshaking:
                try:
                    conn.sock.do_handshake()
                    conn.handshaking = False
                except ssl.SSLWantReadError:
                    self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
                    return
                except ssl.SSLWantWriteError:
                    self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
                    return
                self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
            while b"\r\n\r\n" not in conn.buffer:
                try:
                    chunk = conn.sock.recv(4096)
                except (ssl.SSLWantReadError, BlockingIOError):
                    return
                except ssl.SSLWantWriteError:
                    self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
                    return
                if not chunk:
                    self._drop(conn)
                    return
                conn.buffer += chunk
                if len(conn.buffer) > MAX_HEAD_BYTES:
                    LOG.debug("request head from %s is over %d bytes: closed", conn.peer, MAX_HEAD_BYTES)
                    self._drop(conn)
                    return
        except (OSError, ssl.SSLError) as exc:
            LOG.debug("connection from %s failed: %s", conn.peer, exc)
            self._drop(conn)
            return
        del self._reading[conn.sock.fileno()]
        self._selector.unregister(conn.sock)
        deadline = conn.started + self.request_deadline
        self._pool.submit(self._answer, conn.sock, conn.peer, bytes(conn.buffer), deadline)

    def _expire(self):
        """Close connections whose head is late; the seconds until the next deadline (or None)."""
        now = self.clock()
        for conn in list(self._reading.values()):
            left = conn.started + self.request_deadline - now
            if left > 0:
                return left  # oldest first: the rest are later
            LOG.debug("request head from %s not complete within %gs: closed", conn.peer, self.request_deadline)
            self._drop(conn)
            self.refused += 1
        return None

    def serve_forever(self, poll_interval=0.5):
        self._stopped.clear()
        self._selector.register(self.socket, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                left = self._expire()
                timeout = poll_interval if left is None else min(poll_interval, left)
                for key, dummy in self._selector.select(timeout):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        try:
                            self._wake_r.recv(64)
                        except OSError:
                            pass
                    elif key.data.sock.fileno() in self._reading:
                        self._advance(key.data)
        finally:
            for conn in list(self._reading.values()):
                self._drop(conn)
            for sock in (self.socket, self._wake_r):
                try:
                    self._selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
            self._stopped.set()

    # -- the workers ---------------------------------------------------------
    def _answer(self, sock, peer, head, deadline):
        try:
            left = deadline - self.clock()
            if left <= 0:
                return
            sock.setblocking(True)
            sock.settimeout(left)  # the whole answer, not each send
            self.handler(_Request(sock, head), (peer, 0), self)
        except Exception:  # pylint: disable=broad-exception-caught
            LOG.debug("request from %s failed", peer, exc_info=True)
        finally:
            _close(sock)
            self._forget(peer)

    # -- socketserver's interface ------------------------------------------
    def shutdown(self):
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._stopped.wait()

    def server_close(self):
        self._stop.set()
        self._pool.shutdown(wait=False)
        for sock in (self.socket, self._wake_r, self._wake_w):
            _close(sock)
        self._selector.close()


class _Request:
    """What a BaseHTTPRequestHandler gets as its request: the head already read, the socket to answer on."""

    def __init__(self, sock, head):
        self.sock = sock
        self.head = head

    def makefile(self, mode, bufsize=-1):  # StreamRequestHandler.setup() asks for rfile and wfile
        if "r" in mode:
            return io.BytesIO(self.head)
        return _Writer(self.sock)

    def __getattr__(self, name):  # settimeout, setsockopt, ... of the socket itself
        return getattr(self.sock, name)


class _Writer(io.BufferedIOBase):
    """Unbuffered writes that send everything (within the socket's timeout) or raise."""

    def __init__(self, sock):
        super().__init__()
        self._sock = sock

    def writable(self):
        return True

    def write(self, data):
        self._sock.sendall(data)
        return len(data)


def _close(sock):
    try:
        sock.close()
    except OSError:
        pass
