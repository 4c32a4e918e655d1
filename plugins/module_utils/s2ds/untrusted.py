# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading what a proxy can write, as root, without trusting it.

A session's proxy runs unprivileged and parses WAN bytes: it may be
compromised. Whatever lies in a directory it can write (its pid file, its
log, HAProxy's stats socket: the run dir's ``proxy/``) may be swapped at any
moment for a symbolic link to a root-only file, a hard link to one, a FIFO
that blocks an ``open()``, a socket, a link to ``/dev/zero`` or a file of
gigabytes. Every read of such a path goes through this module:

* the parent directory is opened ``O_DIRECTORY | O_NOFOLLOW`` and the name
  looked up from it (``dir_fd``), so no link on the way is followed;
* the name itself is first opened ``O_PATH | O_NOFOLLOW`` (which never opens
  the file's content: no FIFO blocks, no device acts) and ``fstat``-ed: only
  a regular file with a single link (``st_nlink == 1``, no hard link to a
  file elsewhere) is re-opened for reading, through ``/proc/self/fd`` (the
  very inode checked: no race), ``O_RDONLY | O_NONBLOCK | O_NOFOLLOW |
  O_CLOEXEC | O_NOCTTY``;
* at most ``limit`` bytes are read (a tail reads the last ``limit``) within a
  deadline;
* a Unix socket is connected only after the same checks found ``S_ISSOCK``
  with one link, through ``/proc/self/fd`` of its ``O_PATH`` descriptor, with
  a bound on the bytes it may answer and on the whole exchange's time;
* a pid file holds ASCII digits and a newline, nothing else, a number below
  the kernel's ``pid_max``, and a pid is believed only when the caller's
  check (the process really is this session's proxy) says so.

A refusal raises :class:`UntrustedFileError` (an OSError, so callers that
treat an unreadable report as "no report" keep doing so), whose message says
what failed in the gateway's own words and quotes nothing the proxy wrote.
What the proxy wrote and is shown anywhere goes through :func:`escape`:
printable ASCII only, cut.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import stat
import time

from .errors import S2DSError

__all__ = ["UntrustedFileError", "ProxyOutputError", "escape", "read_file", "read_tail", "read_from",
           "read_pid_file", "query_unix_socket", "remove_unless_plain", "DEFAULT_LIMIT", "DEFAULT_TIMEOUT"]

#: Bytes read from a proxy's file when the caller names no bound.
DEFAULT_LIMIT = 64 * 1024
#: Seconds any one read of a proxy's file or socket may take, all included.
DEFAULT_TIMEOUT = 2.0
#: Characters of proxy output a message may quote (after escaping).
DEFAULT_SHOWN = 500
#: What a pid file may hold: a decimal number without sign or leading zero, one optional newline.
_PID_RE = re.compile(rb"[1-9][0-9]{0,9}\n?")
_CHUNK = 65536
_O_PATH = getattr(os, "O_PATH", 0o10000000)  # Linux


class UntrustedFileError(OSError):
    """A proxy-writable path was refused (or could not be read): ``str()`` says which path and why."""

    def __init__(self, path, why, err=errno.EPERM):
        super().__init__(err, "%s: %s" % (path, why))
        self.path = path
        self.why = why

    def __str__(self):
        return "%s: %s" % (self.path, self.why)


class ProxyOutputError(S2DSError):
    """An S2DSError whose text for a remote client (``public_message``) holds nothing the proxy wrote.

    ``str()`` (what the server's log and a local Ansible run show) adds the
    proxy's own output, escaped and cut; ``proxy_output`` is that part alone.
    """

    def __init__(self, message, proxy_output="", field=None, value=None):
        self.public_message = message
        self.proxy_output = escape(proxy_output) if proxy_output else ""
        full = "%s: %s" % (message, self.proxy_output) if self.proxy_output else message
        super().__init__(full, field=field, value=value)


def public_message(exc):
    """What a remote client may be told of ``exc``: for a ProxyOutputError, the part without proxy bytes."""
    return getattr(exc, "public_message", None) or str(exc)


def escape(data, limit=DEFAULT_SHOWN):
    """``data`` (bytes or text) as printable ASCII on one line, at most about ``limit`` characters.

    Every byte outside 0x20-0x7e becomes ``\\xNN`` (newlines, escape codes,
    UTF-8 alike), a backslash ``\\\\``; a longer text keeps its *last* part
    (a log's latest lines say most) behind ``...(N bytes cut)``.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    data = bytes(data)
    cut = 0
    if len(data) > limit:
        cut = len(data) - limit
        data = data[-limit:]
    text = "".join(chr(byte) if 0x20 <= byte <= 0x7e and byte != 0x5c else
                   ("\\\\" if byte == 0x5c else "\\x%02x" % byte) for byte in data)
    if len(text) > limit:
        text = text[-limit:]
    return ("...(%d bytes cut)" % cut + text) if cut else text


@contextlib.contextmanager
def _parent_fd(path):
    """The directory holding ``path``, opened O_DIRECTORY | O_NOFOLLOW (it may be a dir the proxy can write)."""
    directory = os.path.dirname(path) or "."
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UntrustedFileError(path, "its directory %s is not a plain directory (a link is not followed)"
                                     % directory) from None
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def _kind(mode):
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "of an unknown file type"


def _checked_path_fd(path, wanted, what):
    """An O_PATH | O_NOFOLLOW descriptor of ``path`` after fstat found type ``wanted`` (a stat.S_IS* test)
    and a single link. Raises FileNotFoundError when there is nothing there, UntrustedFileError otherwise."""
    name = os.path.basename(path)
    if name in ("", ".", ".."):
        raise UntrustedFileError(path, "is not a file name")
    with _parent_fd(path) as parent:
        try:
            fd = os.open(name, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise
            raise UntrustedFileError(path, "cannot be opened (%s)" % os.strerror(exc.errno or 0), exc.errno) from None
    try:
        info = os.fstat(fd)
        if not wanted(info.st_mode):
            raise UntrustedFileError(path, "is %s, not %s; not read" % (_kind(info.st_mode), what))
        if info.st_nlink != 1:
            raise UntrustedFileError(path, "has %d hard links (a link to a file elsewhere?); not read" % info.st_nlink)
        return fd, info
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def _open_regular(path):
    """A read-only descriptor of the regular, singly linked file at ``path`` (see the module's doc)."""
    path_fd, info = _checked_path_fd(path, stat.S_ISREG, "a regular file")
    try:
        fd = os.open("/proc/self/fd/%d" % path_fd,
                     os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UntrustedFileError(path, "cannot be opened (%s)" % os.strerror(exc.errno or 0), exc.errno) from None
    finally:
        os.close(path_fd)
    try:
        again = os.fstat(fd)
        if (again.st_dev, again.st_ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(again.st_mode):
            raise UntrustedFileError(path, "changed while it was opened; not read")
        yield fd, again
    finally:
        os.close(fd)


def _read_range(path, fd, offset, count, deadline):
    """Up to ``count`` bytes from ``offset`` (pread in chunks), stopping at the deadline."""
    chunks, total = [], 0
    while total < count:
        if time.monotonic() > deadline:
            raise UntrustedFileError(path, "took too long to read; not read", errno.ETIMEDOUT)
        try:
            chunk = os.pread(fd, min(_CHUNK, count - total), offset + total)
        except BlockingIOError:
            raise UntrustedFileError(path, "would block; not read", errno.EAGAIN) from None
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_file(path, limit=DEFAULT_LIMIT, timeout=DEFAULT_TIMEOUT, missing=None):
    """The bytes of the proxy-writable regular file ``path``, refused when it holds more than ``limit``.

    ``missing`` is returned when there is no such file.
    """
    deadline = time.monotonic() + timeout
    try:
        with _open_regular(path) as (fd, info):
            if info.st_size > limit:
                raise UntrustedFileError(path, "holds %d bytes, more than the %d read; not read" % (info.st_size, limit),
                                         errno.EFBIG)
            data = _read_range(path, fd, 0, limit + 1, deadline)
    except FileNotFoundError:
        return missing
    if len(data) > limit:
        raise UntrustedFileError(path, "grew beyond %d bytes while read; not read" % limit, errno.EFBIG)
    return data


def read_tail(path, limit=4096, timeout=DEFAULT_TIMEOUT, missing=b""):
    """The last ``limit`` bytes of the proxy-writable regular file ``path`` (``missing`` when there is none)."""
    deadline = time.monotonic() + timeout
    try:
        with _open_regular(path) as (fd, info):
            start = max(0, info.st_size - limit)
            return _read_range(path, fd, start, limit, deadline)
    except FileNotFoundError:
        return missing


def read_from(path, offset, inode=None, limit=1024 * 1024, timeout=DEFAULT_TIMEOUT):
    """What a growing log holds from ``offset`` on, at most ``limit`` bytes: ``(inode, start, data)``.

    ``start`` is where ``data`` begins: ``offset``, or 0 when the file is a new
    one (another inode than ``inode``) or shrank below ``offset``. A reader
    that keeps a log's place (the exporter) calls again from ``start +
    len(data)``; a log that grows faster than ``limit`` a call is read over
    several calls, never more than ``limit`` at once. None when there is no file.
    """
    deadline = time.monotonic() + timeout
    try:
        with _open_regular(path) as (fd, info):
            start = offset if inode == info.st_ino and 0 <= offset <= info.st_size else 0
            return info.st_ino, start, _read_range(path, fd, start, min(limit, info.st_size - start), deadline)
    except FileNotFoundError:
        return None


def pid_max():
    """The kernel's largest pid (``/proc/sys/kernel/pid_max``); 4194304 (the Linux ceiling) when unreadable."""
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as handle:
            return int(handle.read(16).strip())
    except (OSError, ValueError):
        return 4194304


def parse_pid(data, path="pid file"):
    """A pid from a pid file's bytes: ``[1-9][0-9]*`` and an optional newline, no more than pid_max."""
    if not _PID_RE.fullmatch(data or b""):
        raise UntrustedFileError(path, "does not hold a pid (a decimal number and a newline); ignored", errno.EINVAL)
    pid = int(data)
    if pid > pid_max():
        raise UntrustedFileError(path, "holds %d, above the kernel's pid_max; ignored" % pid, errno.EINVAL)
    return pid


def read_pid_file(path, verify=None, timeout=DEFAULT_TIMEOUT):
    """The pid in the proxy-written pid file ``path``, or None (no file, not a pid, or not verified).

    ``verify(pid)`` says whether the process is really the one the file
    should name (the session's proxy, by its command line and start time): a
    pid file is a hint, never proof. Refusals of the file itself (a link, a
    FIFO) are raised as UntrustedFileError; garbage in it (too long included) is None.
    """
    try:
        data = read_file(path, limit=24, timeout=timeout)
    except UntrustedFileError as exc:
        if exc.errno != errno.EFBIG:
            raise
        return None  # too long to be a pid: garbage
    if data is None:
        return None
    try:
        pid = parse_pid(data, path)
    except UntrustedFileError:
        return None
    if verify is not None and not verify(pid):
        return None
    return pid


def remove_unless_plain(path, wanted=stat.S_ISREG, what="a regular file"):
    """Remove whatever is at ``path`` unless it is ``wanted`` (a stat.S_IS* test) with a single link.

    Called before a proxy starts on the names it will open (its log, its pid
    file, its stats socket): a FIFO there would block the proxy's own open()
    (and the start with it), a link would have it write through to elsewhere.
    The name is removed from its directory (opened O_NOFOLLOW); nothing is
    followed or opened. Returns why it was removed, or None.
    """
    name = os.path.basename(path)
    with _parent_fd(path) as parent:
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if wanted(info.st_mode) and info.st_nlink == 1:
            return None
        why = "it was %s, not %s" % (_kind(info.st_mode), what) if not wanted(info.st_mode) else \
            "it had %d hard links" % info.st_nlink
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)
        return "%s removed: %s" % (path, why)


def query_unix_socket(path, request, limit=1024 * 1024, timeout=DEFAULT_TIMEOUT):
    """Send ``request`` to the proxy-made Unix stream socket ``path`` and return its answer (until it closes).

    The socket is connected only when it is a socket with a single link,
    through ``/proc/self/fd`` of the O_PATH descriptor that was checked (so
    neither a link nor a swap after the check redirects the connection). An
    answer longer than ``limit`` bytes, or an exchange longer than
    ``timeout`` seconds in all, is refused. None when there is no socket.
    """
    deadline = time.monotonic() + timeout
    try:
        path_fd, dummy = _checked_path_fd(path, stat.S_ISSOCK, "a socket")
    except FileNotFoundError:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            def remaining():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UntrustedFileError(path, "did not answer within %.1fs" % timeout, errno.ETIMEDOUT)
                return left
            try:
                sock.settimeout(remaining())
                sock.connect("/proc/self/fd/%d" % path_fd)
                view = memoryview(request)
                while view:
                    sock.settimeout(remaining())
                    view = view[sock.send(view):]
                chunks, total = [], 0
                while True:
                    sock.settimeout(remaining())
                    chunk = sock.recv(min(_CHUNK, limit + 1 - total))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    total += len(chunk)
                    if total > limit:
                        raise UntrustedFileError(path, "answered more than %d bytes; ignored" % limit, errno.EFBIG)
            except socket.timeout:
                raise UntrustedFileError(path, "did not answer within %.1fs" % timeout, errno.ETIMEDOUT) from None
            except UntrustedFileError:
                raise
            except OSError as exc:
                raise UntrustedFileError(path, "cannot be queried (%s)" % os.strerror(exc.errno or 0),
                                         exc.errno or errno.EIO) from None
            return b"".join(chunks)
    finally:
        os.close(path_fd)
