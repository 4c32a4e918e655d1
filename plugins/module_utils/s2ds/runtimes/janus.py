# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Proxies placed by an ESnet Janus controller (DTN-as-a-Service), as janus-dtnaas 1.1 behaves.

The contract with the facility's Janus profile (docs/janus.md,
docs/janus/profiles/scistream.yml):

* the module runs on the node Janus places the container on (``janus_node``)
  and writes the session's files to ``<state_dir>/run/<uid>/`` there;
* the profile gives the container host networking and ONE bind,
  ``<state_dir>/janus/session`` -> ``/etc/scistream/session``;
* the container runs the proxy in the foreground with the command this
  runtime passes as the Janus session's ``arguments``.

Janus's quirks, all handled here:

* **One bind per session.** A Janus profile's bind has a fixed source, and
  Janus ignores a volume's read-only flag. ``<state_dir>/janus/session`` is
  therefore a symbolic link that this runtime points at the run dir of the
  one session it is starting, under the gateway's lock, and back at an empty
  directory right after: Docker resolves a bind's source when a container
  starts, so each proxy container sees its own session's files and no
  other's (nor any other session's key).
* **Containers are kept.** ``remove_container`` is false: Janus turns it into
  Docker's auto-remove, and the stop of a config change would delete the
  container. A changed config stops and starts the same container.
* **Health is not taken on trust.** ``PUT /start`` of a session Janus thinks
  ``STARTED`` does nothing, even when its container died, and ``MIXED`` or
  ``INITIALIZED`` mean not (all) running. A session runs only when Janus says
  ``STARTED`` with no service errors AND its listeners listen on this node;
  starting always stops a ``STARTED``/``MIXED`` session first.
* **Ids are not identities.** Session ids restart at 1 on a new controller
  database, and Janus names containers ``janus-<profile>-<id>-<n>`` whatever
  the request says. Each session is created with the name
  ``scistream-<uid>``, and a remembered ``janus_id`` is adopted only when
  that Janus session carries this name.
* **Nodes and images appear on refresh.** A new controller knows no node
  until ``GET /nodes?refresh=true``, and learns a node's images the same way
  (without them it tries to pull). The runtime makes that call before each
  create.

The controller's API (requests, parsing its answers) is :mod:`.janus_client`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess

from ..errors import S2DSError
from ..names import session_key
from .base import Runtime, config_rejected, listening_ports

# HAS_REQUESTS is the runtime's library flag (runtimes/registry.py); the rest re-exported as before the split.
from .janus_client import HAS_REQUESTS, MAX_ERROR_TEXT, JanusClient, JanusService, JanusSession, error_text

__all__ = ["CONTAINER_MOUNT", "HAS_REQUESTS", "MAX_ERROR_TEXT", "JanusClient", "JanusRuntime", "JanusService", "JanusSession",
           "error_text", "session_name"]

#: Where the proxy container sees its session's files (the profile's bind target).
CONTAINER_MOUNT = "/etc/scistream/session"
#: Under state_dir: the link the profile binds, and the empty directory it points at between starts.
DOOR_DIR = "janus"
DOOR_NAME = "session"
CLOSED_NAME = "closed"
SESSION_NAME_PREFIX = "scistream-"
STARTED = "STARTED"


def session_name(uid):
    """The Janus session name that says a session is this uid's (through the core's safe-name mapping)."""
    return SESSION_NAME_PREFIX + session_key(uid)


