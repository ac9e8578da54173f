"""Admin actions: one client's run in order and never at once; each recorded with its
outcome in the audit log, on both engines. And the users file behind bcfg2-admin web user."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from bcfg2.web.audit import Actions, AuditLog
from bcfg2.web.users import UserError, Users


def test_actions_on_one_client_are_serialised_in_order(tmp_path: Path, store_database) -> None:
    audit = AuditLog(str(tmp_path / "audit.sqlite"), store_database())
    running: dict[str, int] = {}
    overlaps: list[str] = []
    done: list[tuple[str, str]] = []
    lock = threading.Lock()
    gate = threading.Event()

    def perform(client: str, action: str, detail: str) -> str:
        with lock:
            running[client] = running.get(client, 0) + 1
            if running[client] > 1:
                overlaps.append(client)
        gate.wait(10)  # every action is queued before any finishes
        with lock:
            running[client] -= 1
            done.append((client, detail))
        if detail == "3":
            raise RuntimeError("it broke")
        return f"did {detail}"

    actions = Actions(audit, perform, workers=4)
    ids = [actions.submit(f"admin{n % 2}", "a" if n % 3 else "b", "pin", str(n))
           for n in range(9)]
    queued = [audit.get(i).status for i in ids]
    assert set(queued) <= {"queued", "running"}
    gate.set()
    assert actions.wait_idle(30)
    assert overlaps == []
    assert [d for c, d in done if c == "a"] == ["1", "2", "4", "5", "7", "8"]
    assert [d for c, d in done if c == "b"] == ["0", "3", "6"]
    entries = {e.detail: e for e in audit.recent(limit=20)}
    assert (entries["3"].status, entries["3"].reason) == ("failed", "it broke")
    assert (entries["4"].status, entries["4"].reason, entries["4"].user) == (
        "done", "did 4", "admin0")
    assert entries["4"].finished >= entries["4"].timestamp
    assert [e.detail for e in audit.recent("b")] == ["6", "3", "0"]
    actions.stop()
    late = actions.submit("admin", "a", "pin", "late")
    assert (audit.get(late).status, audit.get(late).reason) == ("failed",
                                                                "the server is stopping")
    audit.close()


def test_a_stopping_server_fails_the_queued_actions_saying_so(tmp_path: Path) -> None:
    audit = AuditLog(str(tmp_path / "audit.sqlite"))
    started = threading.Event()
    release = threading.Event()

    def perform(client: str, action: str, detail: str) -> str:
        started.set()
        release.wait(10)
        return "ok"

    actions = Actions(audit, perform, workers=1)
    first = actions.submit("admin", "a", "expire", "1")
    second = actions.submit("admin", "a", "expire", "2")
    assert started.wait(10)
    stopper = threading.Thread(target=actions.stop)
    stopper.start()
    deadline = time.monotonic() + 10
    while not actions._stopped and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    stopper.join(10)
    assert audit.get(first).status == "done"
    assert (audit.get(second).status, audit.get(second).reason) == ("failed", "the server stopped")
    audit.close()


def test_users_are_added_checked_changed_and_removed(tmp_path: Path) -> None:
    users = Users(str(tmp_path / "web" / "users.json"))
    users.add("alice", "admin", "correct horse")
    assert oct((tmp_path / "web" / "users.json").stat().st_mode & 0o777) == "0o600"
    assert "correct horse" not in (tmp_path / "web" / "users.json").read_text()
    assert users.verify("alice", "correct horse").admin
    assert users.verify("alice", "wrong horse") is None
    assert users.verify("bob", "correct horse") is None
    for bad in (("al ice", "admin", "password1"), ("bob", "root", "password1"),
                ("bob", "viewer", "short"), ("alice", "viewer", "password1")):
        with pytest.raises(UserError):
            users.add(*bad)
    users.passwd("alice", "battery staple", role="viewer")
    assert users.verify("alice", "correct horse") is None
    assert users.verify("alice", "battery staple").role == "viewer"
    users.remove("alice")
    assert users.all() == {}


def test_bcfg2_admin_web_user(tmp_path: Path, repo, monkeypatch, capsys) -> None:
    from bcfg2.admin import main

    state = tmp_path / "state"
    base = ["-C", "/dev/null", "-Q", str(repo), "--state-dir", str(state)]

    def admin(*words: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        status = main([*base, "web", "user", *words])
        out, err = capsys.readouterr()
        return status, out, err

    assert admin("add", "carol", "--role", "admin", stdin="s3cret-pass\n")[0] == 0
    assert admin("add", "dave", stdin="other-pass\n")[0] == 0
    assert admin("list")[1] == "carol\tadmin\ndave\tviewer\n"
    status, _, err = admin("add", "dave", stdin="other-pass\n")
    assert status != 0 and "exists" in err
    assert admin("passwd", "dave", "--role", "admin", stdin="new-pass-1\n")[0] == 0
    users = Users(str(state / "web" / "users.json"))
    assert users.verify("dave", "new-pass-1").admin
    assert admin("del", "dave")[0] == 0
    status, _, err = admin("del", "dave")
    assert status != 0 and "no such user" in err
    assert admin("list")[1] == "carol\tadmin\n"


def test_servers_sharing_postgresql_take_turns_on_a_client(tmp_path: Path, pg_database) -> None:
    """Two servers' queues (one database): their actions on one client never overlap."""
    from bcfg2.storage.postgresql import PostgreSQLDatabase

    logs = [AuditLog(str(tmp_path / f"audit{n}.sqlite"),
                     PostgreSQLDatabase(pg_database.settings())) for n in range(2)]
    running = []
    overlaps = []
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=10)

    def perform(client: str, action: str, detail: str) -> str:
        with lock:
            running.append(detail)
            if len([d for d in running if d]) > 1:
                overlaps.append(detail)
        time.sleep(0.05)  # the work itself (not synchronisation): long enough to overlap
        with lock:
            running.remove(detail)
        return "ok"

    servers = [Actions(log, perform) for log in logs]

    def submit(n: int) -> None:
        both.wait()
        for k in range(3):
            servers[n].submit("admin", "web1", "expire", f"{n}-{k}")

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert all(server.wait_idle(30) for server in servers)
    assert overlaps == []
    assert sorted(e.status for e in logs[0].recent(limit=10)) == ["done"] * 6
    for server in servers:
        server.stop()
    for log in logs:
        log.close()
