# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Listener port reservation: free for real, never shared between sessions."""

from __future__ import annotations

import errno
import socket

from .errors import PortsExhausted, invalid


def port_is_free(ip, port, protocols=("tcp",)):
    """True when ``ip:port`` can be bound now for every protocol in ``protocols``."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    for proto in protocols:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(family, kind)
        try:
            if proto == "tcp":
                # Ports in TIME_WAIT are free for a listener; Linux still
                # refuses the bind when another socket listens there.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            if exc.errno == errno.EADDRNOTAVAIL:
                raise invalid("listener_ip", ip, "is not an address of this host") from None
            raise
        finally:
            sock.close()
    return True


def reserve_ports(count, port_range, listener_ip, taken=(), keep=(), protocols=("tcp",)):
    """Choose ``count`` ports for one session.

    ``keep`` are the ports the session already holds: those still inside
    ``port_range`` are kept first (in order), so asking again with the same
    uid returns the same ports. New ones are the lowest in the range that no
    other session holds (``taken``) and that can be bound now.
    """
    start, end = port_range
    taken = set(taken)
    chosen = [p for p in keep if start <= p <= end and p not in taken][:count]
    for port in range(start, end + 1):
        if len(chosen) == count:
            break
        if port in taken or port in chosen:
            continue
        if port_is_free(listener_ip, port, protocols):
            chosen.append(port)
    if len(chosen) < count:
        raise PortsExhausted("num_conn %r: only %d free port(s) left in port_range %d-%d on %s"
                             % (count, len(chosen), start, end, listener_ip), field="num_conn", value=count)
    return chosen
