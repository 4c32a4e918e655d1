# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One proxy container managed directly (the proxy_container module).

The same ProxyContainer that runs S2DS sessions, with the config given by the
caller instead of rendered from a session: files are written to a config
directory on the Docker host, checked by the proxy inside a short-lived
container, and applied by reload signal or restart.
"""

from __future__ import annotations

import os
import shutil

from .errors import invalid
from .store import read_text, write_checked_files

STATES = ("started", "stopped", "absent", "restarted")


def converge_proxy_container(container, files, state, check_mode=False):
    """Bring ``container`` to ``state`` with ``files`` ({name: (content, mode)}) in its config directory.

    Returns ``(actions, diff)``; ``actions`` is empty when nothing had to change.
    """
    if state not in STATES:
        raise invalid("state", state, "must be one of %s" % ", ".join(STATES))
    config_dir = container.config_dir
    current = container.state()
    actions = []
    diff = {}
    if state == "absent":
        if current != "absent":
            actions.append("remove")
        if os.path.isdir(config_dir):
            actions.append("remove_files")
        if actions and not check_mode:
            container.remove()
            shutil.rmtree(config_dir, ignore_errors=True)
        return actions, diff

    changed_files = [name for name, (content, mode) in sorted(files.items())
                     if read_text(os.path.join(config_dir, name)) != content
                     or _mode(os.path.join(config_dir, name)) != mode]
    before = read_text(os.path.join(config_dir, container.config_name)) or ""
    after = files.get(container.config_name, (before, None))[0]
    if before != after:
        diff = {"before": before, "after": after, "before_header": container.config_name,
                "after_header": container.config_name}
    if changed_files:
        actions.append("write_config")
    if state == "started":
        if current in ("absent", "outdated"):
            actions.append("create")
            actions.append("start")
        elif current == "stopped":
            actions.append("start")
        elif changed_files:
            actions.append("reload" if container.backend.reload_signal is not None else "restart")
    elif state == "stopped":
        if current in ("absent", "outdated"):
            actions.append("create")
        elif current == "running":
            actions.append("stop")
    elif state == "restarted":
        actions.append("restart" if current == "running" else "start")
    if check_mode or not actions:
        return actions, diff

    if changed_files:
        write_checked_files(config_dir, {name: files[name] for name in changed_files}, container.config_name,
                            container.check_config)
    if "create" in actions and "start" not in actions:
        container.create()
    if "start" in actions:
        container.start()
    elif "reload" in actions:
        container.signal(container.backend.reload_signal)
    elif "restart" in actions:
        container.restart()
    elif "stop" in actions:
        container.stop()
    return actions, diff


def _mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None
