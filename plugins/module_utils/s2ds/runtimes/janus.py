# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Proxies placed by an ESnet Janus controller (DTN-as-a-Service).

The contract with the facility's Janus profile (see docs/janus.md):

* the module runs on the node Janus places the container on, and writes the
  session's files to ``<state_dir>/run/<uid>/`` there;
* the profile bind-mounts ``<state_dir>/run`` read-only at
  ``/etc/scistream/sessions`` in the container, with host networking;
* the container runs the proxy in the foreground with the command this
  runtime passes as the Janus session's ``arguments``.

The Janus session id is kept in the session record, so a later run (or a
controller that restarted) still finds the session. A changed config is
applied by stopping and starting the Janus session. Every call to the
controller goes through :class:`JanusClient` (requests, basic auth); no
error message ever contains the password.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess

from ..errors import S2DSError
from ..names import session_key
from .base import Runtime

try:
    import requests
    HAS_REQUESTS = True
except ImportError:  # reported by callers through HAS_REQUESTS
    HAS_REQUESTS = False

API_PATH = "/api/janus/controller"
CONTAINER_MOUNT = "/etc/scistream/sessions"
STOPPED_STATES = ("stopped", "exited", "failed", "dead", "created")


class JanusClient:
    """The Janus controller API: create / start / stop / active / delete."""

    def __init__(self, url, user, password, ca_path=None, validate_certs=True, timeout=30):
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

    def _call(self, method, path, what, ok=(200, 201, 204), **kwargs):
        url = self.base + path
        try:
            response = self.session.request(method, url, timeout=self.timeout, verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise S2DSError("Janus controller at %s: TLS verification failed (%s); give janus_ca_path the CA "
                            "that signed its certificate" % (self.base, _short(exc)),
                            field="janus_url", value=self.base) from None
        except requests.exceptions.RequestException as exc:
            raise S2DSError("Janus controller at %s is not reachable: %s" % (self.base, _short(exc)),
                            field="janus_url", value=self.base) from None
        if response.status_code in ok:
            return response
        detail = _error_text(response)
        if response.status_code == 401:
            raise S2DSError("Janus controller at %s rejected the credentials of user %r (401)"
                            % (self.base, self.user), field="janus_user", value=self.user)
        if response.status_code == 404 and what == "create":
            raise S2DSError("Janus controller at %s does not know the node, profile or image asked for "
                            "(404: %s)" % (self.base, detail), field="janus_profile", value=detail)
        raise S2DSError("Janus controller at %s: %s failed (%d: %s)" % (self.base, what, response.status_code, detail),
                        field="janus_url", value=self.base)

    def create(self, request):
        """Create one session; returns its integer id."""
        body = self._call("POST", "/create", "create", json=request).json()
        ids = [value.get("id", key) if isinstance(value, dict) else key for key, value in body.items()]
        if len(ids) != 1:
            raise S2DSError("Janus controller at %s answered create with %r, expected one session"
                            % (self.base, body), field="janus_url", value=self.base)
        return int(ids[0])

    def start(self, session_id):
        return self._call("PUT", "/start/%d" % session_id, "start of session %d" % session_id).json()

    def stop(self, session_id, missing_ok=False):
        ok = (200, 404) if missing_ok else (200,)
        return self._call("PUT", "/stop/%d" % session_id, "stop of session %d" % session_id, ok=ok).json()

    def active(self, session_id):
        """The session, or None when the controller does not know it."""
        response = self._call("GET", "/active/%d" % session_id, "lookup of session %d" % session_id, ok=(200, 404))
        return response.json() if response.status_code == 200 else None

    def delete(self, session_id):
        self._call("DELETE", "/active/%d" % session_id, "delete of session %d" % session_id, ok=(200, 204, 404),
                   params={"force": "true"})


def _short(exc):
    return str(exc).splitlines()[0][:300]


def _error_text(response):
    try:
        data = response.json()
        return str(data.get("error", data)) if isinstance(data, dict) else str(data)
    except ValueError:
        return response.text[:300]


class JanusRuntime(Runtime):
    """One Janus session per S2DS session, placed on ``node`` with ``profile``."""

    name = "janus"
    # Listeners bind on the Janus node, which need not be this host.
    local_network = False

    def __init__(self, url=None, user=None, password=None, ca_path=None, validate_certs=True, node=None,
                 profile=None, image=None):
        self.client_options = dict(url=url, user=user, password=password, ca_path=ca_path,
                                   validate_certs=validate_certs)
        self.node = node
        self.profile = profile
        self.image = image
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = JanusClient(**self.client_options)
        return self._client

    def remembered(self, record):
        """Node, profile and image: given now, else those the session was created with."""
        state = record.runtime_state
        return {"janus_node": self.node or state.get("janus_node"),
                "janus_profile": self.profile or state.get("janus_profile"),
                "image": self.image_for(record)}

    def paths(self, store, record):
        run_dir = CONTAINER_MOUNT + "/" + session_key(record.uid)
        return {"run_dir": run_dir, "pid_file": "/tmp/proxy.pid", "log_file": "/dev/stderr",
                "psk_file": run_dir + "/psk.txt", "foreground": True}

    def check_config(self, backend, store, record, config_name):
        """Check with the proxy's own checker where the node has it (Janus itself offers no way)."""
        argv = backend.check_argv("%s/%s" % (store.run_dir(record.uid), config_name), "/dev/null")
        if argv is None or shutil.which(argv[0]) is None:
            return
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                                check=False)
        if result.returncode != 0:
            raise S2DSError("%s rejected the rendered config: %s" % (backend.name, (result.stdout + result.stderr)
                                                                     .strip()[-2000:]),
                            field="template", value=backend.name)

    def request(self, backend, record):
        """The Janus session request for ``record``."""
        options = self.remembered(record)
        node, profile = options["janus_node"], options["janus_profile"]
        if not node:
            raise S2DSError("janus_node is required for runtime janus", field="janus_node", value=node)
        if not profile:
            raise S2DSError("janus_profile is required for runtime janus", field="janus_profile", value=profile)
        argv = backend.foreground_argv("%s/%s/%s" % (CONTAINER_MOUNT, session_key(record.uid), backend.config_name),
                                       "/dev/stderr")
        return {
            "instances": [node],
            "image": options["image"],
            "profile": profile,
            "arguments": shlex.join(argv),
            "remove_container": True,
            "kwargs": {"name": "scistream-%s-%s-%s" % (backend.name, record.role.lower(), session_key(record.uid))},
        }

    def _session(self, record):
        session_id = record.runtime_state.get("janus_id")
        return (session_id, self.client.active(session_id)) if session_id is not None else (None, None)

    def is_running(self, backend, store, record):
        dummy, session = self._session(record)
        return session is not None and str(session.get("state", "running")).lower() not in STOPPED_STATES

    def start(self, backend, store, record):
        session_id, session = self._session(record)
        if session is None:
            session_id = self.client.create(self.request(backend, record))
            record.runtime_state["janus_id"] = session_id
        self.client.start(session_id)

    def restart(self, backend, store, record):
        session_id, session = self._session(record)
        if session is None:
            self.start(backend, store, record)
            return
        self.client.stop(session_id)
        self.client.start(session_id)

    def reload(self, backend, store, record):
        # Janus offers no signal: stop and start the session to apply the new config.
        self.restart(backend, store, record)

    def stop(self, backend, store, record):
        session_id = record.runtime_state.get("janus_id")
        if session_id is None:
            return
        if self.client.active(session_id) is not None:
            self.client.stop(session_id, missing_ok=True)
            self.client.delete(session_id)

    def log_tail(self, store, record):
        return ""
