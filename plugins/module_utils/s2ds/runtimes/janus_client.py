# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ESnet Janus controller's HTTP API as the Janus runtime uses it (janus-dtnaas 1.1).

Everything Janus answers is parsed into :class:`JanusSession` (typed, checked)
before it is used. Every call goes through :class:`JanusClient` (requests,
basic auth); no error message ever contains the password. Errors come as
``{"error": ...}``, ``{"message": ...}``, a list (request validation) or an
HTML page; all are shown, trimmed.
"""

from __future__ import annotations

import dataclasses
import re

from ..errors import S2DSError

try:
    import requests
    HAS_REQUESTS = True
except ImportError:  # reported by callers through HAS_REQUESTS
    HAS_REQUESTS = False

__all__ = ["API_PATH", "HAS_REQUESTS", "JanusClient", "JanusService", "JanusSession", "MAX_ERROR_TEXT", "error_text"]

API_PATH = "/api/janus/controller"
MAX_ERROR_TEXT = 400


def _trim(text):
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."


@dataclasses.dataclass(frozen=True)
class JanusService:
    """One container of a Janus session."""

    node: str
    container_name: str
    container_id: str
    errors: tuple
    mounts: tuple  # (source, target) of each bind
    network_mode: str


@dataclasses.dataclass(frozen=True)
class JanusSession:
    """A Janus session as the controller described it, checked field by field."""

    id: int
    name: object  # str or None
    state: str
    services: tuple

    @property
    def errors(self):
        return [error for service in self.services for error in service.errors]

    @classmethod
    def parse(cls, data, base):
        """A JanusSession from one decoded JSON answer; S2DSError naming the controller if it is not one."""
        def bad(why):
            return S2DSError("Janus controller at %s answered with a session that is not one (%s): %s"
                             % (base, why, _trim(repr(data))), field="janus_url", value=base)
        if not isinstance(data, dict):
            raise bad("not an object")
        session_id = data.get("id")
        if not isinstance(session_id, int) or isinstance(session_id, bool) or session_id < 0:
            raise bad("id is not an integer")
        name, state = data.get("name"), data.get("state", "")
        if name is not None and not isinstance(name, str):
            raise bad("name is not a string")
        if not isinstance(state, str):
            raise bad("state is not a string")
        services = data.get("services")
        services = {} if services is None else services  # a new session may have none yet
        if not isinstance(services, dict):
            raise bad("services is not an object")
        parsed = []
        for node, records in services.items():
            if not isinstance(records, list):
                raise bad("services of %r is not a list" % node)
            for record in records:
                parsed.append(_parse_service(node, record, bad))
        return cls(id=session_id, name=name, state=state.upper(), services=tuple(parsed))


def _parse_service(node, record, bad):
    if not isinstance(record, dict):
        raise bad("a service is not an object")
    errors = record.get("errors")
    errors = [] if errors is None else errors
    if not isinstance(errors, list):
        raise bad("errors is not a list")
    kwargs = record.get("kwargs") if isinstance(record.get("kwargs"), dict) else {}
    host_config = kwargs.get("HostConfig") if isinstance(kwargs.get("HostConfig"), dict) else {}
    mounts = host_config.get("Mounts") if isinstance(host_config.get("Mounts"), list) else []
    return JanusService(
        node=str(node), container_name=str(record.get("container_name") or ""),
        container_id=str(record.get("container_id") or ""),
        errors=tuple(_trim(_describe_error(error)) for error in errors),
        mounts=tuple((str(m.get("Source")), str(m.get("Target"))) for m in mounts if isinstance(m, dict)),
        network_mode=str(host_config.get("NetworkMode") or ""))


def _describe_error(error):
    if isinstance(error, dict):
        reason, response = error.get("reason"), error.get("response")
        if isinstance(response, dict):
            response = response.get("message") or response.get("error") or response
        return "%s%s" % (reason, ": %s" % response if response else "")
    return str(error)


def error_text(response):
    """What the controller said went wrong, in whichever shape it said it."""
    try:
        data = response.json()
    except ValueError:
        text = response.text or ""
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        return _trim(title.group(1) if title else text) or "no message"
    if isinstance(data, dict):
        parts = [str(data[key]) for key in ("error", "message", "details") if data.get(key)]
        return _trim("; ".join(parts) if parts else data)
    return _trim(data)


# Janus 1.1 says "Profile X not found", "Image X not found" or "Ednpoint X not found" (sic).
_CREATE_404_FIELDS = {"Profile": "janus_profile", "Image": "image", "Ednpoint": "janus_node", "Endpoint": "janus_node",
                      "Node": "janus_node"}


def _first_word_match(detail):
    match = re.search(r"\b(%s)\b" % "|".join(_CREATE_404_FIELDS), detail)
    return match.group(1) if match else None


def _unwrap(body):
    """Start and stop answer either the session or ``{"<id>": session}``."""
    if isinstance(body, dict) and "id" not in body and len(body) == 1:
        return next(iter(body.values()))
    return body


class JanusClient:
    """The Janus controller API calls the runtime makes."""

    def __init__(self, url, user, password, ca_path=None, validate_certs=True, timeout=60):
        if not HAS_REQUESTS:
            raise S2DSError("the Python library requests is required for runtime janus "
                            "(Debian: apt install python3-requests)", field="runtime", value="janus")
        if not url:
            raise S2DSError("janus_url is required for runtime janus", field="janus_url", value=url)
        self.base = url.rstrip("/")
        if not self.base.endswith(API_PATH):
            self.base += API_PATH
        self.user = user
        self.session = requests.Session()
        self.session.auth = (user or "", password or "")
        # Passed with every request: requests lets REQUESTS_CA_BUNDLE override a
        # session-level setting, which would silently ignore janus_ca_path.
        self.verify = ca_path if (validate_certs and ca_path) else bool(validate_certs)
        self.timeout = timeout
        self._authenticated = False

    def _authenticate(self):
        """Trade the password for a JWT once (``POST /token``): Janus hashes the password on every basic-auth call
        (about 0.1 s each), a JWT costs nothing to check. Kept in memory only; a controller without /token gets
        basic auth on every call."""
        self._authenticated = True
        response = self._send("POST", "/token")
        if response.status_code == 401:
            raise self._failure(response, "login")
        try:
            token = response.json().get("access_token") if response.status_code == 200 else None
        except (ValueError, AttributeError):
            token = None
        if isinstance(token, str) and token:
            self.session.auth = None
            self.session.headers["Authorization"] = "Bearer " + token

    def _send(self, method, path, **kwargs):
        url = self.base + path
        try:
            return self.session.request(method, url, timeout=self.timeout, verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise S2DSError("Janus controller at %s: TLS verification failed (%s); give janus_ca_path the CA "
                            "that signed its certificate" % (self.base, _short(exc)),
                            field="janus_url", value=self.base) from None
        except requests.exceptions.RequestException as exc:
            raise S2DSError("Janus controller at %s is not reachable: %s" % (self.base, _short(exc)),
                            field="janus_url", value=self.base) from None

    def _call(self, method, path, what, ok=(200, 201, 204), **kwargs):
        if not self._authenticated:
            self._authenticate()
        response = self._send(method, path, **kwargs)
        if response.status_code in ok:
            return response
        raise self._failure(response, what)

    def _failure(self, response, what):
        detail, status = error_text(response), response.status_code
        if status == 401:
            return S2DSError("Janus controller at %s rejected the credentials of user %r (401: %s)"
                             % (self.base, self.user, detail), field="janus_user", value=self.user)
        if status == 403:
            return S2DSError("Janus controller at %s does not let user %r make the %s (403: %s)"
                             % (self.base, self.user, what, detail), field="janus_user", value=self.user)
        if status == 404 and what == "create":
            field = _CREATE_404_FIELDS.get(_first_word_match(detail), "janus_profile")
            return S2DSError("Janus controller at %s does not know (or does not grant user %r) the node, profile "
                             "or image asked for (404: %s); a Janus admin grants them with POST /auth/bulk "
                             "(see docs/janus.md)" % (self.base, self.user, detail), field=field, value=detail)
        return S2DSError("Janus controller at %s: %s failed (%d: %s)" % (self.base, what, status, detail),
                         field="janus_url", value=self.base)

    def _json(self, response, what):
        try:
            return response.json()
        except ValueError:
            raise S2DSError("Janus controller at %s answered the %s with no JSON: %s"
                            % (self.base, what, _trim(response.text)), field="janus_url", value=self.base) from None

    def _session(self, body):
        return JanusSession.parse(_unwrap(body), self.base)

    def refresh_nodes(self):
        """Make the controller query its nodes again (nodes, networks, images)."""
        self._call("GET", "/nodes", "refresh of the nodes", params={"refresh": "true"})

    def create(self, request):
        """Create one session; returns its integer id."""
        body = self._json(self._call("POST", "/create", "create", json=request), "create")
        ids = list(body) if isinstance(body, dict) else []
        if len(ids) != 1 or not str(ids[0]).isdigit():
            raise S2DSError("Janus controller at %s answered create with %s, expected one session id"
                            % (self.base, _trim(repr(body))), field="janus_url", value=self.base)
        return int(ids[0])

    def start(self, session_id):
        what = "start of session %d" % session_id
        return self._session(self._json(self._call("PUT", "/start/%d" % session_id, what), what))

    def stop(self, session_id):
        what = "stop of session %d" % session_id
        return self._session(self._json(self._call("PUT", "/stop/%d" % session_id, what), what))

    def active(self, session_id):
        """The session, or None where the controller does not know it (or does not show it to this user)."""
        what = "lookup of session %d" % session_id
        response = self._call("GET", "/active/%d" % session_id, what, ok=(200, 404))
        return self._session(self._json(response, what)) if response.status_code == 200 else None

    def sessions(self):
        """Every session this user may see."""
        body = self._json(self._call("GET", "/active", "list of sessions"), "list of sessions")
        if not isinstance(body, list):
            raise S2DSError("Janus controller at %s answered the list of sessions with %s"
                            % (self.base, _trim(repr(body))), field="janus_url", value=self.base)
        return [JanusSession.parse(item, self.base) for item in body]

    def delete(self, session_id):
        """Stop the session's containers, remove them, forget the session (404: already gone)."""
        self._call("DELETE", "/active/%d" % session_id, "delete of session %d" % session_id, ok=(200, 204, 404))

    def logs(self, session_id, node, lines=20):
        response = self._call("GET", "/active/%d/logs/%s" % (session_id, node), "logs of session %d" % session_id,
                              params={"tail": lines})
        body = self._json(response, "logs")
        return str(body.get("response", "")) if isinstance(body, dict) else ""


def _short(exc):
    return str(exc).splitlines()[0][:300]
