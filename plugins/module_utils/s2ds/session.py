# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Sessions: what a caller asks for (SessionSpec) and what a gateway keeps (SessionRecord).

Every input is validated here, once, by one grammar (patterns matched whole,
ASCII only) into typed values; the rest of the core trusts them, and the
renderers refuse anything unsafe as a backstop (backends.py). A uid is any
1-64 characters of ``A-Za-z0-9._-``; ``session_key`` turns it into the one
name used for its files, units, containers and chains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re

from .backends import BACKENDS as _BACKEND_TABLE, PSK_COMPAT, get_backend
from .errors import invalid
# session_key is re-exported: the core's one uid -> name mapping, beside the grammar that makes uids.
from .names import is_canonical_uuid, session_key  # pylint: disable=unused-import

ROLES = ("PROD", "CONS")
BACKENDS = tuple(_BACKEND_TABLE)  # their names, in the order backends.py lists them
RUNTIMES = ("process", "docker", "janus", "kernel")
ENCRYPTIONS = ("none", "tls")
TLS_VERSIONS = ("1.3", "1.2")
#: The defaults of a session's options, declared once: SessionSpec, SessionSpec.build and the modules' spec use them.
DEFAULTS = dict(num_conn=5, listener_ip="0.0.0.0", port_range="5100-5200", backend="haproxy",
                psk_cipher="PSK-AES128-GCM-SHA256", encryption="none", tls_version="1.3")
DEFAULT_PORT_RANGE = DEFAULTS["port_range"]
DEFAULT_PSK_CIPHER = DEFAULTS["psk_cipher"]
DEFAULT_TLS_VERSION = DEFAULTS["tls_version"]

# The grammar: every pattern is matched whole (re.fullmatch) and ASCII only, so that no
# newline, no Unicode digit ('²', '٥') and no zone id ('%...') gets through.
#: Any uid an upstream SciStream client may send (its Go client sends dashless hex).
UID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
_UID_RE = re.compile(UID_PATTERN)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"  # no leading zeros: "010" is octal to some
_IPV4_RE = re.compile(r"%s(?:\.%s){3}" % (_OCTET, _OCTET))
# Hex digits, colons and an embedded IPv4 tail; ipaddress checks the rest. No '%': no zone id.
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(r"(?:%s\.)*%s\.?" % (_LABEL, _LABEL))
_PORT_RE = re.compile(r"[1-9][0-9]{0,4}")
_PORT_RANGE_RE = re.compile(r" *([0-9]{1,5}) *- *([0-9]{1,5}) *")
_NUM_RE = re.compile(r"[0-9]{1,9}")
_BRACKETED_RE = re.compile(r"\[([^\]]*)\]:([^:]*)")
_PSK_CIPHER_RE = re.compile(r"[A-Za-z0-9_:+!-]{1,200}")


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a listener forwards to: an IPv4/IPv6 address or a host name, and a port.

    Only the grammar (``parse_target``) makes these from text; ``str()`` gives
    the canonical ``host:port`` / ``[v6]:port`` that ``parse_target`` reads back.
    """

    host: str
    port: int
    #: The host name ``host`` was resolved from (by the target policy), else None: TLS checks it and sends it as SNI.
    name: str = None

    @property
    def is_ipv6(self):
        return ":" in self.host

    def __str__(self):
        return "[%s]:%d" % (self.host, self.port) if self.is_ipv6 else "%s:%d" % (self.host, self.port)


def _text(field, value):
    """``value`` as text, or refused: the grammar reads strings (and ints, for ports), nothing else."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise invalid(field, value, "must be a string")
    return str(value)


def parse_uid(value):
    """A session id: 1-64 characters of ``A-Z a-z 0-9 . _ -``.

    A UUID is case folded to its canonical 8-4-4-4-12 form, so sessions made
    before any uid was accepted keep their names. Any other uid is kept as it
    is (case matters) and only ever reaches a name through ``session_key``.
    """
    text = _text("uid", value) if value is not None else ""
    if not _UID_RE.fullmatch(text):
        raise invalid("uid", value, "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-', "
                                    "such as a UUID 4f6c1b7e-2a3d-4c5e-9f00-1234567890ab")
    folded = text.lower()
    return folded if is_canonical_uuid(folded) else text


def parse_choice(field, value, choices):
    if value not in choices:
        raise invalid(field, value, "must be one of %s" % ", ".join(choices))
    return value


