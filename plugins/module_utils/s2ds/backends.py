# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What each proxy is, whatever runs it: file names, commands, signals, template.

Runtimes (process, docker, janus) ask a Backend how to start, check and
reload its proxy; they never hard-code a proxy themselves. The kernel data
path (``nftables``) is a Backend too: its "config" is a JSON ruleset built
by :mod:`.templates.nftables`, and only the ``kernel`` runtime applies it.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import re
import signal

try:
    import jinja2
except ImportError:  # reported by callers through HAS_JINJA2
    jinja2 = None

from . import proxy_reports
from .errors import S2DSError, quoted
from .templates import haproxy, nginx, nftables, stunnel

PSK_FILE = "psk.txt"

# Defaults of the tunables every template receives; measured in bench/.
TUNING = {
    "maxconn": 4096,
    "haproxy_bufsize": 262144,
    "nginx_buffer_size": "256k",
    "nginx_workers": 1,
    "nginx_stream_module": "/usr/lib/nginx/modules/ngx_stream_module.so",
    # encryption tls: empty means OpenSSL's defaults (TLS 1.3: AES-256-GCM, CHACHA20-POLY1305,
    # AES-128-GCM; TLS 1.2: ECDHE with AES-GCM or CHACHA20); bench/tls.py measures the choices.
    "tls_ciphersuites": "",
    "tls_ciphers": "",
    "haproxy_ssl_maxrecord": 0,
    "haproxy_nbthread": 0,
}

# OpenSSL's names of the versions ``tls_version`` accepts.
TLS_PROTOCOL_NAMES = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}


@dataclasses.dataclass(frozen=True)
class PskCompat:
    """What another SciStream implementation's stunnel sessions speak, for ``psk_compat``.

    Facts, not code, from upstream's templates: the PSK identity, how the key
    is derived from the uid, and the cipher (the TLS version is 1.2 in both).
    """

    identity: str
    key_from_uid: object
    cipher: str
    warning: str


#: SciStream 1.2 (scistream-proto: src/s2ds/stunnel.conf.j2, src/s2ds/subproc.py): PSKsecrets line
#: ``client1:<uid without dashes>``, ``sslVersionMax = TLSv1.2``, ``ciphers = eNULL``, ``securityLevel = 0``.
PSK_COMPAT = {
    "scistream-1.2": PskCompat(
        identity="client1", key_from_uid=lambda uid: uid.replace("-", ""), cipher="eNULL",
        warning="psk_compat scistream-1.2 for session %s: the stream is authenticated but NOT encrypted (a null "
                "cipher, as SciStream 1.2 uses), and its key is the uid itself; use it only to reach a gateway "
                "that runs upstream SciStream, over a network you trust"),
}


def _haproxy_address(host, port):
    # HAProxy reads "ipv6@addr:port" unambiguously; plain "host:port" otherwise.
    return "ipv6@%s:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def _nginx_address(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def _stunnel_address(host, port):
    # stunnel splits host and port at the last colon, IPv6 included.
    return "%s:%d" % (host, port)


