# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The roles' filters: what their vars and playbooks used to work out in Jinja loops, here with unit tests.

- ``unit_sandbox``: the ``[Service]`` sandbox of a daemon's unit, from the one source (s2ds/sandbox.py).
- ``code_tree``: the Python files of some module_utils packages and one hash over them (the daemon role ships them).
- ``s2cs_instances``: the s2cs role's instances with their defaults filled in, checked.
- ``s2cs_protected_ports``: the ports of this host's services no session may forward to (the s2cs role's
  ``--protected_ports``).
- ``cert_sans``: subjectAltName entries of a server certificate.
- ``file_sd_targets``: Prometheus file_sd targets of the play's exporters.
- ``counted_bytes``: bytes a stream's listeners counted between two s2ds_info reads (playbooks/verify.yml).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import quoted
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.sandbox import unit_sandbox
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import parse_port

NAME = re.compile(r"[A-Za-z0-9_-]+")
S2CS_CHOICES = {"backend": ("haproxy", "nginx", "stunnel"), "runtime": ("process", "docker")}
ANY_ADDRESS = ("0.0.0.0", "::")


def code_tree(src, packages):
    """``{'files': [...], 'sha256': ...}``: every ``*.py`` below ``src``/package (paths relative to ``src``, sorted).

    The hash covers each file's path and bytes, so a renamed, added, removed or edited file changes it.
    """
    files = []
    for package in packages:
        top = os.path.join(src, package)
        if not os.path.isdir(top):
            raise AnsibleFilterError("code_tree: package %s: no directory %s" % (quoted(package), quoted(top)))
        for here, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            files.extend(os.path.relpath(os.path.join(here, n), src) for n in names if n.endswith(".py"))
    files = sorted(set(files))
    digest = hashlib.sha256()
    for name in files:
        with open(os.path.join(src, name), "rb") as handle:
            body = handle.read()
        digest.update(b"%s\0%d\0" % (name.encode(), len(body)))
        digest.update(body)
    return {"files": files, "sha256": digest.hexdigest()}


def s2cs_instances(instances, defaults, state_root, images=None):
    """Each instance over ``defaults``, with ``image`` (``images[backend]``) and ``state_dir`` of its own.

    Refuses (naming the instance and the field) what the argument spec cannot say: a bad or repeated name, a
    repeated port or state dir, a client_secret without a client_id, a backend or runtime (perhaps the gateway
    role's, taken as the default) the control server does not run.
    """
    if not isinstance(instances, (list, tuple)) or not instances:
        raise AnsibleFilterError("scistream_s2cs_instances: must be a non-empty list of instances")
    resolved, seen = [], {"name": {}, "port": {}, "state_dir": {}}
    for index, instance in enumerate(instances):
        where = "scistream_s2cs_instances[%d]" % index
        if not isinstance(instance, Mapping):
            raise AnsibleFilterError("%s: must be a mapping, not %s" % (where, type(instance).__name__))
        name = instance.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise AnsibleFilterError("%s: name %s: letters, digits, '-' and '_' only" % (where, quoted(name)))
        where = "instance %s (%s)" % (quoted(name), where)
        backend = instance.get("backend") or defaults.get("backend")
        own = {"image": (images or {}).get(backend) or "", "state_dir": "%s/s2cs-%s" % (state_root, name)}
        entry = dict(defaults, **own)
        entry.update(instance)
        for field, choices in S2CS_CHOICES.items():
            if entry.get(field) not in choices:
                raise AnsibleFilterError("%s: %s %s: must be one of %s (an instance's own, else the gateway role's)" % (
                    where, field, quoted(entry.get(field)), ", ".join(choices)))
        if entry.get("client_secret") and not entry.get("client_id"):
            raise AnsibleFilterError("%s: client_secret needs a client_id" % where)
        for field in seen:
            value = str(entry.get(field))
            if value in seen[field]:
                raise AnsibleFilterError("%s: %s %s is also the %s of instance %s" % (
                    where, field, quoted(value), field, quoted(seen[field][value])))
            seen[field][value] = name
        resolved.append(entry)
    return resolved


#: SciStream's default control port: protected whatever this host's instances use (another server may take it).
DEFAULT_CONTROL_PORT = 5000


