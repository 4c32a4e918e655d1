# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""scistream-exporter: the gateway's sessions as Prometheus metrics, above the S2DS core.

``collector.py`` turns ``Gateway.sessions()`` into metric families,
``web.py`` reads an exporter-toolkit web config (TLS, basic auth with
bcrypt'd passwords), ``server.py`` is the process (``python -m ...server``).
The core never imports this package.
"""
