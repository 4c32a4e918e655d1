# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Root reads a proxy-writable path only as untrusted.py allows: every hostile swap is refused, fast."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import untrusted
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.untrusted import UntrustedFileError

SECRET = b"root-only secret: admin-token-0123456789\n"


@pytest.fixture
def dirs(tmp_path):
    """A root-only file outside, and the proxy's writable dir."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    os.chmod(secret, 0o600)
    own = tmp_path / "run" / "proxy"
    own.mkdir(parents=True)
    return secret, own


def hostile(kind, own, secret, name):
    """Put ``kind`` at ``own/name``, as a compromised proxy would."""
    path = own / name
    if kind == "symlink":
        os.symlink(str(secret), str(path))
    elif kind == "hardlink":
        os.link(str(secret), str(path))
    elif kind == "fifo":
        os.mkfifo(str(path))
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.listen(1)
        return sock
    elif kind == "devzero":
        os.symlink("/dev/zero", str(path))
    elif kind == "directory":
        path.mkdir()
    elif kind == "dirlink":
        os.symlink(str(secret.parent), str(path))
    return None


KINDS = ["symlink", "hardlink", "fifo", "socket", "devzero", "directory", "dirlink"]


def within_one_second(call):
    """``call()``'s exception, proving it came within 1 s (a FIFO must not block)."""
    result = {}

    def run():
        try:
            result["value"] = call()
        except Exception as exc:  # pylint: disable=broad-except
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(1.0)
    assert not thread.is_alive(), "blocked for more than 1 s"
    assert time.monotonic() - started < 1.0
    return result


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reader", ["read_file", "read_tail", "read_from", "read_pid_file"])
def test_every_hostile_swap_is_refused_within_one_second(dirs, kind, reader):
    secret, own = dirs
    keep = hostile(kind, own, secret, "proxy.log")
    path = str(own / "proxy.log")
    calls = {"read_file": lambda: untrusted.read_file(path), "read_tail": lambda: untrusted.read_tail(path),
             "read_from": lambda: untrusted.read_from(path, 0), "read_pid_file": lambda: untrusted.read_pid_file(path)}
    try:
        result = within_one_second(calls[reader])
    finally:
        if keep is not None:
            keep.close()
    assert isinstance(result.get("error"), UntrustedFileError), result
    message = str(result["error"])
    assert path in message and "secret" not in message.replace(str(secret), "")
    assert SECRET.decode() not in message and "\n" not in message
    assert secret.read_bytes() == SECRET  # nothing outside was changed


def test_a_link_as_the_directory_on_the_way_is_refused(dirs):
    secret, own = dirs
    link = own.parent / "elsewhere"
    os.symlink(str(secret.parent), str(link))
    with pytest.raises(UntrustedFileError) as caught:
        untrusted.read_file(str(link / "secret.txt"))
    assert "directory" in str(caught.value)


def test_a_regular_file_is_read_and_a_missing_one_is_none(dirs):
    dummy, own = dirs
    (own / "proxy.log").write_bytes(b"line 1\nline 2\n")
    assert untrusted.read_file(str(own / "proxy.log")) == b"line 1\nline 2\n"
    assert untrusted.read_tail(str(own / "proxy.log"), limit=7) == b"line 2\n"
    assert untrusted.read_file(str(own / "nothing")) is None
    assert untrusted.read_tail(str(own / "nothing")) == b""
    assert untrusted.read_from(str(own / "nothing"), 0) is None


def test_a_huge_file_is_never_read_whole(dirs):
    dummy, own = dirs
    path = own / "proxy.log"
    with open(path, "wb") as handle:
        handle.truncate(8 * 1024 ** 3)  # 8 GiB, sparse
        handle.seek(8 * 1024 ** 3 - 6)
        handle.write(b"last\n\n")
    started = time.monotonic()
    with pytest.raises(UntrustedFileError) as caught:
        untrusted.read_file(str(path), limit=4096)
    assert "more than the 4096 read" in str(caught.value)
    assert untrusted.read_tail(str(path), limit=6) == b"last\n\n"
    inode, start, data = untrusted.read_from(str(path), 0, limit=1000)
    assert start == 0 and len(data) == 1000 and inode == os.stat(path).st_ino
    assert time.monotonic() - started < 1.0