def s2cs_protected_ports(instances, exporter_port=9787, extra=()):
    """The ports no session may forward to on this host: 5000, the exporter's, each instance's port and metrics
    port, then ``extra``; once each, in that order, each checked by the grammar (0 or empty: none).

    The s2cs role gives them to every instance as ``--protected_ports`` (the server adds its own ports as well).
    """
    named = [("the default control port", DEFAULT_CONTROL_PORT), ("scistream_exporter_port", exporter_port)]
    for instance in instances or ():
        name = quoted(instance.get("name"))
        named += [("instance %s port" % name, instance.get("port")),
                  ("instance %s metrics_port" % name, instance.get("metrics_port"))]
    named += [("scistream_s2cs_protected_ports[%d]" % index, port) for index, port in enumerate(extra or ())]
    ports = []
    for field, value in named:
        if value in (None, "", 0, "0"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise AnsibleFilterError("%s %s: must be a port number" % (field, quoted(value)))
        try:
            ports.append(parse_port(field, str(value)))
        except S2DSError as exc:
            raise AnsibleFilterError(str(exc)) from None
    return list(dict.fromkeys(ports))


def cert_sans(hosts, extra=()):
    """subjectAltName entries (``IP:`` for addresses, ``DNS:`` for names) of ``hosts`` and then ``extra``, once each.

    Empty entries and the wildcard addresses (0.0.0.0, ::) are left out.
    """
    names = []
    for host in hosts or ():
        if not host or str(host) in ANY_ADDRESS:
            continue
        host = str(host)
        try:
            names.append("IP:" + str(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append("DNS:" + host)
    return list(dict.fromkeys(names + list(extra or ())))


def file_sd_targets(hosts, hostvars, default_port=9787):
    """One file_sd entry per host of ``hosts`` whose ``scistream_exporter_enabled`` is true.

    The target is the host's ``scistream_exporter_target``, else ``host:scistream_exporter_port``; label ``gateway``.
    """
    targets = []
    for host in hosts:
        own = hostvars[host]
        if not boolean(own.get("scistream_exporter_enabled", False), strict=False):
            continue
        target = own.get("scistream_exporter_target") or "%s:%s" % (host, own.get("scistream_exporter_port", default_port))
        targets.append({"targets": [target], "labels": {"gateway": host}})
    return targets


def _session(hostvars, gateway, result, uid, role):
    sessions = ((hostvars.get(gateway) or {}).get(result) or {}).get("sessions") or []
    return next((s for s in sessions if s.get("uid") == uid and s.get("role") == role), {})


def counted_bytes(stream, hostvars, before="scistream_gateway_sessions", after="scistream_gateway_counters"):
    """``{'CONS': n, 'PROD': n}``: bytes into the stream's listeners on each gateway between two s2ds_info reads.

    ``before`` and ``after`` name the registered s2ds_info results in each gateway's hostvars; a side whose
    session (or its ``traffic``) is missing from either read gets a sentence instead of a number.
    """
    out = {}
    for role, gateway in (("CONS", stream["consumer_gateway"]), ("PROD", stream["producer_gateway"])):
        first = _session(hostvars, gateway, before, stream["uid"], role)
        last = _session(hostvars, gateway, after, stream["uid"], role)
        if "traffic" in first and "traffic" in last:
            out[role] = sum(t["bytes_in"] for t in last["traffic"]) - sum(t["bytes_in"] for t in first["traffic"])
        else:
            out[role] = "not counted (s2ds_info says why)"
    return out


def _unit_sandbox(writable_paths, capabilities=(), address_families=None, **options):
    if address_families:
        options["address_families"] = tuple(address_families)
    return unit_sandbox(list(writable_paths), capabilities=tuple(capabilities), **options)


class FilterModule:
    """scistream.gateway filters of the roles."""

    def filters(self):
        return {"unit_sandbox": _unit_sandbox, "code_tree": code_tree, "s2cs_instances": s2cs_instances,
                "s2cs_protected_ports": s2cs_protected_ports, "cert_sans": cert_sans, "file_sd_targets": file_sd_targets, "counted_bytes": counted_bytes}
