# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The SciStream data server (S2DS) core.

Plain Python, no Ansible imports: the modules of this collection, the tests
and a control server all drive gateways through :class:`gateway.Gateway`.
"""