def parse_port(field, value, whole=None):
    """A decimal port 1-65535: ASCII digits, no sign, no space, no leading zero.

    ``whole`` is the value to name in the error when the port is part of it.
    """
    text = _text(field, value)
    if not _PORT_RE.fullmatch(text) or int(text) > 65535:
        raise invalid(field, value if whole is None else whole, "port must be a number between 1 and 65535")
    return int(text)


def parse_count(field, value, low, high):
    """A whole number ``low``-``high`` given as an int or as ASCII digits."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and _NUM_RE.fullmatch(value))):
        raise invalid(field, value, "is not a whole number")
    number = int(value)
    if not low <= number <= high:
        raise invalid(field, value, "must be between %d and %d" % (low, high))
    return number


#: Units of a duration and their seconds: ``90s``, ``30m``, ``12h``, ``7d``.
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest lifetime or idle timeout the grammar takes (30 days): beyond it, release the session yourself.
MAX_DURATION = 30 * 86400
_DURATION_RE = re.compile(r"(0|[1-9][0-9]{0,7})([smhd]?)")


def parse_duration(field, value, maximum=MAX_DURATION):
    """A duration into whole seconds: ``90s``, ``30m``, ``12h``, ``7d``, or bare seconds (``3600`` or an int).

    ASCII digits, no sign, no space, no leading zero, no fraction; ``0`` (in any unit) means none and gives 0.
    At most ``maximum`` seconds. None stays None (not set).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise invalid(field, value, "must be a duration such as 90s, 30m, 12h or 7d")
    match = _DURATION_RE.fullmatch(str(value)) if isinstance(value, str) or value >= 0 else None
    if not match:
        raise invalid(field, value, "must be a duration such as 90s, 30m, 12h or 7d (a whole number and one of "
                                    "the units s, m, h, d; a bare number is seconds)")
    seconds = int(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    if seconds > maximum:
        raise invalid(field, value, "must be at most %s" % format_duration(maximum))
    return seconds


def format_duration(seconds):
    """``seconds`` in the largest unit that divides it (``parse_duration`` reads it back): 43200 -> ``12h``."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % DURATION_UNITS[unit] == 0:
            return "%d%s" % (seconds // DURATION_UNITS[unit], unit)
    return "%ds" % seconds


#: Units of a rate and their bits per second (decimal SI): ``500Mbit``, ``2Gbit``, ``20MB/s``.
RATE_UNITS = {"bit": 1, "Kbit": 10 ** 3, "Mbit": 10 ** 6, "Gbit": 10 ** 9, "Tbit": 10 ** 12,
              "B/s": 8, "KB/s": 8 * 10 ** 3, "MB/s": 8 * 10 ** 6, "GB/s": 8 * 10 ** 9}
#: The bounds of a rate (bits per second): 8Kbit (1 kB/s, the protocol's unit) to 32Gbit (HTB's 32-bit rate
#: is bytes per second, at most 4294967295, about 34 Gbit/s).
MIN_RATE = 8 * 10 ** 3
MAX_RATE = 32 * 10 ** 9
_RATE_RE = re.compile(r"(0|[1-9][0-9]{0,12})(%s)" % "|".join(re.escape(unit) for unit in RATE_UNITS))
_RATE_HELP = "a whole number and one of the units %s, such as 500Mbit, 2Gbit or 20MB/s" % ", ".join(RATE_UNITS)
#: The protocol's ``Request.rate`` is in kB/s (upstream's user guide: "kb/s", its quickstart: ``--rate=20000  #
#: 20 MB/s``): one unit is 1000 bytes per second.
PROTOCOL_RATE_UNIT = 8000


def parse_rate(field, value):
    """A rate into whole bits per second: ``500Mbit``, ``2Gbit``, ``20MB/s`` (decimal SI; ``bit`` ... ``Tbit``
    per second, ``B/s`` ... ``GB/s`` bytes per second).

    ASCII digits, no sign, no space, no leading zero, no fraction, the unit always given (a bare number is
    refused: bits or bytes?); ``0`` (bare or in any unit) means none and gives 0. Between MIN_RATE and MAX_RATE
    otherwise. None stays None (not set).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field, value, "must be a rate: %s" % _RATE_HELP)
    if value == "0":
        return 0
    match = _RATE_RE.fullmatch(value)
    if not match:
        raise invalid(field, value, "must be a rate: %s" % _RATE_HELP)
    bits = int(match.group(1)) * RATE_UNITS[match.group(2)]
    if bits and not MIN_RATE <= bits <= MAX_RATE:
        bounds = (format_rate(MIN_RATE), format_rate(MAX_RATE))
        raise invalid(field, value, "must be between %s and %s (or 0 for none)" % bounds)
    return bits


