# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How the process runtime keeps a session's proxy running: one supervisor per file, one small interface.

* :mod:`.systemd` (where systemd is PID 1): one enabled unit per session, the proxy in the foreground.
* :mod:`.daemon` (anywhere else): the proxy daemonizes and writes a pid file; the next run restarts it.

:class:`Supervisor` is what :class:`..process.ProcessRuntime` asks of either;
the runtime itself owns the paths, the config check and the proxy account.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from ...errors import S2DSError

__all__ = ["Supervisor", "run_command", "systemd_is_pid1"]


def systemd_is_pid1():
    return os.path.isdir("/run/systemd/system")


def run_command(argv, timeout=30):
    """Run ``argv`` (stdin closed, stderr into stdout, its own session, in ``/`` as systemd starts a unit: a
    proxy whose uid cannot enter the caller's directory would fail, as HAProxy does, going back to it after
    parsing its config); S2DSError when it is missing or hangs."""
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False, start_new_session=True, cwd="/")
    except FileNotFoundError:
        raise S2DSError("%s is not installed on this host (runtime process needs it on PATH)" % argv[0],
                        field="backend", value=argv[0]) from None
    except subprocess.TimeoutExpired:
        raise S2DSError("%s did not finish within %ds" % (shlex.join(argv), timeout)) from None


class Supervisor:
    """Starts, reloads, stops and finds the proxy of one session, for ``runtime`` (a ProcessRuntime:
    its ``paths``, ``account`` and ``log_tail``)."""

    name = None
    #: True where the proxy runs in the foreground (its config says so).
    foreground = False
    #: True where ``start`` fails, with the proxy's message, on a bad config (the Runtime attribute).
    start_checks_config = False

    def __init__(self, runtime):
        self.runtime = runtime

    def is_running(self, backend, store, record):
        """True while the session's proxy runs (and, for a unit, comes back at boot)."""
        raise NotImplementedError

    def start(self, backend, store, record):
        """Start the proxy (the run dir is already shared with the proxy account)."""
        raise NotImplementedError

    def reload(self, backend, store, record):
        """Send ``backend.reload_signal`` (never None here) to the running proxy, or start it."""
        raise NotImplementedError

    def stop(self, backend, store, record):
        """Stop the proxy and whatever it left holding the session's ports."""
        raise NotImplementedError

    def release_orphan(self, store, uid):
        """Stop what can be found from ``uid`` and the run dir alone; return what was stopped."""
        raise NotImplementedError
