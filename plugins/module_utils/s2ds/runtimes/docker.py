# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Proxies as Docker containers, on the local Engine or any Docker endpoint.

Every call to Docker goes through the Docker SDK for Python, in this file.

* :class:`DockerEngine` connects to an endpoint (``unix://``, ``tcp://`` with
  TLS, or the environment's ``DOCKER_HOST``) and names it in every error.
* :class:`ProxyContainer` is one proxy container: its config directory is
  bind-mounted read-only at ``/etc/scistream``; a label carries a hash of
  everything the container was created with, so a container that differs
  from the wanted one is recreated and one that matches is left alone.
* :class:`DockerRuntime` runs S2DS sessions with one ProxyContainer each.

The config directory is a path on the Docker host: with a remote endpoint,
the state directory must be on that host too (run the module there).
"""

from __future__ import annotations

import hashlib
import json
import os

from ..backends import get_backend
from ..errors import S2DSError
from ..names import session_key
from ..uidpool import DEFAULT_PROXY_UID_RANGE, DEFAULT_REGISTRY, PoolAccount
from .base import Runtime, config_rejected, needs_low_port, resolve_proxy_account, share_run_dir, wait_until
from .privileges import resolve_uid_pool

try:
    import docker
    from docker.errors import APIError, DockerException, ImageNotFound, NotFound
    HAS_DOCKER = True
except ImportError:  # reported by callers through HAS_DOCKER
    HAS_DOCKER = False

CONFIG_MOUNT = "/etc/scistream"
#: Every proxy container's root file system is read-only; these are its only writable places (the pid file is
#: in /tmp), tmpfs, writable by its user, nothing on them executable.
WRITABLE_TMPFS = {"/tmp": "rw,nosuid,nodev,noexec,size=16m,mode=1777", "/run": "rw,nosuid,nodev,noexec,size=1m,mode=1777"}
#: Most processes (and threads) one proxy container may hold: NGINX's workers, HAProxy's threads, with room to spare.
PIDS_LIMIT = 256
LABEL_PREFIX = "org.scistream."
SPEC_LABEL = LABEL_PREFIX + "spec-sha256"
# Capabilities each proxy needs, run as root, once Docker's defaults are dropped.
# NGINX's master switches its workers to an unprivileged user. Run as the proxy
# account (the default where it exists) they need none.
CAPABILITIES = {
    "haproxy": [],
    "nginx": ["SETUID", "SETGID"],
    "stunnel": [],
}


class DockerEngine:
    """A connection to one Docker endpoint."""

    def __init__(self, docker_host=None, tls=False, ca_path=None, client_cert=None, client_key=None,
                 validate_certs=True, timeout=60):
        if not HAS_DOCKER:
            raise S2DSError("the Docker SDK for Python is required for runtime docker "
                            "(Debian: apt install python3-docker)", field="runtime", value="docker")
        self.endpoint = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        tls_config = False
        if tls or ca_path or client_cert or client_key:
            tls_config = docker.tls.TLSConfig(
                client_cert=(client_cert, client_key) if client_cert else None,
                ca_cert=ca_path, verify=bool(validate_certs) and (ca_path or True))
        try:
            self.client = docker.DockerClient(base_url=self.endpoint, tls=tls_config, timeout=timeout,
                                              version="auto")
        except DockerException as exc:
            raise S2DSError("Docker Engine at %s is not reachable: %s" % (self.endpoint, exc),
                            field="docker_host", value=self.endpoint) from None

    def error(self, what, exc):
        return S2DSError("Docker Engine at %s: %s failed: %s" % (self.endpoint, what, _explain(exc)),
                         field="docker_host", value=self.endpoint)

    def ensure_image(self, image, backend):
        """The image is there, or is pulled now; else a message that says how to build it."""
        try:
            self.client.images.get(image)
            return
        except ImageNotFound:
            pass
        except (APIError, DockerException) as exc:
            raise self.error("looking up image %s" % image, exc) from None
        try:
            self.client.images.pull(image)
        except (APIError, DockerException) as exc:
            raise S2DSError(
                "image %r is not on the Docker host at %s and cannot be pulled (%s); build it locally with "
                "the scistream.gateway.build_images playbook or `docker build -t %s images/%s` from the "
                "collection, and pass it as image" % (image, self.endpoint, _explain(exc), image, backend),
                field="image", value=image) from None


def _explain(exc):
    return getattr(exc, "explanation", None) or str(exc)


def _digest(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


#: What proves a user can run each proxy in an image: its version flag, as that user.
VERSION_ARGS = {"haproxy": ["-v"], "nginx": ["-v"], "stunnel": ["-version"]}
ROOT_USER = "0:0"

#: Set in the throw-away container that checks a config (it has no network but its own).
NONLOCAL_BIND_SYSCTLS = {"net.ipv4.ip_nonlocal_bind": "1", "net.ipv6.ip_nonlocal_bind": "1"}


class ProxyContainer:
    """One proxy container whose config directory is mounted read-only at /etc/scistream."""

    def __init__(self, engine, name, backend, image, config_dir, config_name=None, labels=None,
                 network_mode="host", low_ports=False, user=None):
        self.engine = engine
        self.name = name
        self.backend = backend
        self.image = image
        self.config_dir = config_dir
        self.config_name = config_name or backend.config_name
        self.labels = dict(labels or {})
        self.network_mode = network_mode
        self.low_ports = low_ports
        #: ``uid:gid`` to run as (numeric, so no image needs the name); None or a port
        #: below 1024 (Docker gives a non-root user no ambient capability) runs root.
        self.user = user if user and user != ROOT_USER and not low_ports else None

    @property
    def config_path(self):
        return CONFIG_MOUNT + "/" + self.config_name

    def create_options(self):
        """Everything the container is created with (what the spec label hashes)."""
        argv = self.backend.foreground_argv(self.config_path, "/dev/stderr")
        if self.user is not None:
            user, caps = self.user, []
        else:
            user = "0:0"
            caps = list(CAPABILITIES[self.backend.name]) + (["NET_BIND_SERVICE"] if self.low_ports else [])
        return {
            "image": self.image,
            "entrypoint": argv[:1],
            "command": argv[1:],
            "user": user,
            "network_mode": self.network_mode,
            "volumes": {self.config_dir: {"bind": CONFIG_MOUNT, "mode": "ro"}},
            "cap_drop": ["ALL"],
            "cap_add": caps,
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": dict(WRITABLE_TMPFS),
            "pids_limit": PIDS_LIMIT,
            "restart_policy": {"Name": "unless-stopped"},
            "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        }

    def spec_hash(self):
        return _digest(dict(self.create_options(), labels=self.labels))

    def find(self):
        try:
            return self.engine.client.containers.get(self.name)
        except NotFound:
            return None
        except (APIError, DockerException) as exc:
            raise self.engine.error("inspecting container %s" % self.name, exc) from None

    def state(self):
        """``absent``, ``outdated`` (created with other options), ``stopped`` or ``running``."""
        container = self.find()
        if container is None:
            return "absent"
        if container.labels.get(SPEC_LABEL) != self.spec_hash():
            return "outdated"
        return "running" if container.status == "running" else "stopped"

    def create(self):
        """The container as wanted, created now if missing or outdated (not started)."""
        container = self.find()
        try:
            if container is not None and container.labels.get(SPEC_LABEL) != self.spec_hash():
                container.remove(force=True)
                container = None
            if container is None:
                self.engine.ensure_image(self.image, self.backend.name)
                container = self.engine.client.containers.create(
                    name=self.name, detach=True, labels=dict(self.labels, **{SPEC_LABEL: self.spec_hash()}),
                    **self.create_options())
        except (APIError, DockerException) as exc:
            raise self.engine.error("creating container %s" % self.name, exc) from None
        return container

    def start(self):
        """Start the container, recreating it first when missing or outdated."""
        container = self.create()
        try:
            container.start()
        except (APIError, DockerException) as exc:
            raise self.engine.error("starting container %s" % self.name, exc) from None
        if not wait_until(lambda: self._status() == "running", 10):
            raise S2DSError("container %s (%s) did not keep running: %s" % (self.name, self.image, self.logs()),
                            field="image", value=self.image)

    def _status(self):
        container = self.find()
        return container.status if container is not None else "absent"

    def signal(self, signum):
        try:
            self.find().kill(signal=int(signum))
        except (APIError, DockerException, AttributeError) as exc:
            raise self.engine.error("signalling container %s" % self.name, exc) from None

    def restart(self):
        container = self.find()
        if container is None:
            self.start()
            return
        try:
            container.restart(timeout=5)
        except (APIError, DockerException) as exc:
            raise self.engine.error("restarting container %s" % self.name, exc) from None

    def stop(self):
        container = self.find()
        if container is not None:
            try:
                container.stop(timeout=5)
            except (APIError, DockerException) as exc:
                raise self.engine.error("stopping container %s" % self.name, exc) from None

    def remove(self):
        container = self.find()
        if container is not None:
            try:
                container.remove(force=True)
            except NotFound:
                pass
            except (APIError, DockerException) as exc:
                raise self.engine.error("removing container %s" % self.name, exc) from None

    def check_config(self, config_name):
        """Run the proxy's checker on ``config_name`` in a short-lived container of the same image."""
        argv = self.backend.check_argv(CONFIG_MOUNT + "/" + config_name, "/dev/stderr")
        if argv is None:
            return
        self.engine.ensure_image(self.image, self.backend.name)
        options = self.create_options()
        try:
            self.engine.client.containers.run(
                self.image, entrypoint=argv[:1], command=argv[1:], user="0:0", network_mode="none",
                # nginx -t binds every listener; in a network of its own the gateway's
                # addresses do not exist, so let it bind addresses it does not have.
                sysctls=NONLOCAL_BIND_SYSCTLS,
                volumes=options["volumes"], cap_drop=["ALL"], cap_add=options["cap_add"], remove=True,
                security_opt=["no-new-privileges"], read_only=True, tmpfs=dict(WRITABLE_TMPFS), pids_limit=PIDS_LIMIT,
                stdout=True, stderr=True, labels={LABEL_PREFIX + "check": self.name})
        except docker.errors.ContainerError as exc:
            output = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)
            raise config_rejected(self.backend.name, output) from None
        except (APIError, DockerException) as exc:
            raise self.engine.error("checking the config of %s" % self.name, exc) from None

    def logs(self, lines=20):
        container = self.find()
        if container is None:
            return ""
        try:
            return container.logs(tail=lines).decode("utf-8", "replace")
        except (APIError, DockerException):
            return ""


