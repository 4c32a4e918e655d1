# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 20 item 2 under systemd: each session's unit runs as its pool uid.

The unit text (User=/Group= the pool's numbers, the hardening kept), the pool
account the supervisor makes so systemd can resolve them (groupadd/useradd
argv, never made twice, never over someone else's account), the pool taking
its own accounts for free uids, and ``auto`` meaning the pool under systemd.
No systemd here: tests/integration/test_systemd.py runs the units for real.
"""

from __future__ import annotations

import collections
import os
import subprocess

import pytest

from ansible_collections.scistream.gateway.plugins.module_utils.s2ds import uidpool
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.errors import S2DSError
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes import privileges, process
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.supervisors import systemd
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.session import SessionRecord
from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.store import SessionStore

UID = "cccccccc-0000-4000-8000-0000000000e1"
Passwd = collections.namedtuple("Passwd", "pw_name pw_uid pw_gid")
Group = collections.namedtuple("Group", "gr_name gr_gid gr_mem")


def record(proxy_uid=7401, ports=(5100, 5101), backend="haproxy"):
    return SessionRecord(uid=UID, role="PROD", backend=backend, runtime="process", listener_ip="127.0.0.1",
                         ports=list(ports), targets=["127.0.0.1:7000"], proxy_uid=proxy_uid)


@pytest.fixture
def runtime(tmp_path):
    return process.ProcessRuntime("systemd", "pool", proxy_uid_range="7400-7409",
                                  uid_registry=str(tmp_path / "uids" / "registry.json"))


@pytest.fixture
def store(tmp_path):
    return SessionStore(str(tmp_path / "state"))


def service_lines(text):
    section = text.split("[Service]\n", 1)[1].split("\n[Install]", 1)[0]
    return [line for line in section.splitlines() if line]


def test_pool_under_systemd_is_accepted_and_auto_means_pool_where_the_account_exists(tmp_path, monkeypatch):
    registry = str(tmp_path / "registry.json")
    assert process.ProcessRuntime("systemd", "pool", uid_registry=registry).uid_pool is not None
    monkeypatch.setattr(privileges, "resolve_proxy_account",
                        lambda value="auto": privileges.ProxyAccount("scistream", 7400, 7400))
    auto = process.ProcessRuntime("systemd", "auto", uid_registry=registry)
    assert auto.uid_pool is not None and (auto.uid_pool.start, auto.uid_pool.end) == (7400, 8399)
    assert auto.supervisor.name == "systemd"
    # A named account stays shared (the operator's choice), root stays root: no pool.
    assert process.ProcessRuntime("systemd", "root", uid_registry=registry).uid_pool is None


@pytest.mark.parametrize("backend", ["haproxy", "nginx", "stunnel"])
def test_the_unit_runs_as_the_sessions_pool_uid_with_the_hardening(runtime, store, backend):
    text = runtime.supervisor.unit_text(get_backend(backend), store, record(7403, backend=backend))
    lines = service_lines(text)
    assert "User=7403" in lines and "Group=7403" in lines
    assert not any(line.startswith(("DynamicUser=", "SupplementaryGroups=")) for line in lines)
    own_dir = os.path.join(store.run_dir(UID), "proxy")
    # The proxy writes only its own proxy/ dir; no capability at all, and no set-uid calls.
    assert "ReadWritePaths=" + own_dir in lines
    assert "CapabilityBoundingSet=" in lines and "AmbientCapabilities=" in lines
    assert "SystemCallFilter=~@privileged" in lines and "NoNewPrivileges=yes" in lines
    for setting in ("ProtectSystem=strict", "PrivateDevices=yes", "PrivateIPC=yes", "ProtectProc=invisible",
                    "RestrictSUIDSGID=yes", "MemoryDenyWriteExecute=yes", "RemoveIPC=yes", "UMask=0077"):
        assert setting in lines, setting
    assert "WantedBy=multi-user.target" in text  # comes back at boot
    # Two sessions, two identities: the unit text differs only where the session does.
    other = runtime.supervisor.unit_text(get_backend(backend), store, record(7404, backend=backend))
    assert "User=7404" in service_lines(other) and "User=7403" not in service_lines(other)


def test_a_low_port_pool_unit_gets_net_bind_service_alone(runtime, store):
    lines = service_lines(runtime.supervisor.unit_text(get_backend("haproxy"), store, record(7405, ports=(900,))))
    assert "User=7405" in lines
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in lines and "AmbientCapabilities=CAP_NET_BIND_SERVICE" in lines
    assert "SystemCallFilter=~@privileged" in lines


def test_a_record_from_before_the_pool_keeps_the_shared_account(tmp_path, store, monkeypatch):
    monkeypatch.setattr(privileges, "resolve_proxy_account",
                        lambda value="auto": privileges.ProxyAccount("scistream", 7400, 7400))
    monkeypatch.setattr(process, "resolve_proxy_account",
                        lambda value="auto": privileges.ProxyAccount("scistream", 7400, 7400))
    runtime = process.ProcessRuntime("systemd", "auto", uid_registry=str(tmp_path / "registry.json"))
    lines = service_lines(runtime.supervisor.unit_text(get_backend("haproxy"), store, record(None)))
    assert "User=scistream" in lines and "Group=7400" in lines


# -- the pool account systemd needs ---------------------------------------------------------------
class UserDatabase:
    """pwd/grp stand-ins; groupadd/useradd (through run_command) add to them."""

    def __init__(self, monkeypatch, users=(), groups=()):
        self.users = {entry.pw_uid: entry for entry in users}
        self.groups = {entry.gr_gid: entry for entry in groups}
        self.calls = []
        for module in (uidpool, systemd):
            monkeypatch.setattr(module.pwd, "getpwuid", self.getpwuid)
            monkeypatch.setattr(module.pwd, "getpwnam", self.getpwnam)
            monkeypatch.setattr(module.pwd, "getpwall", lambda: list(self.users.values()))
            monkeypatch.setattr(module.grp, "getgrgid", self.getgrgid)
            monkeypatch.setattr(module.grp, "getgrnam", self.getgrnam)
        monkeypatch.setattr(systemd, "run_command", self.run)

    def getpwuid(self, uid):
        return self.users[uid]

    def getpwnam(self, name):
        return next(entry for entry in self.users.values() if entry.pw_name == name) if any(
            entry.pw_name == name for entry in self.users.values()) else {}[name]

    def getgrgid(self, gid):
        return self.groups[gid]

    def getgrnam(self, name):
        return next(entry for entry in self.groups.values() if entry.gr_name == name) if any(
            entry.gr_name == name for entry in self.groups.values()) else {}[name]

    def run(self, argv, timeout=30):
        self.calls.append(argv)
        number = int(argv[argv.index("--uid" if argv[0] == "useradd" else "--gid") + 1])
        if argv[0] == "groupadd":
            self.groups[number] = Group(argv[-1], number, [])
        else:
            self.users[number] = Passwd(argv[-1], number, int(argv[argv.index("--gid") + 1]))
        return subprocess.CompletedProcess(argv, 0, b"", None)


def test_the_pool_account_is_made_once_with_no_login_and_no_member(monkeypatch):
    users = UserDatabase(monkeypatch)
    assert systemd.ensure_pool_account(7401) is True
    groupadd, useradd = users.calls
    assert groupadd == ["groupadd", "--system", "--gid", "7401", "scistream-p7401"]
    assert useradd[:1] == ["useradd"] and useradd[-1] == "scistream-p7401"
    for flag, value in (("--uid", "7401"), ("--gid", "7401"), ("--home-dir", "/")):
        assert useradd[useradd.index(flag) + 1] == value
    assert {"--system", "--no-log-init", "--no-create-home", "--no-user-group"} <= set(useradd)
    assert "nologin" in useradd[useradd.index("--shell") + 1] or useradd[useradd.index("--shell") + 1] == "/bin/false"
    assert "--groups" not in useradd and "--password" not in useradd  # no other group; shadow's locked "!"
    assert uidpool.is_pool_account(7401)
    assert systemd.ensure_pool_account(7401) is False and len(users.calls) == 2  # idempotent


def test_a_group_left_by_an_interrupted_run_is_finished(monkeypatch):
    users = UserDatabase(monkeypatch, groups=[Group("scistream-p7402", 7402, [])])
    assert systemd.ensure_pool_account(7402) is True
    assert [call[0] for call in users.calls] == ["useradd"]


@pytest.mark.parametrize("users,groups", [
    ([Passwd("alice", 7401, 7401)], []),                        # an operator's account has the uid
    ([], [Group("staff", 7401, [])]),                           # an operator's group has the gid
    ([], [Group("scistream-p7401", 7401, ["alice"])]),          # someone joined the pool's group
    ([Passwd("scistream-p7401", 7401, 100)], [Group("scistream-p7401", 7401, [])]),  # not its only group
    ([Passwd("scistream-p7401", 9000, 9000)], []),              # the name is another uid's
    ([Passwd("bob", 7500, 7401)], [Group("scistream-p7401", 7401, [])]),  # bob's primary group is the pool's
])
def test_someone_elses_account_is_never_taken_over(monkeypatch, users, groups):
    database = UserDatabase(monkeypatch, users=users, groups=groups)
    with pytest.raises(S2DSError) as refused:
        systemd.ensure_pool_account(7401)
    assert refused.value.field == "proxy_user" and "7401" in str(refused.value)
    assert database.calls == []


def test_the_pool_hands_out_uids_of_its_own_accounts_and_skips_anyone_elses(monkeypatch, tmp_path):
    UserDatabase(monkeypatch, users=[Passwd("scistream-p7400", 7400, 7400), Passwd("alice", 7401, 7401)],
                 groups=[Group("scistream-p7400", 7400, []), Group("alice", 7401, [])])
    monkeypatch.setattr(uidpool, "uids_in_use", set)
    pool = uidpool.UidPool("7400-7403", registry=str(tmp_path / "r" / "registry.json"))
    assert pool.claim(str(tmp_path / "a"), "s1") == 7400  # the pool's account, free again
    assert pool.claim(str(tmp_path / "a"), "s2") == 7402  # alice keeps 7401


def test_a_lock_held_by_another_program_is_waited_for_then_reported(monkeypatch):
    attempts = []

    def locked(argv, timeout=30):
        attempts.append(argv)
        return subprocess.CompletedProcess(argv, 1, b"groupadd: cannot lock /etc/group; try again later.\n", None)
    monkeypatch.setattr(systemd, "run_command", locked)
    monkeypatch.setattr(systemd, "ACCOUNT_LOCK_WAIT", 0.5)
    with pytest.raises(S2DSError) as failed:
        systemd._account_tool(["groupadd", "--system", "--gid", "7401", "scistream-p7401"])  # pylint: disable=protected-access
    assert len(attempts) >= 2 and "cannot lock" in str(failed.value) and failed.value.field == "proxy_user"


def test_start_makes_the_account_before_it_writes_the_unit(runtime, store, monkeypatch):
    events = []
    monkeypatch.setattr(systemd, "ensure_pool_account", lambda uid: events.append(("account", uid)))
    monkeypatch.setattr(systemd, "write_file_atomic", lambda path, text, mode: events.append(("unit", path)))
    monkeypatch.setattr(systemd.SystemdSupervisor, "_systemctl", lambda self, *args: events.append(args[0]))
    runtime.supervisor.start(get_backend("haproxy"), store, record(7406))
    assert events[0] == ("account", 7406) and events[1][0] == "unit"
    assert events[2:] == ["daemon-reload", "enable", "restart"]
