# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Jinja2 templates of the proxies, one module each.

They live in Python modules, not .j2 files, because Ansible ships only Python
module_utils to the managed host; each module holds exactly one template.
"""