def format_rate(bits):
    """``bits`` per second in the largest bit unit that divides it (``parse_rate`` reads it back): ``500Mbit``."""
    for unit in ("Tbit", "Gbit", "Mbit", "Kbit"):
        if bits and bits % RATE_UNITS[unit] == 0:
            return "%d%s" % (bits // RATE_UNITS[unit], unit)
    return "%dbit" % bits


def rate_for_protocol(bits):
    """``bits`` per second as the protocol's ``Request.rate`` (kB/s, rounded down, at least 1); None gives 0 (none)."""
    return max(1, bits // PROTOCOL_RATE_UNIT) if bits else 0


def protocol_rate(value):
    """The protocol's ``Request.rate`` (int32, kB/s) in bits per second; 0 or less (none asked) gives None."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid("rate", value, "must be a whole number of kB/s")
    return value * PROTOCOL_RATE_UNIT if value > 0 else None


_DEVICE_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")


def parse_devices(field, values):
    """Network device names (Linux: 1-15 characters, here of ``A-Za-z0-9_.:@-``, not ``.`` nor ``..``); a
    comma-separated text is split. None or empty stays None (the default)."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [v for v in values.split(",") if v]
    if not isinstance(values, (list, tuple)):
        raise invalid(field, values, "must be a list of network device names such as eth0")
    names = []
    for value in values:
        if not isinstance(value, str) or not _DEVICE_RE.fullmatch(value) or value in (".", ".."):
            raise invalid(field, value, "must be a network device name: 1 to 15 characters of A-Z, a-z, 0-9, "
                                        "'_', '.', ':', '@' and '-', such as eth0")
        if value not in names:
            names.append(value)
    return names or None


def parse_port_range(value):
    """``"start-end"`` (inclusive) within 1-65535, start <= end."""
    match = _PORT_RANGE_RE.fullmatch(_text("port_range", value))
    if not match:
        raise invalid("port_range", value, "must look like 5100-5200")
    start, end = int(match.group(1)), int(match.group(2))
    if not (1 <= start <= 65535 and 1 <= end <= 65535):
        raise invalid("port_range", value, "ports must be between 1 and 65535")
    if start > end:
        raise invalid("port_range", value, "start is greater than end")
    return start, end


def _ipv4(text):
    """The IPv4 address ``text`` in dotted-quad form, or None."""
    return str(ipaddress.IPv4Address(text)) if _IPV4_RE.fullmatch(text) else None


def _ipv6(text):
    """The IPv6 address ``text`` (no zone id) in compressed form, or None."""
    if not _IPV6_RE.fullmatch(text):
        return None
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def parse_ip(field, value):
    """An IPv4 dotted quad (no leading zeros) or an IPv6 address without zone id, canonical."""
    text = _text(field, value)
    address = _ipv4(text) or _ipv6(text)
    if address is None:
        why = "a zone id (%...) is not accepted" if "%" in text else "is not an IPv4 or IPv6 address"
        raise invalid(field, value, why)
    return address


def parse_hostname(field, value, whole=None):
    """A host name per RFC 1123: labels of 1-63 letters, digits and inner '-', at most 253 in all.

    The last label is not all digits (``1.2.3`` is no name, nor an address).
    """
    text = _text(field, value)
    name = text[:-1] if text.endswith(".") else text
    if len(name) > 253 or not _HOSTNAME_RE.fullmatch(text) or name.rpartition(".")[2].isdigit():
        raise invalid(field, value if whole is None else whole, "host is neither an IPv4 address nor a valid host name")
    return text


def parse_target(value, field="targets"):
    """``host:port``, ``[v6addr]:port`` or ``name:port`` into a Target."""
    text = _text(field, value)
    if text.startswith("["):
        match = _BRACKETED_RE.fullmatch(text)
        if not match:
            raise invalid(field, value, "must look like [2001:db8::1]:5000")
        host = _ipv6(match.group(1))
        if host is None:
            why = "a zone id (%...) is not accepted" if "%" in match.group(1) else "brackets must hold an IPv6 address"
            raise invalid(field, value, why)
        return Target(host, parse_port(field, match.group(2), whole=value))
    host, sep, port = text.rpartition(":")
    if not sep or not host or ":" in host:
        raise invalid(field, value, "must be host:port, IPv4:port or [IPv6]:port")
    host = _ipv4(host) or parse_hostname(field, host, whole=value)
    return Target(host, parse_port(field, port, whole=value))


@dataclasses.dataclass(frozen=True)
class TargetRule:
    """One rule of a target policy (``allowed_targets``): a network and a port range it allows.

    Only the grammar (``parse_target_rule``) makes these from text; ``str()`` gives the canonical form that
    ``parse_target_rule`` reads back: ``10.0.3.0/24``, ``10.0.3.10/32:5074-5075``, ``[2001:db8::/32]:5000``.
    """

    network: object  # ipaddress.IPv4Network or IPv6Network
    ports: tuple = (1, 65535)

    def allows(self, address, port):
        return address.version == self.network.version and address in self.network and self.ports[0] <= port <= self.ports[1]

    def __str__(self):
        if self.ports == (1, 65535):
            return str(self.network)
        ports = "%d" % self.ports[0] if self.ports[0] == self.ports[1] else "%d-%d" % self.ports
        return ("[%s]:%s" if self.network.version == 6 else "%s:%s") % (self.network, ports)


_RULE_PREFIX_RE = re.compile(r"[0-9]|[1-9][0-9]|1[01][0-9]|12[0-8]")
_RULE_PORTS_RE = re.compile(r"([^-]*)(?:-([^-]*))?")
_RULE_EXAMPLES = "such as 10.0.3.0/24, 10.0.3.10/32:5074-5075, 2001:db8::/32 or [2001:db8::/32]:5000"


def _rule_network(field, value, text):
    address, slash, prefix = text.partition("/")
    host = _ipv4(address) or _ipv6(address)
    if host is None:
        why = "a zone id (%...) is not accepted" if "%" in address else "needs an IPv4 or IPv6 network"
        raise invalid(field, value, "%s, %s" % (why, _RULE_EXAMPLES))
    version = 6 if ":" in host else 4
    if slash and (not _RULE_PREFIX_RE.fullmatch(prefix) or int(prefix) > (128 if version == 6 else 32)):
        raise invalid(field, value, "prefix length must be 0 to %d" % (128 if version == 6 else 32))
    length = int(prefix) if slash else (128 if version == 6 else 32)
    try:
        return ipaddress.ip_network("%s/%d" % (host, length))
    except ValueError:
        network = ipaddress.ip_network("%s/%d" % (host, length), strict=False)
        raise invalid(field, value, "has host bits set after /%d: did you mean %s?" % (length, network)) from None


def _rule_ports(field, value, text):
    match = _RULE_PORTS_RE.fullmatch(text)
    low = parse_port(field, match.group(1), whole=value)
    high = low if match.group(2) is None else parse_port(field, match.group(2), whole=value)
    if low > high:
        raise invalid(field, value, "port range start is greater than its end")
    return low, high


def parse_target_rule(value, field="allowed_targets"):
    """A target policy rule: ``NET``, ``NET:PORTS`` or ``[NET6]:PORTS`` into a TargetRule.

    ``NET`` is an address with an optional ``/prefix`` (a bare address is one host) and no host bits
    set; ``PORTS`` is one port or ``low-high`` (every port when left out). An IPv6 network takes
    brackets when ports follow.
    """
    text = _text(field, value)
    if text.startswith("["):
        inner, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")) or rest == ":":
            raise invalid(field, value, "must look like [2001:db8::/32] or [2001:db8::/32]:5000-5010")
        network = _rule_network(field, value, inner)
        if network.version != 6:
            raise invalid(field, value, "brackets must hold an IPv6 network")
        return TargetRule(network, _rule_ports(field, value, rest[1:]) if rest else (1, 65535))
    if text.count(":") > 1:  # an IPv6 network without ports
        if ":" in text.partition("/")[2]:
            raise invalid(field, value, "an IPv6 network with ports needs brackets: [2001:db8::/32]:5000")
        return TargetRule(_rule_network(field, value, text))
    net, sep, ports = text.partition(":")
    network = _rule_network(field, value, net)
    if network.version != 4:
        raise invalid(field, value, "an IPv6 network with ports needs brackets: [2001:db8::/32]:5000")
    return TargetRule(network, _rule_ports(field, value, ports) if sep else (1, 65535))


def parse_target_rules(values, field="allowed_targets"):
    """A list of rules (a comma-separated text is split); None stays None (the policy's default)."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [v for v in values.split(",") if v]
    if not isinstance(values, (list, tuple)):
        raise invalid(field, values, "must be a list of rules, %s" % _RULE_EXAMPLES)
    return tuple(parse_target_rule(v, field) for v in values)


def _backend_runtime(backend, runtime):
    """The runtime asked for, or the backend's default; one the backend can run in."""
    allowed = get_backend(backend).runtimes
    if runtime is None:
        return allowed[0]
    runtime = parse_choice("runtime", runtime, RUNTIMES)
    if runtime not in allowed:
        raise invalid("runtime", runtime, "backend %s runs only with runtime %s (or leave runtime unset)" % (
            backend, " or ".join(allowed)))
    return runtime


def _check_backend_options(backend_name, targets, listener_ip, **options):
    """Options the backend refuses, and targets it cannot reach (kernel NAT needs IP addresses)."""
    backend = get_backend(backend_name)
    for field, why in backend.rejects:
        if options.get(field) is not None:
            raise invalid(field, "(hidden)" if field == "psk" else options[field], why)
    if not backend.ip_targets_only:
        return
    for target in targets:
        try:
            version = ipaddress.ip_address(target.host).version
        except ValueError:
            raise invalid("targets", str(target), "backend %s needs an IP address, not a host name" % backend.name) from None
        listener = ipaddress.ip_address(listener_ip)  # parsed already
        if not listener.is_unspecified and listener.version != version:
            raise invalid("targets", str(target), "is IPv%d but listener_ip %s is IPv%d: the kernel does not translate "
                          "between address families" % (version, listener, listener.version))


@dataclasses.dataclass(frozen=True)
class TLSMaterial:
    """The PEM texts of a gateway's certificate, key and CA, read from the paths given.

    The key text never appears in a repr, a message or a record.
    """

    cert: str
    key: str = dataclasses.field(repr=False)
    ca: str
    version: str = DEFAULT_TLS_VERSION


# What each TLS file must hold: (option, PEM marker, what it is).
_TLS_FILES = (
    ("tls_cert", "-----BEGIN CERTIFICATE-----", "a PEM certificate"),
    ("tls_key", "PRIVATE KEY-----", "a PEM private key"),
    ("tls_ca", "-----BEGIN CERTIFICATE-----", "a PEM CA certificate"),
)


def read_tls_material(encryption, paths, version, backend):
    """Validate the encryption options into a TLSMaterial (or None for ``encryption: none``).

    ``paths`` maps tls_cert, tls_key and tls_ca to paths on this host. Errors
    name the option and the path, never a file's content.
    """
    encryption = parse_choice("encryption", encryption, ENCRYPTIONS)
    version = parse_choice("tls_version", str(version), TLS_VERSIONS)
    if encryption == "none":
        given = [name for name, dummy, dummy2 in _TLS_FILES if paths.get(name)]
        if given:
            raise invalid(given[0], paths[given[0]], "is only used with encryption tls (encryption is none)")
        return None
    supported = backend_encryptions(backend)
    if encryption not in supported:
        raise invalid("encryption", encryption, "backend %s does not support it: %s" % (backend, supported_note(backend)))
    texts = {}
    for name, marker, what in _TLS_FILES:
        path = paths.get(name)
        if not path:
            raise invalid(name, path, "is required with encryption tls")
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise invalid(name, path, "cannot be read: %s" % (getattr(exc, "strerror", None) or "not PEM text")) from None
        if marker not in text:
            raise invalid(name, path, "does not hold %s" % what)
        texts[name] = text if text.endswith("\n") else text + "\n"
    return TLSMaterial(cert=texts["tls_cert"], key=texts["tls_key"], ca=texts["tls_ca"], version=version)


def backend_encryptions(backend):
    return get_backend(backend).encryptions


def supported_note(backend):
    """Why ``backend`` has no TLS of its own, and which backends have it."""
    others = " or ".join(name for name, b in sorted(_BACKEND_TABLE.items()) if "tls" in b.encryptions)
    own = get_backend(backend).encryption_note
    return "%s; encryption tls is for backend %s" % (own, others) if own else "use backend %s" % others


def derived_psk(uid):
    """The pre-shared key both gateways derive from a uid when none is given.

    It is only as secret as the uid itself; callers warn about that.
    """
    return hashlib.sha256(("scistream-psk:" + uid).encode("ascii")).hexdigest()


@dataclasses.dataclass(frozen=True)
class SessionSpec:
    """A validated request for one session on one gateway."""

    uid: str
    role: str
    num_conn: int = DEFAULTS["num_conn"]
    listener_ip: str = DEFAULTS["listener_ip"]
    port_range: tuple = tuple(int(port) for port in DEFAULTS["port_range"].split("-"))
    targets: tuple = ()
    backend: str = DEFAULTS["backend"]
    runtime: str = "process"  # build() picks the backend's default when none is given
    psk: str = dataclasses.field(default=None, repr=False)
    psk_cipher: str = DEFAULT_PSK_CIPHER
    template: str = None
    template_text: str = dataclasses.field(default=None, repr=False, compare=False)
    encryption: str = DEFAULTS["encryption"]
    tls: TLSMaterial = dataclasses.field(default=None, repr=False)
    psk_compat: str = None
    #: Seconds a session lives after it was made or last renewed (None: for ever), and after the last byte
    #: counted through its listeners (None: never idle); see Gateway.expire.
    lifetime: int = None
    idle_timeout: int = None
    #: Seconds after its creation no renewal extends a session past (None: no such bound; the control server's
    #: --max_session_lifetime).
    max_lifetime: int = None
    #: Bits per second the session's stream may leave this gateway at (None: not shaped); see shaping.py.
    rate: int = None

    @classmethod
    def build(cls, uid, role, num_conn=DEFAULTS["num_conn"], listener_ip=DEFAULTS["listener_ip"],
              port_range=DEFAULTS["port_range"], targets=(), backend=DEFAULTS["backend"], runtime=None, psk=None,
              psk_cipher=DEFAULTS["psk_cipher"], template=None, encryption=DEFAULTS["encryption"], tls_cert=None,
              tls_key=None, tls_ca=None, tls_version=DEFAULTS["tls_version"], psk_compat=None,
              lifetime=None, idle_timeout=None, max_lifetime=None, rate=None):
        """Validate raw inputs (strings, as a user typed them) into a spec."""
        uid = parse_uid(uid)
        role = parse_choice("role", role, ROLES)
        num_conn = parse_count("num_conn", num_conn, 1, 1024)
        if targets is None:
            targets = ()
        if isinstance(targets, str):
            targets = [t for t in targets.split(",") if t]
        targets = tuple(parse_target(t) for t in targets)
        backend = parse_choice("backend", backend, BACKENDS)
        runtime = _backend_runtime(backend, runtime)
        listener_ip = parse_ip("listener_ip", listener_ip)
        _check_backend_options(backend, targets, listener_ip, psk=psk, template=template)
        if psk is not None:
            psk = str(psk)
            if len(psk) < 16 or any(c in psk for c in ":\r\n\0"):
                # Never echo the key itself.
                raise invalid("psk", "(hidden)", "must be at least 16 characters without ':' or line breaks")
        if not psk_cipher or not _PSK_CIPHER_RE.fullmatch(str(psk_cipher)) or "PSK" not in str(psk_cipher).upper():
            raise invalid("psk_cipher", psk_cipher, "must be an OpenSSL PSK cipher name such as %s" % DEFAULT_PSK_CIPHER)
        if psk_compat is not None:
            psk_cipher = _parse_psk_compat(psk_compat, backend, psk)
        tls = read_tls_material(encryption, {"tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": tls_ca},
                                tls_version, backend)
        template_text = None
        if template:
            try:
                with open(template, encoding="utf-8") as handle:
                    template_text = handle.read()
            except OSError as exc:
                raise invalid("template", template, "cannot be read: %s" % exc.strerror) from None
        # 0 (in any unit) is "none", as the control server's --session_lifetime 0.
        lifetime = parse_duration("lifetime", lifetime) or None
        idle_timeout = parse_duration("idle_timeout", idle_timeout) or None
        max_lifetime = parse_duration("max_lifetime", max_lifetime) or None
        rate = parse_rate("rate", rate) or None  # 0 is "none", as the protocol's 0
        return cls(uid=uid, role=role, num_conn=num_conn, listener_ip=listener_ip,
                   port_range=parse_port_range(port_range), targets=targets, backend=backend,
                   runtime=runtime, psk=psk, psk_cipher=str(psk_cipher), template=template,
                   template_text=template_text, encryption="tls" if tls else "none", tls=tls, psk_compat=psk_compat,
                   lifetime=lifetime, idle_timeout=idle_timeout, max_lifetime=max_lifetime,
                   rate=rate)

    @property
    def psk_is_derived(self):
        return self.psk is None

    @property
    def effective_psk(self):
        if self.psk_compat is not None:
            return PSK_COMPAT[self.psk_compat].key_from_uid(self.uid)
        return self.psk if self.psk is not None else derived_psk(self.uid)

    @property
    def psk_identity(self):
        """The PSK identity stunnel sends and looks up: ``scistream-<uid>``, or the compat mode's."""
        return PSK_COMPAT[self.psk_compat].identity if self.psk_compat is not None else "scistream-" + self.uid


def _parse_psk_compat(value, backend, psk):
    """A ``psk_compat`` mode the backend speaks, with no psk of its own; returns the mode's cipher."""
    modes = get_backend(backend).psk_compat
    if not modes:
        raise invalid("psk_compat", value, "backend %s has no pre-shared key; psk_compat is for backend stunnel" % backend)
    parse_choice("psk_compat", value, modes)
    if psk is not None:
        raise invalid("psk", "(hidden)", "psk_compat %s derives the key from the uid, as upstream does; leave psk "
                      "unset" % value)
    return PSK_COMPAT[value].cipher


@dataclasses.dataclass
class SessionRecord:
    """What a gateway keeps on disk for one session (no secrets)."""

    uid: str
    role: str
    backend: str
    runtime: str
    listener_ip: str
    ports: list
    targets: list = dataclasses.field(default_factory=list)
    config_sha256: str = None
    runtime_state: dict = dataclasses.field(default_factory=dict)
    encryption: str = "none"
    #: Who made the session (a control server's caller: a token's hash, a Globus identity), or None.
    owner: str = None
    #: The uid (and gid: the same number) the session's proxy runs as, from the runtime's pool (uidpool.py);
    #: None for a session without one (no pool, or a record written before the pool).
    proxy_uid: int = None
    #: The host name each target was resolved from (None for an address); empty when no target was a name.
    target_names: list = dataclasses.field(default_factory=list)
    #: The session's lifetime and idle timeout in seconds (None: none), as asked for.
    lifetime: int = None
    idle_timeout: int = None
    #: When (seconds since the epoch) the lifetime ends: renewed by the owner's req/hello/update and by a
    #: run that changes the session, never past ``max_expires_at`` (the bound from its creation). None: never.
    expires_at: int = None
    max_expires_at: int = None
    #: Idle bookkeeping: the bytes last counted through the listeners (None: not counted yet) and when
    #: that count last changed or the session was renewed (the idle timeout runs from there).
    idle_bytes: int = None
    idle_since: int = None
    #: Bits per second the session's stream may leave the gateway at (None: not shaped), as asked for.
    rate: int = None

    #: The fields a run keeps from the record it finds (the deadlines and the bookkeeping are not options).
    BOOKKEEPING = ("expires_at", "max_expires_at", "idle_bytes", "idle_since")

    @property
    def listeners(self):
        return [format_endpoint(self.listener_ip, port) for port in self.ports]

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def public(self):
        """What callers are shown: the record without runtime internals."""
        return {
            "uid": self.uid,
            "role": self.role,
            "backend": self.backend,
            "runtime": self.runtime,
            "listeners": self.listeners,
            "ports": list(self.ports),
            "targets": list(self.targets),
            "encryption": self.encryption,
            "owner": self.owner,
            "lifetime": self.lifetime,
            "idle_timeout": self.idle_timeout,
            "expires_at": self.expires_at,
            "rate": self.rate,
        }

    def deadline(self):
        """``(when, reason)``: the first moment the session expires and why (``lifetime`` or ``idle``), or
        ``(None, None)`` for a session that never does. Idle is measured from ``idle_since``."""
        candidates = []
        if self.expires_at is not None:
            candidates.append((self.expires_at, "lifetime"))
        if self.idle_timeout and self.idle_since is not None:
            candidates.append((self.idle_since + self.idle_timeout, "idle"))
        return min(candidates) if candidates else (None, None)


def format_endpoint(ip, port):
    return "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)
