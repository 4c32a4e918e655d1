# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Text from elsewhere (a partner gateway's error details, a proxy's output), made fit to show.

What another party wrote may hold escape codes that repaint a terminal,
newlines that forge log lines, or megabytes. :func:`untrusted_text` keeps
printable ASCII as it is (a backslash too: the text is for reading, and
stays one line of printable ASCII), writes everything else the way ``repr``
does (``\\n``, ``\\x1b``, ``\\u202e``) and cuts the result to ``limit``
characters, saying so. No Ansible imports: the modules, the server and
the tests use it alike.
"""

from __future__ import annotations

#: What a partner gateway's error text is cut to before it goes into a message, warning or result.
REMOTE_LIMIT = 300
#: What a proxy's own output is cut to before it goes into the server's log.
LOG_LIMIT = 2000

_MARK = "...[cut]"


def untrusted_text(value, limit=REMOTE_LIMIT):
    """``value`` as printable ASCII (repr-like escapes for the rest), at most ``limit`` characters."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = value if isinstance(value, str) else str(value)
    # Work on a bounded prefix: escaping can only make the text longer.
    text = text[:limit + 1]
    escaped = []
    for char in text:
        if " " <= char <= "~":
            escaped.append(char)
        elif char in "\n\r\t":
            escaped.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        else:
            code = ord(char)
            escaped.append("\\x%02x" % code if code < 0x100 else "\\u%04x" % code if code < 0x10000 else "\\U%08x" % code)
    result = "".join(escaped)
    if len(result) > limit:
        result = (result[:max(0, limit - len(_MARK))] + _MARK)[:limit]
    return result
