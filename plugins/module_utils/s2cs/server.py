# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The S2CS process: command line, TLS, token check, and the gRPC server.

    python -m ansible_collections.scistream.gateway.plugins.module_utils.s2cs.server \\
        --listener_ip 10.0.2.1 --port 5000 --type haproxy --port_range 5100-5200 \\
        --server_cert server.crt --server_key server.key --state_dir /var/lib/scistream

Options follow the existing SciStream server's (``--listener_ip``, ``--port``,
``--type``, ``--server_cert``, ``--server_key``, ``--verbose``), plus
``--port_range``, ``--runtime`` and ``--state_dir``. TLS is on unless
``--insecure`` is given (for tests). Authentication is off unless tokens
(``--tokens_file``, one per line) or an introspection hook (``--auth_hook
package.module:function``, called with the token, true when valid) are given.
"""

from __future__ import annotations

import argparse
import hmac
import importlib
import logging
import os
import signal
import sys
import threading
from concurrent import futures

try:
    import grpc
    from . import scistream_pb2_grpc
    HAS_GRPC = True
except ImportError:  # reported by main()
    grpc = scistream_pb2_grpc = None
    HAS_GRPC = False

from ..s2ds.errors import S2DSError
from ..s2ds.gateway import Gateway
from ..s2ds.runtimes.process import ProcessRuntime
from . import metrics
from .control import LOG, ControlService, ControlServicer

# The names the existing SciStream server gives its data server types, for operators used to them.
BACKEND_ALIASES = {
    "haproxy": "haproxy", "haproxysubprocess": "haproxy",
    "nginx": "nginx", "nginxsubprocess": "nginx",
    "stunnel": "stunnel", "stunnelsubprocess": "stunnel",
}


def backend_name(text):
    name = BACKEND_ALIASES.get(str(text).lower())
    if name is None:
        raise argparse.ArgumentTypeError("--type %r: must be one of haproxy, nginx, stunnel" % text)
    return name


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


def read_tokens(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise SystemExit("--tokens_file %r cannot be read: %s" % (path, exc.strerror)) from None


class TokenChecker:
    """True for a token in ``tokens`` or one the ``hook`` accepts. Never logs a token."""

    def __init__(self, tokens=(), hook=None):
        self.tokens = [t.encode("utf-8") for t in tokens]
        self.hook = hook

    @property
    def enabled(self):
        return bool(self.tokens) or self.hook is not None

    def __call__(self, token):
        if not token:
            return False
        raw = token.encode("utf-8")
        # Compare with every token, so the time taken does not say which one nearly matched.
        matched = False
        for known in self.tokens:
            matched |= hmac.compare_digest(raw, known)
        if matched:
            return True
        if self.hook is not None:
            try:
                return bool(self.hook(token))
            except Exception:  # pylint: disable=broad-exception-caught
                LOG.exception("auth hook failed; the call is refused")
        return False


def bearer_token(metadata):
    """The token of the ``authorization`` metadata (``Bearer`` prefix optional)."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            value = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return value[7:].strip() if value.lower().startswith("bearer ") else value.strip()
    return ""


def auth_interceptor(checker):
    """A server interceptor that answers UNAUTHENTICATED unless ``checker`` accepts the call's token."""

    def deny(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid token in the authorization metadata")

    denied = grpc.unary_unary_rpc_method_handler(deny)

    class TokenInterceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation, handler_call_details):
            if checker(bearer_token(handler_call_details.invocation_metadata)):
                return continuation(handler_call_details)
            LOG.warning("%s refused: missing or invalid token", handler_call_details.method)
            return denied

    return TokenInterceptor()


def build_gateway(state_dir, process_supervisor="auto", image=None):
    """A Gateway over ``state_dir`` with the runtimes a control server offers (process, docker)."""

    def docker_runtime(session):
        from ..s2ds.runtimes.docker import HAS_DOCKER, DockerRuntime  # pylint: disable=import-outside-toplevel
        if not HAS_DOCKER:
            raise S2DSError("runtime docker needs the Docker SDK for Python in the server's environment",
                            field="runtime", value="docker")
        return DockerRuntime(image=image)

    return Gateway(state_dir, {"process": lambda session: ProcessRuntime(process_supervisor), "docker": docker_runtime})


class _Parser(argparse.ArgumentParser):
    """Reads ``@FILE``: one option per line; blank lines and ``#`` comments are skipped."""

    def convert_arg_line_to_args(self, arg_line):
        line = arg_line.strip()
        return [] if not line or line.startswith("#") else [line]