# What each proxy's config syntax gives a meaning to (besides whitespace, which ends a word or a line):
# HAProxy: '#' starts a comment, quotes and '\\' quote and escape, '$' and braces expand environment
# variables, '%' and parentheses are sample and log-format syntax, ',' separates arguments.
HAPROXY_UNSAFE = "#\"'\\{}$%(),"
# NGINX: ';' ends a directive, braces open and close blocks, quotes and '\\' quote and escape,
# '$' is a variable, '#' a comment.
NGINX_UNSAFE = ";{}\"'$#\\"
# stunnel: a line is 'key = value' or '[section]'; ';' and '#' start comments, '=' splits the line.
STUNNEL_UNSAFE = ";#[]=\"'\\"


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    config_name: str
    template: str
    protocols: tuple
    address: object
    #: The image containers use unless told otherwise: the official one where
    #: there is one; stunnel has none, so the collection's own (images/stunnel).
    default_image: str
    reload_signal: object = None  # None: the proxy is restarted to apply a change
    stop_signal: object = signal.SIGTERM
    uses_psk: bool = False
    #: Values of ``encryption`` this proxy supports, and why it has no more.
    encryptions: tuple = ("none",)
    encryption_note: str = ""
    #: Where the TLS material goes in the run dir: (part, file name) for cert, key and ca;
    #: parts that share a file name are written into it in that order.
    tls_files: tuple = ()
    #: The runtimes that can run it; the first is the default.
    runtimes: tuple = ("process", "docker", "janus")
    #: Builds the config text from a record instead of a Jinja2 template.
    render: object = None
    #: SessionSpec options this backend refuses, with why.
    rejects: tuple = ()
    #: Targets must be IP addresses (no host names).
    ip_targets_only: bool = False
    #: A changed config replaces the running one in place, atomically.
    replaces_in_place: bool = False
    #: Characters of the proxy's config syntax that no rendered value may hold (whitespace and
    #: control characters never may): the renderer's backstop, whatever path a value came by.
    unsafe_characters: str = ""
    #: The ``psk_compat`` modes (keys of PSK_COMPAT) this backend can speak.
    psk_compat: tuple = ()
    #: ``f(paths, ports)`` -> per listener, the proxy's own counts of failed connections
    #: (:mod:`.proxy_reports`), or None where it keeps no report on this host.
    report_errors: object = None
    #: The proxy's command lines, each element a word or a whole placeholder ({config}, {log}, {pid}):
    #: in the foreground, as a daemon writing its (master) pid, and its config checker (None: it has none).
    foreground_command: tuple = ()
    daemon_command: tuple = ()
    check_command: tuple = None

    def protocols_for(self, encryption):
        """What each listener carries: TLS runs over TCP, so an encrypted session carries no UDP (no DTLS)."""
        return ("tcp",) if encryption == "tls" else self.protocols

    def tls_paths(self, run_dir):
        """``{"cert": path, "key": path, "ca": path}`` as the proxy sees them."""
        return {part: run_dir + "/" + name for part, name in self.tls_files}

    def key_files(self, spec):
        """The files beside the config that hold keys or certificates: ``{name: text}``."""
        files = {}
        if self.uses_psk:
            files[PSK_FILE] = psk_file_content(spec.uid, spec.effective_psk, spec.psk_identity)
        if spec.tls is not None:
            for part, name in self.tls_files:
                files[name] = files.get(name, "") + getattr(spec.tls, part)
        return files

    def key_file_names(self):
        return ([PSK_FILE] if self.uses_psk else []) + sorted({name for dummy, name in self.tls_files})

    def file_mode(self, name):
        """0600 for a file that holds a key, 0644 for the config and certificates."""
        secret = {PSK_FILE} | {n for part, n in self.tls_files if part == "key"}
        return 0o600 if name in secret else 0o644

    @property
    def reloadable(self):
        """A changed config is applied without a restart."""
        return self.reload_signal is not None or self.replaces_in_place

    @staticmethod
    def _argv(command, **values):
        """``command`` with its placeholder elements replaced (never inside a word: a path may hold braces)."""
        return [values.get(word, word) for word in command]

    def foreground_argv(self, config_path, log_file="stderr"):
        return self._argv(self.foreground_command, **{"{config}": config_path, "{log}": log_file})

    def daemon_argv(self, config_path, pid_file, log_file):
        """Start as a daemon that writes its (master) pid to ``pid_file``."""
        return self._argv(self.daemon_command, **{"{config}": config_path, "{pid}": pid_file, "{log}": log_file})

    def check_argv(self, config_path, log_file="stderr"):
        """The proxy's own config checker, or None where it has none (stunnel)."""
        if self.check_command is None:
            return None
        return self._argv(self.check_command, **{"{config}": config_path, "{log}": log_file})


BACKENDS = {
    # HAProxy takes certificate and key in one PEM file.
    "haproxy": Backend("haproxy", "haproxy.cfg", haproxy.TEMPLATE, ("tcp",), _haproxy_address, "haproxy:lts",
                       reload_signal=signal.SIGUSR2, unsafe_characters=HAPROXY_UNSAFE, encryptions=("none", "tls"),
                       report_errors=proxy_reports.haproxy_report,
                       tls_files=(("cert", "tls.pem"), ("key", "tls.pem"), ("ca", "tls-ca.crt")),
                       foreground_command=("haproxy", "-W", "-db", "-f", "{config}"),
                       daemon_command=("haproxy", "-W", "-D", "-p", "{pid}", "-f", "{config}"),
                       check_command=("haproxy", "-c", "-f", "{config}")),
    "nginx": Backend("nginx", "nginx.conf", nginx.TEMPLATE, ("tcp", "udp"), _nginx_address, "nginx:stable",
                     reload_signal=signal.SIGHUP, unsafe_characters=NGINX_UNSAFE, encryptions=("none", "tls"),
                     report_errors=proxy_reports.nginx_report,
                     tls_files=(("cert", "tls.crt"), ("key", "tls.key"), ("ca", "tls-ca.crt")),
                     foreground_command=("nginx", "-e", "{log}", "-c", "{config}", "-g", "daemon off;"),
                     daemon_command=("nginx", "-e", "{log}", "-c", "{config}"),
                     check_command=("nginx", "-t", "-q", "-e", "{log}", "-c", "{config}")),
    "stunnel": Backend("stunnel", "stunnel.conf", stunnel.TEMPLATE, ("tcp",), _stunnel_address,
                       "scistream/stunnel:local",
                       uses_psk=True, unsafe_characters=STUNNEL_UNSAFE, psk_compat=("scistream-1.2",),
                       report_errors=proxy_reports.stunnel_report,
                       encryption_note="stunnel always encrypts between the gateways, with its pre-shared key (psk)",
                       foreground_command=("stunnel", "{config}"), daemon_command=("stunnel", "{config}")),
    "nftables": Backend("nftables", "nftables.json", None, ("tcp", "udp"), None, None,
                        runtimes=("kernel",), render=lambda record: json.dumps(nftables.ruleset(record), indent=1) + "\n",
                        rejects=(("psk", "backend nftables forwards in clear and takes no psk; use backend stunnel "
                                         "for an encrypted path"),
                                 ("template", "backend nftables builds its ruleset itself and takes no template")),
                        ip_targets_only=True, replaces_in_place=True),
}