def test_read_from_keeps_its_place_and_starts_over_on_a_new_file(dirs):
    dummy, own = dirs
    path = own / "proxy.log"
    path.write_bytes(b"a\nb\n")
    inode, start, data = untrusted.read_from(str(path), 0)
    assert (start, data) == (0, b"a\nb\n")
    with open(path, "ab") as handle:
        handle.write(b"c\n")
    assert untrusted.read_from(str(path), 4, inode)[1:] == (4, b"c\n")
    os.unlink(path)
    path.write_bytes(b"new\n")
    assert untrusted.read_from(str(path), 6, inode)[1:] == (0, b"new\n")  # a new inode: from the start


@pytest.mark.parametrize("garbage", [b"", b"\n", b"0\n", b"-1\n", b"+12\n", b"12 \n", b" 12", b"012\n", b"12\n13\n",
                                     b"\xd9\xa5\n", b"1e3\n", b"0x10\n", b"99999999999\n", b"4194305\n", b"12\r\n",
                                     b"12\x00", b"9" * 30])
def test_pid_file_garbage_is_no_pid(dirs, garbage):
    dummy, own = dirs
    (own / "proxy.pid").write_bytes(garbage)
    assert untrusted.read_pid_file(str(own / "proxy.pid")) is None


def test_a_pid_is_believed_only_when_verified(dirs):
    dummy, own = dirs
    (own / "proxy.pid").write_bytes(b"%d\n" % os.getpid())
    assert untrusted.read_pid_file(str(own / "proxy.pid")) == os.getpid()
    assert untrusted.read_pid_file(str(own / "proxy.pid"), verify=lambda pid: False) is None
    assert untrusted.read_pid_file(str(own / "proxy.pid"), verify=lambda pid: pid == os.getpid()) == os.getpid()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=30))
def test_parse_pid_takes_only_plain_decimal_numbers(data):
    try:
        pid = untrusted.parse_pid(data)
    except UntrustedFileError:
        return
    assert data.rstrip(b"\n").isdigit() and b"%d" % pid == data.rstrip(b"\n") and 0 < pid <= untrusted.pid_max()


# -- the stats socket --------------------------------------------------------------
class Server:
    """A Unix socket server that answers each connection with ``answer`` (or stalls)."""

    def __init__(self, path, answer=b"", stall=0.0, endless=False):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(4)
        self.answer, self.stall, self.endless = answer, stall, endless
        self.requests = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            conn, dummy = self.sock.accept()
        except OSError:
            return
        with conn:
            self.requests.append(conn.recv(100))
            time.sleep(self.stall)
            try:
                if self.endless:
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline:
                        conn.sendall(b"x" * 65536)
                else:
                    conn.sendall(self.answer)
            except OSError:
                pass

    def close(self):
        self.sock.close()


def test_the_stats_socket_is_queried(dirs):
    dummy, own = dirs
    server = Server(str(own / "haproxy.sock"), answer=b"# pxname,svname\nlistener_0,FRONTEND\n")
    try:
        assert untrusted.query_unix_socket(str(own / "haproxy.sock"), b"show stat\n") == server.answer
        assert server.requests == [b"show stat\n"]
    finally:
        server.close()
    assert untrusted.query_unix_socket(str(own / "nothing.sock"), b"show stat\n") is None


def test_a_long_socket_path_works_through_proc_self_fd(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = str(deep / "haproxy.sock")
    assert len(path) > 108
    monkeypatch.chdir(str(deep))
    server = Server("haproxy.sock", answer=b"ok")
    try:
        assert untrusted.query_unix_socket(path, b"show stat\n") == b"ok"
    finally:
        server.close()


def test_a_stalling_socket_is_cut_at_the_deadline(dirs):
    dummy, own = dirs
    server = Server(str(own / "haproxy.sock"), answer=b"late", stall=3)
    started = time.monotonic()
    try:
        with pytest.raises(UntrustedFileError) as caught:
            untrusted.query_unix_socket(str(own / "haproxy.sock"), b"show stat\n", timeout=0.5)
    finally:
        server.close()
    assert time.monotonic() - started < 1.0 and "did not answer within" in str(caught.value)


def test_an_endless_socket_is_cut_at_its_byte_bound(dirs):
    dummy, own = dirs
    server = Server(str(own / "haproxy.sock"), endless=True)
    try:
        with pytest.raises(UntrustedFileError) as caught:
            untrusted.query_unix_socket(str(own / "haproxy.sock"), b"show stat\n", limit=100000)
    finally:
        server.close()
    assert "more than 100000 bytes" in str(caught.value)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "regular", "devzero"])
