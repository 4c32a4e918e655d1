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
  proxy_user:
    description:
      - The user the proxies of O(scistream.gateway.s2ds#module:runtime=process) and
        O(scistream.gateway.s2ds#module:runtime=docker) run as. V(auto) is the C(scistream) system user where it
        exists on the gateway (the P(scistream.gateway.gateway#role) role creates it), else root; V(root) keeps them
        root; any other name must exist.
      - Run as that user, a proxy holds no capability, or only C(CAP_NET_BIND_SERVICE) for a listener below port
        1024 (a container with such a port runs root with that one capability, as Docker gives a non-root user no
        ambient capability). The session's run dir is then C(root:<its group>) 0750, the config and key files in
        it 0640 (readable by root and that group alone), and the proxy writes only its pid file and log in the
        run dir's C(proxy/) subdirectory; the session records stay root's 0700.
      - The state dir and every directory above it must let that user pass; the module says which one does not.
    type: str
    default: auto
"""