def get_backend(name):
    return BACKENDS[name]


HAS_JINJA2 = jinja2 is not None


@functools.lru_cache(maxsize=8)
def _inert_text(unsafe):
    """A pattern for text of printable ASCII, no whitespace and none of ``unsafe``."""
    allowed = "".join(chr(code) for code in range(0x21, 0x7f) if chr(code) not in unsafe)
    return re.compile("[%s]*" % re.escape(allowed))


def safe_value(backend_name, unsafe, value):
    """``value`` as rendered text, refused when it could change the config's structure.

    The Jinja2 ``finalize`` of every proxy template: each ``{{ ... }}`` passes
    here, so no value (from the grammar, a record on disk, a tunable or a
    custom template's variables) writes a new word, line, section or comment.
    Printable ASCII only, no whitespace, none of the proxy's ``unsafe`` characters.
    """
    text = "" if value is None else str(value)
    if _inert_text(unsafe).fullmatch(text):
        return text
    char = next(c for c in text if not "!" <= c <= "~" or c in unsafe)
    raise S2DSError("refusing to render %s into a %s config: it holds %r, which the proxy would read as "
                    "syntax" % (quoted(text), backend_name, char), field="config", value=text)


def _environment(backend_name=None, unsafe=""):
    """A Jinja2 environment; with a backend, every rendered value goes through ``safe_value``."""
    if jinja2 is None:
        raise S2DSError("Jinja2 is required to render proxy configurations; install python3-jinja2")
    finalize = functools.partial(safe_value, backend_name, unsafe) if backend_name else None
    return jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, autoescape=False, finalize=finalize)


def render_config(backend, record, paths, psk_cipher, template_text=None, tls=None, psk_identity=None):
    """The proxy config of ``record`` for ``backend``, as text.

    ``paths`` says where the proxy sees its files (they differ between a host
    process and a container): ``run_dir``, ``pid_file``, ``log_file``,
    ``psk_file`` and ``foreground``. ``template_text`` replaces the built-in
    template; it receives the same variables. ``tls`` (a TLSMaterial) turns
    on encryption tls: the template gets ``encryption``, ``tls_version`` and
    ``tls_files`` (paths of cert, key and ca), and each listener the
    ``target_host`` it dials, with ``target_is_ip``, for name checks and SNI.
    A backend with its own ``render`` (nftables) builds its config from the record alone.
    """
    if backend.render is not None:
        return backend.render(record)
    targets = record.targets
    # The name a target was resolved from is what TLS checks and sends as SNI; the proxy dials the address.
    names = record.target_names or [None] * len(targets)
    listeners = [
        {
            "ip": record.listener_ip,
            "port": port,
            "bind_address": backend.address(record.listener_ip, port),
            "target": targets[i % len(targets)],
            "target_address": _target_address(backend, targets[i % len(targets)]),
            "target_host": names[i % len(targets)] or _target_host(targets[i % len(targets)]),
            "target_is_ip": _is_ip(names[i % len(targets)] or _target_host(targets[i % len(targets)])),
        }
        for i, port in enumerate(record.ports)
    ]
    context = dict(TUNING)
    context.update(paths)
    # Where HAProxy keeps its stats socket (for the error counts); only where the runtime gives one.
    context.setdefault("stats_socket", None)
    context.update(uid=record.uid, role=record.role, backend=backend.name, listeners=listeners,
                   psk_identity=psk_identity or "scistream-" + record.uid, psk_cipher=psk_cipher,
                   encryption="tls" if tls is not None else "none",
                   tls_version=TLS_PROTOCOL_NAMES[tls.version] if tls is not None else None,
                   tls_files=backend.tls_paths(paths["run_dir"]) if tls is not None else {})
    return render_text(template_text or backend.template, context, "template", backend.name, backend=backend)


@functools.lru_cache(maxsize=16)
def _compiled(template_text, backend_name=None, unsafe=""):
    """A template compiled once per process (a batch renders the same one for every session)."""
    return _environment(backend_name, unsafe).from_string(template_text)


def render_text(template_text, variables, field, value, backend=None):
    """Render a Jinja2 template; a template error names ``field`` and ``value``.

    With ``backend`` (a proxy config) every value is checked by ``safe_value``.
    """
    compiled = _compiled(template_text, backend.name, backend.unsafe_characters) if backend else _compiled(template_text)
    try:
        return compiled.render(variables)
    except jinja2.TemplateError as exc:
        raise S2DSError("%s %r cannot be rendered: %s" % (field, value, exc), field=field, value=value) from None


def _target_host(target_text):
    return target_text.rpartition(":")[0].strip("[]")


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _target_address(backend, target_text):
    host, dummy, port = target_text.rpartition(":")
    return backend.address(host.strip("[]"), int(port))


def psk_file_content(uid, psk, identity=None):
    """stunnel's PSKsecrets line: ``identity:key`` (the identity ``scistream-<uid>`` unless given)."""
    return "%s:%s\n" % (identity or "scistream-" + uid, psk)
