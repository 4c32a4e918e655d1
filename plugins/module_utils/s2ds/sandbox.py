# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The systemd sandbox of every unit the collection writes, in one place.

The session proxies' units (written by the process runtime) and the
collection's daemons (the control server and the exporter, written by the
roles through the ``scistream.gateway.unit_sandbox`` filter) take their
``[Service]`` confinement from :func:`unit_sandbox`, so a hardening fix is
made once. ``systemd-analyze security`` scores the result.
"""

from __future__ import annotations

__all__ = ["unit_sandbox"]

_DEFAULT_FAMILIES = ("AF_INET", "AF_INET6", "AF_UNIX")


def _under(paths, *tops):
    return any((path.rstrip("/") + "/").startswith(top + "/") for path in paths for top in tops)


def unit_sandbox(writable_paths, capabilities=(), ambient_capabilities=(), address_families=_DEFAULT_FAMILIES,
                 confined=False, privileged_syscalls=False, visible_paths=()):
    """The ``[Service]`` sandbox lines (a list of ``Key=value`` strings).

    ``writable_paths`` are the only places the unit may write (a leading
    ``-`` lets a path be missing); ``capabilities`` its bounding set and
    ``ambient_capabilities`` those it holds as a non-root user.
    ``confined`` adds what suits a process that never looks at others (a
    session's proxy): /proc hidden, no W+X memory, a system-call filter
    (less the privileged calls unless ``privileged_syscalls``), no IPC or
    keyring shared with the host. /home and /tmp stay hidden unless one of
    ``writable_paths`` or ``visible_paths`` (say a run dir the unit reads)
    lives there.
    """
    paths = [path.lstrip("-") for path in list(writable_paths) + list(visible_paths)]

    def confined_only(*lines):
        return list(lines) if confined else []
    return [
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=" + " ".join(capabilities),
        "AmbientCapabilities=" + " ".join(ambient_capabilities),
        "ProtectSystem=strict",
        "ReadWritePaths=" + " ".join(writable_paths),
        "ProtectHome=" + ("read-only" if _under(paths, "/home", "/root", "/run/user") else "yes"),
        "PrivateTmp=" + ("no" if _under(paths, "/tmp", "/var/tmp") else "yes"),
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
    ] + confined_only("ProtectProc=invisible", "ProcSubset=pid") + [
        "RestrictAddressFamilies=" + " ".join(address_families),
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ] + confined_only("MemoryDenyWriteExecute=yes", "RemoveIPC=yes") + [
        "SystemCallArchitectures=native",
    ] + confined_only("SystemCallFilter=@system-service") + (
        confined_only("SystemCallFilter=~@privileged") if not privileged_syscalls else []
    ) + confined_only("SystemCallErrorNumber=EPERM") + [
        "UMask=0077",
    ] + confined_only("DevicePolicy=closed", "KeyringMode=private", "PrivateIPC=yes")
