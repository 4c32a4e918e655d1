# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The metric families of one scrape, read through ``Gateway.sessions()`` (never around it).

Labels are only ``uid, role, backend, runtime, encryption`` per session,
plus ``listener`` per listener and a ``direction`` / ``reason`` from a
fixed set: as many series as sessions and listeners, nothing unbounded.
"""

from __future__ import annotations

import time

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    HAS_PROMETHEUS_CLIENT = True
except ImportError:  # the exporter's main() says what to install
    HAS_PROMETHEUS_CLIENT = False

from ..s2ds.proxy_reports import REASONS

SESSION_LABELS = ["uid", "role", "backend", "runtime", "encryption"]
LISTENER_LABELS = SESSION_LABELS + ["listener"]
DIRECTIONS = ("in", "out")


def _session_labels(session):
    return [str(session.get(name) or "") for name in SESSION_LABELS]


class SessionCollector:
    """A prometheus_client collector: every session of ``gateway`` on every scrape."""

    def __init__(self, gateway):
        self.gateway = gateway

    def describe(self):
        return []  # the families are made per scrape; nothing to check at registration

    def collect(self):
        started = time.monotonic()
        families = Families()
        for session in self.gateway.sessions():
            families.add_session(session)
        yield from families.all()
        duration = GaugeMetricFamily("scistream_exporter_scrape_duration_seconds",
                                     "Time this exporter took to read every session, in seconds.")
        duration.add_metric([], time.monotonic() - started)
        yield duration


class Families:
    """The metric families of one scrape, filled session by session."""

    def __init__(self):
        self.up = GaugeMetricFamily("scistream_session_up", "1 while the session's proxy runs and every listener "
                                    "listens (nftables: its rules are in place).", labels=SESSION_LABELS)
        self.running = GaugeMetricFamily("scistream_session_running", "1 while the session's proxy (or ruleset) is "
                                         "in place.", labels=SESSION_LABELS)
        self.counted = GaugeMetricFamily("scistream_session_counters_readable", "1 when the session's traffic "
                                         "counters could be read in this scrape (see s2ds_info traffic_error).",
                                         labels=SESSION_LABELS)
        self.sessions = GaugeMetricFamily("scistream_sessions", "Sessions on this gateway by role.",
                                          labels=["role"])
        self.listener_up = GaugeMetricFamily("scistream_listener_up", "1 while the listener listens (nftables, "
                                             "kernel and Janus sessions: while the session is up).",
                                             labels=LISTENER_LABELS)
        self.bytes = CounterMetricFamily("scistream_listener_bytes", "Bytes of whole IP packets through the "
                                         "listener: in = sent to it by its clients, out = sent back.",
                                         labels=LISTENER_LABELS + ["direction"])
        self.packets = CounterMetricFamily("scistream_listener_packets", "Packets through the listener.",
                                           labels=LISTENER_LABELS + ["direction"])
        self.connections = CounterMetricFamily("scistream_listener_connections", "TCP connections the listener "
                                               "accepted (SYN-ACKs it sent).", labels=LISTENER_LABELS)
        self.attempts = CounterMetricFamily("scistream_listener_connection_attempts", "TCP connections clients "
                                            "tried to open to the listener (SYNs).", labels=LISTENER_LABELS)
        self.active = GaugeMetricFamily("scistream_listener_active_connections", "Established TCP connections on "
                                        "the listener's port now.", labels=LISTENER_LABELS)
        self.resets = CounterMetricFamily("scistream_listener_resets", "TCP resets on the listener's port: in = "
                                          "from clients, out = sent by this host (refused or reset).",
                                          labels=LISTENER_LABELS + ["direction"])
        self.errors = CounterMetricFamily("scistream_listener_connection_errors", "Failed connections as the "
                                          "proxy reports them, by reason (target, tls_handshake, reset, request, "
                                          "response).", labels=LISTENER_LABELS + ["reason"])
        self.expires = GaugeMetricFamily("scistream_session_expires_in_seconds", "Seconds until the session is "
                                         "released by its lifetime or idle timeout (reason), for sessions that have one.",
                                         labels=SESSION_LABELS + ["reason"])
        self.rate = GaugeMetricFamily("scistream_session_rate_bits_per_second", "The rate the session's stream may "
                                      "leave the gateway at (enforced in the kernel), for sessions that have one.",
                                      labels=SESSION_LABELS)
        self.roles = {"PROD": 0, "CONS": 0}

    def add_session(self, session):
        if session.get("broken"):
            self.up.add_metric([session["uid"], "", "", "", ""], 0)
            return
        labels = _session_labels(session)
        self.roles[session.get("role")] = self.roles.get(session.get("role"), 0) + 1
        self.up.add_metric(labels, 1 if session.get("healthy") else 0)
        self.running.add_metric(labels, 1 if session.get("running") else 0)
        self.counted.add_metric(labels, 0 if "traffic_error" in session or "traffic" not in session else 1)
        if session.get("rate"):
            self.rate.add_metric(labels, session["rate"])
        if session.get("expires_in") is not None:
            self.expires.add_metric(labels + [str(session.get("expires_reason") or "")], session["expires_in"])
        not_listening = set(session.get("not_listening", ()))
        for port, listener in zip(session.get("ports", []), session.get("listeners", [])):
            up = port not in not_listening if "not_listening" in session else bool(session.get("healthy"))
            self.listener_up.add_metric(labels + [listener], 1 if up and session.get("running") else 0)
        for entry in session.get("traffic") or []:
            self.add_listener(labels + [entry["listener"]], entry)

    def add_listener(self, labels, entry):
        for direction in DIRECTIONS:
            if "bytes_" + direction in entry:
                self.bytes.add_metric(labels + [direction], entry["bytes_" + direction])
                self.packets.add_metric(labels + [direction], entry["packets_" + direction])
            if "resets_" + direction in entry:
                self.resets.add_metric(labels + [direction], entry["resets_" + direction])
        if "connections" in entry:
            self.connections.add_metric(labels, entry["connections"])
            self.attempts.add_metric(labels, entry["connection_attempts"])
        if "active_connections" in entry:
            self.active.add_metric(labels, entry["active_connections"])
        for reason in REASONS if entry.get("errors") else ():
            self.errors.add_metric(labels + [reason], entry["errors"][reason])

    def all(self):
        for role, count in sorted(self.roles.items()):
            self.sessions.add_metric([role], count)
        return [self.up, self.running, self.counted, self.sessions, self.listener_up, self.bytes, self.packets,
                self.connections, self.attempts, self.active, self.resets, self.errors, self.expires, self.rate]
