# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The SciStream control server (S2CS) and its client, above the S2DS core.

``scistream.proto`` is the wire protocol; ``protocol.py`` declares the same
messages and service in Python (a unit test checks them against protoc's
compilation of the .proto). ``control.py`` is
the service on top of ``s2ds.gateway.Gateway``, ``server.py`` the process
(command line, TLS, tokens), ``client.py`` the client side. The core never
imports this package.
"""