def parser():
    p = _Parser(prog="s2cs", fromfile_prefix_chars="@",
                description="SciStream control server (S2CS) on the collection's S2DS core. "
                            "@FILE reads options from FILE, one per line.")
    p.add_argument("--listener_ip", default="0.0.0.0", help="address the sessions' listeners bind to (default %(default)s)")
    p.add_argument("--control_ip", help="address the control server binds to (default: --listener_ip)")
    p.add_argument("--port", type=int, default=5000, help="control server port (default %(default)s)")
    p.add_argument("--type", dest="backend", type=backend_name, default="haproxy",
                   help="data server: haproxy, nginx or stunnel (default %(default)s)")
    p.add_argument("--runtime", default="process", choices=["process", "docker"], help="how proxies run")
    p.add_argument("--image", help="proxy image for --runtime docker (default: the backend's)")
    p.add_argument("--port_range", default="5100-5200", help="listener ports, start-end (default %(default)s)")
    p.add_argument("--state_dir", default="/var/lib/scistream", help="session state (default %(default)s)")
    p.add_argument("--process_supervisor", default="auto", choices=["auto", "systemd", "daemon"])
    p.add_argument("--server_cert", default="server.crt", help="TLS certificate (PEM)")
    p.add_argument("--server_key", default="server.key", help="TLS private key (PEM)")
    p.add_argument("--insecure", action="store_true", help="plaintext control channel: for tests only")
    p.add_argument("--tokens_file", help="accepted bearer tokens, one per line; auth is off without tokens or hook")
    p.add_argument("--auth_hook", help="token introspection: package.module:function(token) -> bool")
    p.add_argument("--psk_file", help="stunnel pre-shared key (default: derived from each session's uid)")
    p.add_argument("--hello_timeout", type=float, default=10.0, help="seconds a req waits for its hello")
    p.add_argument("--max_workers", type=int, default=64, help="concurrent calls (a req holds one until its hello)")
    p.add_argument("--pid_file", help="write the server's pid here once it listens")
    p.add_argument("--daemon", action="store_true", help="detach; exit 0 once the server listens (use with --pid_file)")
    p.add_argument("--log_file", help="log here instead of stderr")
    p.add_argument("--verbose", action="store_true", help="log every call")
    p.add_argument("--metrics_port", type=int, help="serve Prometheus metrics of the calls on this port (off by default)")
    p.add_argument("--metrics_address", default="127.0.0.1", help="address of --metrics_port (default %(default)s)")
    return p


def read_secret(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise SystemExit("%s cannot be read: %s" % (path, exc.strerror)) from None


def serve(args, ready=None):
    """Run the server until SIGTERM / SIGINT; ``ready`` (an Event) is set once it listens."""
    gateway = build_gateway(args.state_dir, args.process_supervisor, args.image)
    try:
        service = ControlService(gateway, listener_ip=args.listener_ip, port_range=args.port_range,
                                 backend=args.backend, runtime=args.runtime, hello_timeout=args.hello_timeout,
                                 psk=read_secret(args.psk_file) if args.psk_file else None)
    except S2DSError as exc:
        raise SystemExit("bad setting: %s" % exc) from None
    tokens = read_tokens(args.tokens_file) if args.tokens_file else []
    checker = TokenChecker(tokens, load_hook(args.auth_hook) if args.auth_hook else None)
    interceptors = [auth_interceptor(checker)] if checker.enabled else []
    interceptors = metrics.install(args, gateway) + interceptors  # first: it sees refused calls too
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.max_workers), interceptors=interceptors)
    scistream_pb2_grpc.add_ControlServicer_to_server(ControlServicer(service), server)
    host = args.control_ip or args.listener_ip
    address = "[%s]:%d" % (host, args.port) if ":" in host else "%s:%d" % (host, args.port)
    if args.insecure:
        LOG.warning("control channel is NOT encrypted (--insecure): for tests only")
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials([(read_secret(args.server_key).encode() + b"\n",
                                                    read_secret(args.server_cert).encode() + b"\n")])
        bound = server.add_secure_port(address, credentials)
    if not bound:
        raise SystemExit("cannot listen on %s" % address)
    if checker.enabled:
        LOG.info("authentication on: %d token(s)%s", len(tokens), " and hook %s" % args.auth_hook if args.auth_hook else "")
    else:
        LOG.warning("authentication is OFF: every client is accepted and the authorization metadata is ignored "
                    "(clients may show INVALID_TOKEN: that is their placeholder, not an error)")
    server.start()
    LOG.info("S2CS listening on %s: backend %s, runtime %s, listeners %s ports %s, state %s", address, args.backend,
             args.runtime, args.listener_ip, args.port_range, args.state_dir)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *a: stop.set())
    if ready is not None:
        ready.set()
    stop.wait()
    LOG.info("stopping (sessions stay; a restarted server takes them over)")
    service.shutdown()
    server.stop(grace=2).wait()


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
    args = parser().parse_args(argv)
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
