# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every runtime, with its options and how to build it: the ONE table.

Each entry declares the runtime's name, its options (name -> an
Ansible-style spec: type, default, choices, no_log; the modules' argument
specs, the control server's command line and the tests are made from
these, and tests/unit/test_runtime_registry.py shows the doc fragments
agree) and a factory. :func:`make_gateway` puts a Gateway together from
them for the modules, the control server, the exporter and the tests.

Runtimes are built lazily, when a session first needs one, so a session of
one runtime never imports another's libraries (the Docker SDK, requests,
the nftables binding); the container runtimes get one instance per image
(one Engine connection, one controller login), the others one in all.
"""

from __future__ import annotations

import dataclasses
import sys

from ..errors import S2DSError
from ..gateway import Gateway
from ..shaping import Shaper

DEFAULT_STATE_DIR = "/var/lib/scistream"

#: The gateway's own option (not a runtime's).
STATE_DIR_OPTION = dict(state_dir=dict(type="path", default=DEFAULT_STATE_DIR))


@dataclasses.dataclass(frozen=True)
class RuntimeEntry:
    """One runtime: ``options`` it declares, ``uses`` options it shares with another runtime (declared there),
    and where its class is (imported only when a session needs it)."""

    name: str
    #: Imports and returns the runtime's class (static imports: Ansible ships only the module_utils it sees imported).
    load: object
    options: dict
    #: Constructor keyword -> option name; an option missing here is passed under its own name.
    arguments: dict = dataclasses.field(default_factory=dict)
    uses: tuple = ()
    #: One instance per image (container runtimes) rather than one in all.
    per_image: bool = False
    #: (module attribute that is False without the library, what to install), checked before building.
    library: tuple = ()

    def missing_library(self):
        """What to install for this runtime, or None when its library is there."""
        if not self.library:
            return None
        flag, name = self.library
        return None if getattr(_module_of(self.load()), flag) else name

    def build(self, options, image=None):
        kwargs = {self.arguments.get(name, name): options.get(name) for name in list(self.options) + list(self.uses)}
        if self.per_image:
            kwargs["image"] = image
        return self.load()(**kwargs)


def _module_of(cls):
    """The module a runtime class is defined in (where its library flag is)."""
    return sys.modules[cls.__module__]


# pylint: disable=import-outside-toplevel
def _process():
    from .process import ProcessRuntime
    return ProcessRuntime


def _docker():
    from .docker import DockerRuntime
    return DockerRuntime


def _janus():
    from .janus import JanusRuntime
    return JanusRuntime


def _kernel():
    from .kernel import KernelRuntime
    return KernelRuntime
# pylint: enable=import-outside-toplevel


RUNTIMES = {
    "process": RuntimeEntry(
        name="process", load=_process,
        options=dict(
            process_supervisor=dict(type="str", default="auto", choices=["auto", "systemd", "daemon"]),
            proxy_user=dict(type="str", default="auto"),
            proxy_uid_range=dict(type="str", default="7400-8399"),
        ),
        arguments=dict(process_supervisor="supervisor")),
    # How to reach a Docker Engine (names as in community.docker).
    "docker": RuntimeEntry(
        name="docker", load=_docker,
        options=dict(
            docker_host=dict(type="str"),
            tls=dict(type="bool", default=False),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            client_cert=dict(type="path"),
            client_key=dict(type="path"),
        ),
        uses=("proxy_user", "proxy_uid_range"), per_image=True,
        library=("HAS_DOCKER", "docker (the Docker SDK for Python; Debian: python3-docker)")),
    # How to reach an ESnet Janus controller.
    "janus": RuntimeEntry(
        name="janus", load=_janus,
        options=dict(
            janus_url=dict(type="str"),
            janus_user=dict(type="str"),
            janus_password=dict(type="str", no_log=True),
            janus_ca_path=dict(type="path"),
            janus_validate_certs=dict(type="bool", default=True),
            janus_node=dict(type="str"),
            janus_profile=dict(type="str"),
        ),
        # JanusRuntime's keywords are the options less their janus_ prefix.
        arguments={name: name[len("janus_"):] for name in (
            "janus_url", "janus_user", "janus_password", "janus_ca_path", "janus_validate_certs", "janus_node",
            "janus_profile")},
        per_image=True,
        library=("HAS_REQUESTS", "requests (Debian: python3-requests)")),
    # Without the binding KernelRuntime() raises S2DSError for its own sessions only (s2ds_info lists the others).
    "kernel": RuntimeEntry(name="kernel", load=_kernel, options={}),
}


def options_of(*names):
    """The options the runtimes ``names`` declare, in table order (every runtime's without names)."""
    result = {}
    for entry in RUNTIMES.values():
        if not names or entry.name in names:
            result.update(entry.options)
    return result


def _missing_library(name, library):
    raise S2DSError("runtime %s needs the Python library %s" % (name, library), field="runtime", value=name)


def make_gateway(state_dir, options=None, counter="default", images=None, runtimes=None, missing_library=None, policy=None,
                 rate_devices=None):
    """A Gateway over ``state_dir`` offering ``runtimes`` (names; default every one) built from ``options``.

    ``options`` maps option names (:data:`RUNTIMES`' and ``image``) to values;
    a missing or None one takes its declared default. ``images`` ({uid: image})
    gives sessions of a batch their own image; the rest use ``options['image']``.
    ``counter`` goes to the Gateway as it is. ``missing_library(runtime, library)``
    is called when a session's runtime lacks its library (default: S2DSError for
    that session). ``policy`` (a TargetPolicy) goes to the Gateway: None is the strict default.
    ``rate_devices`` are the egress devices rates are enforced on (None: the default routes' devices).
    """
    given = dict(options or {})
    values = {}
    for entry in RUNTIMES.values():
        for name, spec in entry.options.items():
            values[name] = given.get(name) if given.get(name) is not None else spec.get("default")
    default_image, images = given.get("image"), dict(images or {})
    missing_library = missing_library or _missing_library
    built = {}

    def factory(entry):
        def runtime(session):
            image = images.get(getattr(session, "uid", None), default_image) if entry.per_image else None
            if (entry.name, image) not in built:
                library = entry.missing_library()
                if library:
                    missing_library(entry.name, library)
                built[(entry.name, image)] = entry.build(values, image)
            return built[(entry.name, image)]
        return runtime

    names = list(RUNTIMES) if runtimes is None else list(runtimes)
    return Gateway(state_dir, {name: factory(RUNTIMES[name]) for name in names}, counter=counter, policy=policy,
                   shaper=Shaper(rate_devices))
