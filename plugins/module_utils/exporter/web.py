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
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading

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
