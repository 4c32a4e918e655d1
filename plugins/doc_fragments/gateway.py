# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Where a gateway keeps its sessions, and how host processes are supervised."""

    DOCUMENTATION = r"""
options:
  state_dir:
    description: Where the gateway keeps its session records and run files (mode 0700).
    type: path
    default: /var/lib/scistream
  process_supervisor:
    description:
      - How O(scistream.gateway.s2ds#module:runtime=process) keeps proxies running. V(auto) picks V(systemd)
        where systemd is PID 1 (one unit per session), else V(daemon) (the proxy daemonizes and writes a
        pid file in the session's run dir; the next run restarts it if it died).
    type: str
    choices: [auto, systemd, daemon]
    default: auto
"""
