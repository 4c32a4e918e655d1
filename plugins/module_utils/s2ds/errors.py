# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one exception type the S2DS core raises."""

from __future__ import annotations


class S2DSError(Exception):
    """A session cannot be set up, changed or released.

    ``field`` and ``value`` name the input at fault when there is one, so a
    caller (an Ansible module, a gRPC server) can report it precisely. The
    message itself always names them too.
    """

    def __init__(self, message, field=None, value=None):
        super().__init__(message)
        self.field = field
        self.value = value


class PortsExhausted(S2DSError):
    """No free ports are left in the port range (an S2DSError, so existing callers see no difference).

    Callers that must tell "full" from "bad input" (a control server answers
    RESOURCE_EXHAUSTED) catch this one first.
    """


class TargetRefused(S2DSError):
    """The target policy refuses a target (a control server answers PERMISSION_DENIED); names target and rule."""


#: Longest repr of a value an error message quotes; a hostile value may be megabytes.
MAX_QUOTED = 200


def quoted(value):
    """``repr(value)``, cut to MAX_QUOTED characters: escaped, one line, bounded."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "...(%d characters)" % len(text)


def invalid(field, value, why):
    """An S2DSError for a bad input value: ``field 'value': why``, the value escaped by repr()."""
    return S2DSError("%s %s: %s" % (field, quoted(value), why), field=field, value=value)