class DockerRuntime(Runtime):
    """S2DS sessions as one container each, named from backend, role and uid."""

    name = "docker"

    def __init__(self, image=None, proxy_user="auto", proxy_uid_range=DEFAULT_PROXY_UID_RANGE,
                 uid_registry=DEFAULT_REGISTRY, **engine_options):
        self.image = image
        #: Each session's proxy uid (``proxy_user: pool``, or ``auto`` where the role made the proxy account).
        self.uid_pool = resolve_uid_pool(proxy_user, proxy_uid_range, uid_registry)
        #: Who the proxies run as in their containers without a pool uid (None: root); see base.resolve_proxy_account.
        self.account = resolve_proxy_account(proxy_user)
        self.engine_options = engine_options
        self._engine = None
        self.local_network = not (engine_options.get("docker_host") or "unix://").startswith(("tcp://", "ssh://"))

    @property
    def engine(self):
        if self._engine is None:
            self._engine = DockerEngine(**self.engine_options)
        return self._engine

    @staticmethod
    def container_name(backend, record):
        return "scistream-%s-%s-%s" % (backend.name, record.role.lower(), session_key(record.uid))

    def remembered(self, record):
        """The image, and the user its containers run as (decided when its first container starts)."""
        image = self.image_for(record)
        state = record.runtime_state
        account = self.account_for(record)
        if isinstance(account, PoolAccount):
            # A pool uid is the session's own: its containers run as it (a low port: root, NET_BIND_SERVICE only).
            user = ROOT_USER if needs_low_port(record) else "%d:%d" % (account.uid, account.gid)
            if state.get("image") != image or state.get("container_user") not in (user, ROOT_USER):
                user = None  # probed when its container starts
            else:
                user = state.get("container_user")  # root where the probe found the image refuses that uid
        elif "image" in state and "container_user" not in state:
            user = ROOT_USER  # made by a version that ran every container root: left so until released
        elif state.get("image") != image:
            user = None  # a new session or a new image: probed when its container starts
        else:
            user = state.get("container_user")
        return {"image": image, "container_user": user}

    def container_user(self, backend, image, record):
        """``uid:gid`` of the proxy account where ``image`` lets that user run the proxy, else root.

        An image allows it when its proxy runs for that user: a short-lived
        container prints the proxy's version as that user. (Some storage
        drivers give a container a root directory only root may enter.)
        """
        account = self.account_for(record)
        if account is None or needs_low_port(record):
            return ROOT_USER
        user = "%d:%d" % (account.uid, account.gid)
        self.engine.ensure_image(image, backend.name)
        try:
            self.engine.client.containers.run(
                image, entrypoint=backend.foreground_argv("/dev/null")[:1], command=VERSION_ARGS[backend.name],
                user=user, network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges"], remove=True,
                stdout=True, stderr=True, labels={LABEL_PREFIX + "probe": record.uid})
        except (docker.errors.ContainerError, APIError, DockerException) as exc:
            # Root in the container, every capability dropped but what the proxy needs: the container still
            # mounts this session's run dir alone (seen with Docker's vfs driver, whose container root dir is 0700).
            return ROOT_USER
        return user

    def container(self, backend, store, record):
        labels = {LABEL_PREFIX + "uid": record.uid, LABEL_PREFIX + "role": record.role,
                  LABEL_PREFIX + "backend": backend.name}
        return ProxyContainer(self.engine, self.container_name(backend, record), backend,
                              self.image_for(record), store.run_dir(record.uid),
                              labels=labels, low_ports=needs_low_port(record),
                              user=record.runtime_state.get("container_user"))

    def paths(self, store, record):
        return {
            "run_dir": CONFIG_MOUNT,
            "pid_file": "/tmp/proxy.pid",
            "log_file": "/dev/stderr",
            "psk_file": CONFIG_MOUNT + "/psk.txt",
            "foreground": True,
        }

    def check_config(self, backend, store, record, config_name):
        self.container(backend, store, record).check_config(config_name)

    def is_running(self, backend, store, record):
        return self.container(backend, store, record).state() == "running"

    def _ensure_user(self, backend, record):
        if record.runtime_state.get("container_user") is None:
            record.runtime_state["container_user"] = self.container_user(backend, self.image_for(record), record)

    def start(self, backend, store, record):
        share_run_dir(store, record.uid, self.account_for(record))
        self._ensure_user(backend, record)
        self.container(backend, store, record).start()

    def reload(self, backend, store, record):
        share_run_dir(store, record.uid, self.account_for(record))  # the rewritten files are root's 0600 until shared
        container = self.container(backend, store, record)
        if backend.reload_signal is None:
            container.restart()
        else:
            container.signal(backend.reload_signal)

    def restart(self, backend, store, record):
        share_run_dir(store, record.uid, self.account_for(record))
        self._ensure_user(backend, record)
        container = self.container(backend, store, record)
        if container.state() in ("running", "stopped"):
            container.restart()
        else:
            container.start()  # missing, or created with other options (another user): made anew

    def stop(self, backend, store, record):
        self.container(backend, store, record).remove()

    def log_tail(self, store, record):
        return self.container(get_backend(record.backend), store, record).logs()

    def release_orphan(self, store, uid):
        """The containers labelled with ``uid``."""
        stopped = []
        try:
            for container in self.engine.client.containers.list(all=True, filters={"label": LABEL_PREFIX + "uid=" + uid}):
                container.remove(force=True)
                stopped.append("container " + container.name)
        except (APIError, DockerException) as exc:
            raise self.engine.error("removing the containers of session %s" % uid, exc) from None
        return stopped
