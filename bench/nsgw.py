# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One Gateway call inside a network namespace, for bench/run.py (started with `ip netns exec`).

    ip netns exec NS PYTHON bench/nsgw.py '{"state_dir": ..., "action": "present", "spec": {...},
                                            "network_mode": "container:NAME", "rate_devices": [DEVICE]}'

Ports are reserved and checked, proxies started and rules applied in the
namespace this runs in. Proxy containers (runtime docker) join the
namespace's container through ``network_mode`` and carry the ssnft prefix.
Prints the session as JSON.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".build"))

# pylint: disable=wrong-import-position
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.gateway import Gateway  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.policy import WITH_LOOPBACK, TargetPolicy  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec  # noqa: E402
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.shaping import Shaper  # noqa: E402

# Its gateways forward to services on loopback: allowed explicitly, as an operator would.
LOOPBACK_POLICY = TargetPolicy(allow=WITH_LOOPBACK)


def runtimes(request):
    def process(spec):
        from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.process import ProcessRuntime
        return ProcessRuntime("daemon")

    def docker(spec):
        from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerRuntime

        class NamespaceDockerRuntime(DockerRuntime):
            """Proxy containers in the gateway's namespace (a container's), named with the bench's prefix."""

            @staticmethod
            def container_name(backend, record):
                return "ssnft-%s-%s-%s" % (backend.name, record.role.lower(), record.uid)

            def container(self, backend, store, record):
                proxy = super().container(backend, store, record)
                proxy.network_mode = request["network_mode"]
                return proxy

        return NamespaceDockerRuntime(image="scistream/%s:local" % spec.backend)

    def kernel(spec):
        from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.kernel import KernelRuntime
        return KernelRuntime()

    return {"process": process, "docker": docker, "kernel": kernel}


def main():
    request = json.loads(sys.argv[1])
    gateway = Gateway(request["state_dir"], runtimes(request), policy=LOOPBACK_POLICY,
                      shaper=Shaper(request.get("rate_devices")))
    if request["action"] == "present":
        outcome = gateway.present(SessionSpec.build(**request["spec"]))
    else:
        outcome = gateway.absent(request["spec"]["uid"])
    print(json.dumps(outcome.session))


if __name__ == "__main__":
    main()