def test_the_socket_reader_connects_only_to_a_socket_of_one_link(dirs, tmp_path, kind):
    secret, own = dirs
    # A root service's socket elsewhere, which a link would point root at.
    target = tmp_path / "root-service.sock"
    server = Server(str(target), answer=b"root service answered")
    path = own / "haproxy.sock"
    try:
        if kind == "symlink":
            os.symlink(str(target), str(path))
        elif kind == "hardlink":
            os.link(str(target), str(path))
        elif kind == "fifo":
            os.mkfifo(str(path))
        elif kind == "regular":
            path.write_bytes(b"x")
        else:
            os.symlink("/dev/zero", str(path))
        result = within_one_second(lambda: untrusted.query_unix_socket(str(path), b"show stat\n"))
    finally:
        server.close()
    assert isinstance(result.get("error"), UntrustedFileError), result
    assert server.requests == []  # never connected


# -- escaping ----------------------------------------------------------------------
def test_escape_keeps_printable_ascii_only_and_cuts():
    assert untrusted.escape(b"ok \x1b[31mred\n\xff\\") == "ok \\x1b[31mred\\x0a\\xff\\\\"
    assert untrusted.escape("caf\u00e9") == "caf\\xc3\\xa9"
    long = untrusted.escape(b"a" * 5000 + b"END", limit=100)
    assert long.endswith("END") and long.startswith("...(4903 bytes cut)") and len(long) < 130


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=1000)), st.integers(min_value=1, max_value=600))
def test_escape_always_gives_one_bounded_printable_line(data, limit):
    text = untrusted.escape(data, limit=limit)
    assert all(0x20 <= ord(c) <= 0x7e for c in text)
    assert len(text) <= limit + 30


def test_a_proxy_output_error_keeps_proxy_bytes_out_of_its_public_message():
    exc = untrusted.ProxyOutputError("haproxy for session u did not start", b"secret\n\x1b[0m", field="uid", value="u")
    assert untrusted.public_message(exc) == "haproxy for session u did not start"
    assert str(exc) == "haproxy for session u did not start: secret\\x0a\\x1b[0m"
    assert untrusted.public_message(ValueError("plain")) == "plain"


# -- the exporter's readers (proxy_reports) ------------------------------------------
def test_the_log_counter_refuses_hostile_logs_fast_and_holds_no_lock(dirs):
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import proxy_reports
    secret, own = dirs
    paths = {"run_dir": str(own.parent), "log_file": str(own / "proxy.log")}
    for kind in ("symlink", "hardlink", "fifo", "devzero"):
        hostile(kind, own, secret, "proxy.log")
        result = within_one_second(lambda: proxy_reports.nginx_report(paths, [5100]))
        assert isinstance(result.get("error"), UntrustedFileError), (kind, result)
        assert not proxy_reports.LogCounter._lock.locked()  # pylint: disable=protected-access
        os.unlink(str(own / "proxy.log"))


def test_the_log_counter_reads_a_huge_log_in_bounded_steps(dirs):
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import proxy_reports
    dummy, own = dirs
    line = b"2026/12/02 [error] 7#7: *1 connect() failed (111: Connection refused), server: 127.0.0.1:5100\n"
    with open(own / "proxy.log", "wb") as handle:
        handle.write(line * 30000)  # ~2.8 MB: three reads of at most 1 MiB
    paths = {"run_dir": str(own.parent), "log_file": str(own / "proxy.log")}
    seen = [proxy_reports.nginx_report(paths, [5100])[0]["target"] for dummy2 in range(4)]
    assert seen[0] <= proxy_reports.MAX_LOG_READ // len(line) + 1 and seen[-1] == 30000, seen


def test_the_stats_reader_ignores_a_hostile_stats_socket(dirs, tmp_path):
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import proxy_reports
    secret, own = dirs
    target = tmp_path / "root.sock"
    server = Server(str(target), answer=b"# pxname,svname,ereq\nlistener_0,FRONTEND,7\n")
    try:
        os.symlink(str(target), str(own / "haproxy.sock"))
        paths = {"run_dir": str(own.parent), "stats_socket": str(own / "haproxy.sock")}
        result = within_one_second(lambda: proxy_reports.haproxy_report(paths, [5100]))
        assert isinstance(result.get("error"), UntrustedFileError) and server.requests == []
    finally:
        server.close()
