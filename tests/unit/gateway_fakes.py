# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fake runtime and a session spec for the unit tests of the gateway's decisions (no proxy runs)."""

from __future__ import annotations

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.base import Runtime
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionSpec

UID = "4f6c1b7e-2a3d-4c5e-9f00-1234567890ab"


class FakeRuntime(Runtime):
    """Remembers what it was told; 'runs' a proxy as a flag. Listeners are not checked."""

    name = "process"
    local_network = False

    def __init__(self, fail_start=False):
        self.running = set()
        self.calls = []
        self.fail_start = fail_start

    def paths(self, store, record):
        run = store.run_dir(record.uid)
        return {"run_dir": run, "pid_file": run + "/pid", "log_file": run + "/log",
                "psk_file": run + "/psk.txt", "foreground": False}

    def check_config(self, backend, store, record, config_name):
        self.calls.append(("check", record.uid))

    def is_running(self, backend, store, record):
        return record.uid in self.running

    def start(self, backend, store, record):
        self.calls.append(("start", record.uid))
        if self.fail_start:
            raise S2DSError("proxy would not start")
        self.running.add(record.uid)

    def reload(self, backend, store, record):
        self.calls.append(("reload", record.uid))

    def stop(self, backend, store, record):
        self.calls.append(("stop", record.uid))
        self.running.discard(record.uid)


def spec(**kwargs):
    args = dict(uid=UID, role="PROD", num_conn=2, listener_ip="127.0.0.1", port_range="47100-47199")
    args.update(kwargs)
    return SessionSpec.build(**args)