class JanusRuntime(Runtime):
    """One Janus session (one container) per S2DS session, placed on ``node`` with ``profile``."""

    name = "janus"
    # The module runs on the Janus node: the listeners bind here, and are checked here.
    local_network = True

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
        return {"run_dir": CONTAINER_MOUNT, "pid_file": "/tmp/proxy.pid", "log_file": "/dev/stderr",
                "psk_file": CONTAINER_MOUNT + "/psk.txt", "foreground": True}

    def check_config(self, backend, store, record, config_name):
        """Check with the proxy's own checker where the node has it (Janus itself offers no way)."""
        argv = backend.check_argv("%s/%s" % (store.run_dir(record.uid), config_name), "/dev/null")
        if argv is None or shutil.which(argv[0]) is None:
            return
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                                check=False)
        if result.returncode != 0:
            raise config_rejected(backend.name, result.stdout + result.stderr)

    def request(self, backend, record):
        """The Janus session request for ``record``."""
        options = self.remembered(record)
        node, profile = options["janus_node"], options["janus_profile"]
        if not node:
            raise S2DSError("janus_node is required for runtime janus", field="janus_node", value=node)
        if not profile:
            raise S2DSError("janus_profile is required for runtime janus", field="janus_profile", value=profile)
        argv = backend.foreground_argv("%s/%s" % (CONTAINER_MOUNT, backend.config_name), "/dev/stderr")
        return {
            "name": session_name(record.uid),
            "instances": [node],
            "image": options["image"],
            "profile": profile,
            "arguments": shlex.join(argv),
            # True would make Janus ask Docker for auto-remove: the stop of a config change would delete it.
            "remove_container": False,
        }

    # -- the door: the one bind of the profile, pointed at one session at a time --------------
    @staticmethod
    def door(store):
        return os.path.join(store.state_dir, DOOR_DIR, DOOR_NAME)

    def _ensure_door(self, store):
        """The link exists (Docker checks a bind's source when the container is created), pointing nowhere useful."""
        door = self.door(store)
        closed = os.path.join(os.path.dirname(door), CLOSED_NAME)
        os.makedirs(closed, mode=0o700, exist_ok=True)
        if os.path.lexists(door) and not os.path.islink(door):
            raise S2DSError("%s must be the link this runtime manages, and is something else; remove it"
                            % door, field="state_dir", value=store.state_dir)
        if not os.path.islink(door):
            _point(door, closed)
        return door, closed

    @contextlib.contextmanager
    def _door_open_to(self, store, uid):
        door, closed = self._ensure_door(store)
        _point(door, store.run_dir(uid))
        try:
            yield
        finally:
            _point(door, closed)

    # -- sessions --------------------------------------------------------------------
    def _own_session(self, record):
        """The remembered Janus session, if it still exists and is this uid's; else None."""
        session_id = record.runtime_state.get("janus_id")
        if not isinstance(session_id, int) or isinstance(session_id, bool):
            return None
        session = self.client.active(session_id)
        if session is None or session.name != session_name(record.uid):
            return None  # gone, or an id the controller has given to someone else's session since
        return session

    def _create(self, backend, store, record):
        self._ensure_door(store)
        self.client.refresh_nodes()
        session_id = self.client.create(self.request(backend, record))
        record.runtime_state["janus_id"] = session_id
        session = self.client.active(session_id)
        if session is None:
            raise S2DSError("Janus controller at %s created session %d and then did not show it to user %r"
                            % (self.client.base, session_id, self.client.user), field="janus_url",
                            value=self.client.base)
        try:
            self._check_profile(session, store, self.remembered(record)["janus_profile"])
        except S2DSError:
            self.client.delete(session_id)  # a container that cannot work is not left behind
            raise
        return session

    def _check_profile(self, session, store, profile):
        """The profile gave the container host networking and the one bind; else say what is wrong."""
        door = self.door(store)
        for service in session.services:
            problems = []
            if service.network_mode != "host":
                problems.append("network %r instead of host" % service.network_mode)
            if (door, CONTAINER_MOUNT) not in service.mounts:
                problems.append("binds %s instead of %s -> %s" % (
                    ", ".join("%s -> %s" % m for m in service.mounts) or "nothing", door, CONTAINER_MOUNT))
            exposed = [source for source, dummy in service.mounts
                       if source != door and _inside(source, store.state_dir)]
            if exposed:
                problems.append("also binds %s, inside state_dir (other sessions' files and keys)"
                                % ", ".join(exposed))
            if problems:
                raise S2DSError("Janus profile %r does not fit runtime janus: its container has %s (see docs/janus.md)"
                                % (profile, "; ".join(problems)), field="janus_profile", value=profile)

    def is_running(self, backend, store, record):
        session = self._own_session(record)
        return (session is not None and session.state == STARTED and not session.errors
                and set(record.ports) <= listening_ports("tcp"))

    def start(self, backend, store, record):
        session = self._own_session(record)
        fresh = session is None
        if fresh:
            session = self._create(backend, store, record)
        started = self._start(store, record, session)
        if not _started(started) and not fresh:
            # The container Janus kept for this session is gone or broken (removed by hand, say):
            # Janus cannot start it again, so the session is replaced by a new one.
            self.client.delete(session.id)
            started = self._start(store, record, self._create(backend, store, record))
        if not _started(started):
            raise S2DSError("Janus session %d of %s did not start (state %s%s)" % (
                started.id, record.uid, started.state, "; " + "; ".join(started.errors) if started.errors else ""),
                field="janus_profile", value=self.remembered(record)["janus_profile"])

    def _start(self, store, record, session):
        if session.state not in ("INITIALIZED", "STOPPED"):
            # Janus's start does nothing to a session it thinks STARTED, even one whose container died.
            self.client.stop(session.id)
        with self._door_open_to(store, record.uid):
            return self.client.start(session.id)

    def restart(self, backend, store, record):
        # The same container is stopped and started: it mounts the (new) files again.
        self.start(backend, store, record)

    def reload(self, backend, store, record):
        # Janus offers no signal: stop and start the session to apply the new config.
        self.start(backend, store, record)

    def stop(self, backend, store, record):
        session = self._own_session(record)
        if session is None:
            return
        self.client.delete(session.id)
        if self.client.active(session.id) is not None:
            raise S2DSError("Janus controller at %s kept session %d after deleting it" % (self.client.base, session.id),
                            field="janus_url", value=self.client.base)

    def log_tail(self, store, record):
        session_id = record.runtime_state.get("janus_id")
        node = record.runtime_state.get("janus_node") or self.node
        if not isinstance(session_id, int) or not node:
            return ""
        try:
            return self.client.logs(session_id, node)
        except S2DSError:
            return ""

    def release_orphan(self, store, uid):
        """The Janus sessions named for ``uid`` (a broken record has lost their ids)."""
        stopped = []
        for session in self.client.sessions():
            if session.name == session_name(uid):
                self.client.delete(session.id)
                stopped.append("Janus session %d" % session.id)
        return stopped


def _inside(path, directory):
    """``path`` is ``directory`` or below it (or above it: a bind of a parent shows it all)."""
    path, directory = os.path.normpath(path), os.path.normpath(directory)
    return path == directory or path.startswith(directory + os.sep) or directory.startswith(path.rstrip(os.sep) + os.sep)


def _started(session):
    return session.state == STARTED and not session.errors


def _point(link, target):
    """Make ``link`` a symbolic link to ``target``, atomically (never absent, never half made)."""
    candidate = link + ".new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(candidate)
    os.symlink(target, candidate)
    os.replace(candidate, link)
