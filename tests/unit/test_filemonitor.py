"""The file monitor: what an admin's edits to the repository turn into, for both backends.

Each test drives a backend directly: it changes files under ``tmp_path``, makes
the backend notice (``poll`` for the polling backend, ``wait`` for inotify,
whose events the kernel queues synchronously with the syscall) and dispatches
with ``handle_event_set``.
"""

from __future__ import annotations

import os
import select
import shutil
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bcfg2 import options
from bcfg2.errors import CoreInitError
from bcfg2.filemonitor import Event, FileMonitor, coalesce, load_backend
from bcfg2.filemonitor.inotify import Inotify, pyinotify
from bcfg2.filemonitor.pseudo import Pseudo

BACKENDS = ["pseudo", "inotify"]
#: bounded wait for something that must happen
TIMEOUT = 5.0
#: bounded wait for something that must not happen
BRIEF = 0.05


def default_ignore() -> list[str]:
    """The [server] ignore_files default, as bcfg2.conf would give it."""
    opt = next(o for o in options.OPTIONS if (o.section, o.name) == ("server", "ignore_files"))
    return options.convert(opt, opt.default, "default")


class Recorder:
    """A handler that remembers (action, path) of every event it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def HandleEvent(self, event: Event) -> None:  # noqa: N802
        self.events.append((event.action, event.path or event.filename))

    def take(self) -> list[tuple[str, str]]:
        events, self.events = self.events, []
        return events


class TreeWatcher(Recorder):
    """Watches every directory it is told about, as the repository plugins do."""

    def __init__(self, mon: FileMonitor) -> None:
        super().__init__()
        self.mon = mon
        self.handles: dict[str, int] = {}

    def watch(self, path: str | Path) -> int:
        self.handles[str(path)] = self.mon.AddMonitor(str(path), self)
        return self.handles[str(path)]

    def HandleEvent(self, event: Event) -> None:  # noqa: N802
        super().HandleEvent(event)
        path = event.path
        if event.action == "deleted" and path in self.handles:
            self.mon.RemoveMonitor(self.handles.pop(path))
        elif event.action in ("exists", "created") and os.path.isdir(path) \
                and path not in self.handles:
            self.watch(path)


def make_monitor(backend: str, ignore: list[str] | None = None) -> FileMonitor:
    mon = load_backend(backend)(ignore=default_ignore() if ignore is None else ignore)
    mon.start()
    return mon


@pytest.fixture(params=BACKENDS)
def mon(request: pytest.FixtureRequest) -> Iterator[FileMonitor]:
    monitor = make_monitor(request.param)
    yield monitor
    monitor.shutdown()


@pytest.fixture
def ino() -> Iterator[Inotify]:
    monitor = make_monitor("inotify")
    assert isinstance(monitor, Inotify)
    yield monitor
    monitor.shutdown()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path


def notice(mon: FileMonitor) -> None:
    """Make the backend queue what changed on disk (something must have changed)."""
    if isinstance(mon, Pseudo):
        mon.poll()
    else:
        mon.wait(TIMEOUT)


def settle(mon: FileMonitor) -> int:
    """Notice the changes and hand them to the handlers; return how many were handled."""
    notice(mon)
    return mon.handle_event_set()


def watch(mon: FileMonitor, path: Path, handler: Recorder | None = None) -> Recorder:
    """Monitor ``path``, handle the initial events, and return the handler, emptied."""
    handler = handler or Recorder()
    mon.AddMonitor(str(path), handler)
    mon.handle_event_set()
    handler.take()
    return handler


def drop_kernel_queue(mon: Inotify) -> None:
    """Throw away what the kernel queued, unread: the events an overflow loses."""
    fd = mon.wm.get_fd()
    while select.select([fd], [], [], 0)[0]:
        os.read(fd, 1 << 16)


def overflow(mon: Inotify) -> None:
    mon._on_event(types.SimpleNamespace(mask=pyinotify.IN_Q_OVERFLOW, wd=-1))


# -- initial events ---------------------------------------------------------------


def test_directory_monitor_reports_each_entry_sorted_then_end_exist(
        mon: FileMonitor, repo: Path) -> None:
    for name in ("b.xml", "a.xml", "c"):
        (repo / name).write_text(name)
    (repo / "sub").mkdir()
    rec = Recorder()
    mon.AddMonitor(str(repo), rec)
    assert mon.handle_event_set() == 5
    assert rec.events == [("exists", str(repo / name)) for name in ("a.xml", "b.xml", "c", "sub")] \
        + [("endExist", str(repo))]


def test_file_monitor_reports_existing_file(mon: FileMonitor, repo: Path) -> None:
    path = repo / "groups.xml"
    path.write_text("<Groups/>")
    rec = Recorder()
    mon.AddMonitor(str(path), rec)
    mon.handle_event_set()
    assert rec.events == [("exists", str(path))]


def test_missing_file_is_reported_deleted_then_created(mon: FileMonitor, repo: Path) -> None:
    path = repo / "clients.xml"
    rec = Recorder()
    mon.AddMonitor(str(path), rec)
    mon.handle_event_set()
    assert rec.take() == [("deleted", str(path))]
    path.write_text("<Clients/>")
    settle(mon)
    assert rec.events == [("created", str(path))]


def test_relative_path_is_reported_absolute(
        mon: FileMonitor, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo.parent)
    (repo / "a.xml").write_text("a")
    rec = Recorder()
    mon.AddMonitor(repo.name, rec)
    mon.handle_event_set()
    assert rec.events == [("exists", str(repo / "a.xml")), ("endExist", str(repo))]


# -- changes in a watched directory -------------------------------------------------


def test_file_created_changed_deleted_in_directory(mon: FileMonitor, repo: Path) -> None:
    rec = watch(mon, repo)
    path = repo / "motd"
    path.write_text("one")
    settle(mon)
    assert rec.take() == [("created", str(path))]
    path.write_text("second version")
    settle(mon)
    assert rec.take() == [("changed", str(path))]
    path.unlink()
    settle(mon)
    assert rec.take() == [("deleted", str(path))]


def test_file_moved_into_directory_is_created(mon: FileMonitor, tmp_path: Path, repo: Path) -> None:
    rec = watch(mon, repo)
    outside = tmp_path / "staged.xml"
    outside.write_text("<Bundle/>")
    os.replace(outside, repo / "base.xml")
    settle(mon)
    assert rec.events == [("created", str(repo / "base.xml"))]


def test_file_moved_out_of_directory_is_deleted(mon: FileMonitor, tmp_path: Path, repo: Path) -> None:
    (repo / "base.xml").write_text("<Bundle/>")
    rec = watch(mon, repo)
    os.replace(repo / "base.xml", tmp_path / "base.xml")
    settle(mon)
    assert rec.events == [("deleted", str(repo / "base.xml"))]


def test_new_subdirectory_is_created_and_handled_in_the_same_pass(
        mon: FileMonitor, repo: Path) -> None:
    tree = TreeWatcher(mon)
    tree.watch(repo)
    mon.handle_event_set()
    tree.take()
    sub = repo / "etc"
    sub.mkdir()
    (sub / "motd").write_text("hello")
    # the handler watches the new directory: its contents are handled in the same call
    assert settle(mon) == 3
    assert tree.take() == [("created", str(sub)), ("exists", str(sub / "motd")),
                           ("endExist", str(sub))]
    (sub / "issue").write_text("welcome")
    settle(mon)
    assert tree.take() == [("created", str(sub / "issue"))]


def test_removed_subdirectory_is_deleted(mon: FileMonitor, repo: Path) -> None:
    sub = repo / "etc"
    sub.mkdir()
    tree = TreeWatcher(mon)
    tree.watch(repo)
    mon.handle_event_set()
    tree.take()
    shutil.rmtree(sub)
    settle(mon)
    assert tree.events == [("deleted", str(sub))]
    assert str(sub) not in tree.handles


def test_watched_file_edited_in_place_and_replaced_is_changed(mon: FileMonitor, repo: Path) -> None:
    path = repo / "groups.xml"
    path.write_text("<Groups/>")
    rec = watch(mon, path)
    path.write_text("<Groups><Group name='a'/></Groups>")
    settle(mon)
    assert rec.take() == [("changed", str(path))]
    # as editors save: a temporary file renamed over the original
    tmp = repo / "groups.xml.new"
    tmp.write_text("<Groups><Group name='b'/><Group name='c'/></Groups>")
    os.replace(tmp, path)
    settle(mon)
    assert rec.take() == [("changed", str(path))]
    assert path.read_text().count("Group name") == 2


def test_editor_save_in_watched_directory_is_one_change(mon: FileMonitor, repo: Path) -> None:
    path = repo / "base.xml"
    path.write_text("<Bundle/>")
    rec = watch(mon, repo)
    tmp = repo / ".base.xml.swp"
    tmp.write_text("<Bundle><Path name='/etc/motd'/></Bundle>")
    os.replace(tmp, path)
    settle(mon)
    assert rec.events == [("changed", str(path))]


# -- RemoveMonitor --------------------------------------------------------------------


def test_removed_monitor_gets_no_more_events(mon: FileMonitor, tmp_path: Path) -> None:
    gone_dir, kept_dir = tmp_path / "gone", tmp_path / "kept"
    gone_dir.mkdir()
    kept_dir.mkdir()
    gone, kept = Recorder(), Recorder()
    handle = mon.AddMonitor(str(gone_dir), gone)
    watch(mon, kept_dir, kept)
    gone.take()
    # noticed but not yet handled when the monitor is removed
    (gone_dir / "queued").write_text("x")
    notice(mon)
    mon.RemoveMonitor(handle)
    (gone_dir / "later").write_text("x")
    (kept_dir / "marker").write_text("x")
    settle(mon)
    assert gone.events == []
    assert kept.events == [("created", str(kept_dir / "marker"))]


def test_removing_one_of_two_monitors_on_a_directory_keeps_the_other(
        mon: FileMonitor, repo: Path) -> None:
    path = repo / "motd"
    path.write_text("one")
    first, second = Recorder(), Recorder()
    handle = mon.AddMonitor(str(repo), first)
    mon.AddMonitor(str(repo), second)
    mon.handle_event_set()
    second.take()
    mon.RemoveMonitor(handle)
    path.write_text("second version")
    settle(mon)
    assert second.events == [("changed", str(path))]


# -- the ignore list -------------------------------------------------------------------

EDITOR_FILES = (".foo.swp", "foo~", "#foo#")


def make_editor_litter(directory: Path) -> None:
    for name in EDITOR_FILES:
        (directory / name).write_text("x")
    os.symlink("user@host.1234", directory / ".#foo")  # how emacs writes its lock
    (directory / ".git").mkdir()


def test_default_ignore_list_hides_editor_files_and_git(mon: FileMonitor, repo: Path) -> None:
    make_editor_litter(repo)
    (repo / "a.xml").write_text("a")
    rec = Recorder()
    mon.AddMonitor(str(repo), rec)
    mon.handle_event_set()
    assert rec.events == [("exists", str(repo / "a.xml")), ("endExist", str(repo))]


def test_default_ignore_list_hides_files_created_later(mon: FileMonitor, repo: Path) -> None:
    rec = watch(mon, repo)
    make_editor_litter(repo)
    (repo / "b.xml").write_text("b")
    settle(mon)
    assert rec.events == [("created", str(repo / "b.xml"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_ignore_list_replaces_the_default(backend: str, repo: Path) -> None:
    mon = make_monitor(backend, ignore=["*.tmp"])
    try:
        (repo / "foo~").write_text("backup")
        (repo / "x.tmp").write_text("scratch")
        (repo / ".git").mkdir()
        rec = Recorder()
        mon.AddMonitor(str(repo), rec)
        mon.handle_event_set()
        assert rec.events == [("exists", str(repo / ".git")), ("exists", str(repo / "foo~")),
                              ("endExist", str(repo))]
    finally:
        mon.shutdown()


# -- inotify only ---------------------------------------------------------------------


def test_inotify_file_still_being_written_is_reported_when_closed(ino: Inotify, repo: Path) -> None:
    rec = watch(ino, repo)
    path = repo / "big.xml"
    with open(path, "w") as fh:
        fh.write("<Bundle>")
        fh.flush()
        (repo / "small.xml").write_text("<Bundle/>")
        settle(ino)
        assert rec.take() == [("created", str(repo / "small.xml"))]
        fh.write("</Bundle>")
    settle(ino)
    assert rec.events == [("created", str(path))]


def test_inotify_hard_link_and_symlink_are_reported_at_once(ino: Inotify, tmp_path: Path,
                                                            repo: Path) -> None:
    target = tmp_path / "motd"
    target.write_text("hello")
    rec = watch(ino, repo)
    os.link(target, repo / "hard")
    os.symlink(target, repo / "soft")
    settle(ino)
    assert rec.events == [("created", str(repo / "hard")), ("created", str(repo / "soft"))]


def test_inotify_overflow_reports_every_entry_and_what_disappeared(ino: Inotify, repo: Path) -> None:
    for name in ("a.xml", "b.xml", "kept.xml"):
        (repo / name).write_text(name)
    (repo / "old").mkdir()
    tree = TreeWatcher(ino)
    tree.watch(repo)
    single = Recorder()
    ino.AddMonitor(str(repo / "a.xml"), single)
    ino.handle_event_set()
    tree.take()
    single.take()
    (repo / "a.xml").write_text("a, changed")
    (repo / "b.xml").unlink()
    (repo / "c.xml").write_text("c")
    shutil.rmtree(repo / "old")
    (repo / "new").mkdir()
    drop_kernel_queue(ino)
    overflow(ino)
    ino.handle_event_set()
    assert sorted(tree.events) == sorted([
        ("changed", str(repo / "a.xml")), ("changed", str(repo / "kept.xml")),
        ("created", str(repo / "c.xml")), ("created", str(repo / "new")),
        ("endExist", str(repo / "new")),
        ("deleted", str(repo / "b.xml")), ("deleted", str(repo / "old")),
    ])
    assert single.events == [("changed", str(repo / "a.xml"))]


def test_inotify_rescan_keeps_watching_a_replaced_directory(ino: Inotify, repo: Path) -> None:
    sub = repo / "etc"
    sub.mkdir()
    (sub / "motd").write_text("hello")
    tree = TreeWatcher(ino)
    tree.watch(repo)
    ino.handle_event_set()
    tree.take()
    shutil.rmtree(sub)
    sub.mkdir()
    (sub / "issue").write_text("welcome")
    drop_kernel_queue(ino)
    ino._rescan()
    ino.handle_event_set()
    assert ("created", str(sub / "issue")) in tree.events
    assert ("deleted", str(sub / "motd")) in tree.events
    tree.take()
    (sub / "hosts").write_text("127.0.0.1 localhost")
    settle(ino)
    assert tree.events == [("created", str(sub / "hosts"))]


def test_inotify_file_name_that_is_not_utf8_loses_no_change(ino: Inotify, repo: Path) -> None:
    rec = watch(ino, repo)
    (repo / "a.xml").write_text("a")
    os.close(os.open(os.path.join(bytes(repo), b"latin1-\xe9.xml"), os.O_CREAT | os.O_WRONLY))
    (repo / "b.xml").write_text("b")
    settle(ino)
    assert [e for e in rec.take() if not e[1].startswith(str(repo / "latin1-"))] == \
        [("created", str(repo / "a.xml")), ("created", str(repo / "b.xml"))]
    (repo / "c.xml").write_text("c")
    settle(ino)
    assert rec.events == [("created", str(repo / "c.xml"))]


def test_inotify_monitor_added_from_another_thread_wakes_wait(ino: Inotify, repo: Path) -> None:
    (repo / "a.xml").write_text("a")
    waiter = threading.Thread(target=ino.wait)
    waiter.start()
    ino.AddMonitor(str(repo), Recorder())
    waiter.join(TIMEOUT)
    assert not waiter.is_alive()
    assert ino.pending() == 2


# -- coalesce ---------------------------------------------------------------------------


def ev(action: str, path: str = "/repo/a", handle: int = 1) -> Event:
    return Event(handle, os.path.basename(path), action, path)


def summary(events: list[Event]) -> list[tuple[int, str, str]]:
    return [(e.requestID, e.action, e.path) for e in events]


@pytest.mark.parametrize(("actions", "expected"), [
    (["created", "changed"], ["created"]),
    (["changed", "changed", "changed"], ["changed"]),
    (["exists", "changed"], ["exists"]),
    (["deleted", "created"], ["deleted", "created"]),
    (["created", "deleted", "created"], ["created", "deleted", "created"]),
    (["changed", "deleted", "created", "changed"], ["changed", "deleted", "created"]),
    (["deleted", "deleted"], ["deleted"]),
])
def test_coalesce_one_path(actions: list[str], expected: list[str]) -> None:
    assert [e.action for e in coalesce([ev(a) for a in actions])] == expected


def test_coalesce_keeps_order_and_separates_paths_and_handles() -> None:
    events = [ev("changed", "/repo/a"), ev("created", "/repo/b"), ev("changed", "/repo/a", 2),
              ev("changed", "/repo/a"), ev("deleted", "/repo/c"), ev("changed", "/repo/b")]
    assert summary(coalesce(events)) == [(1, "changed", "/repo/a"), (1, "created", "/repo/b"),
                                         (2, "changed", "/repo/a"), (1, "deleted", "/repo/c")]


def test_handle_event_set_coalesces_a_burst(mon: FileMonitor, repo: Path) -> None:
    rec = watch(mon, repo)
    handle = next(iter(mon.handles))
    path = str(repo / "a")
    for action in ("created", "changed", "changed"):
        mon.queue(Event(handle, "a", action, path))
    assert mon.handle_event_set() == 1
    assert rec.events == [("created", path)]


# -- handling and waiting for it -----------------------------------------------------------


def test_one_failing_handler_does_not_stop_the_others(mon: FileMonitor, repo: Path) -> None:
    class Broken:
        def HandleEvent(self, event: Event) -> None:  # noqa: N802
            raise RuntimeError("bad handler")

    (repo / "a.xml").write_text("a")
    mon.AddMonitor(str(repo), Broken())
    rec = Recorder()
    mon.AddMonitor(str(repo), rec)
    assert mon.handle_event_set() == 4
    assert rec.events == [("exists", str(repo / "a.xml")), ("endExist", str(repo))]


def test_handle_event_set_holds_the_lock(mon: FileMonitor, repo: Path) -> None:
    lock = threading.Lock()
    held: list[bool] = []

    class Checker:
        def HandleEvent(self, event: Event) -> None:  # noqa: N802
            held.append(lock.locked())

    mon.AddMonitor(str(repo), Checker())
    mon.handle_event_set(lock)
    assert held == [True]
    assert not lock.locked()


def test_wait_handled_returns_once_the_path_was_handled(mon: FileMonitor, repo: Path) -> None:
    watch(mon, repo)
    path, other = repo / "motd", repo / "issue"
    after = mon.handled
    path.write_text("hello")
    notice(mon)
    worker = threading.Thread(target=mon.handle_event_set)
    worker.start()
    try:
        assert mon.wait_handled(str(path), after, TIMEOUT)
    finally:
        worker.join(TIMEOUT)
    assert mon.handled > after
    # an event for another path, or none since the mark, does not count
    assert not mon.wait_handled(str(other), after, BRIEF)
    assert not mon.wait_handled(str(path), mon.handled, BRIEF)


def test_wait_handled_sees_events_handled_before_the_call(mon: FileMonitor, repo: Path) -> None:
    watch(mon, repo)
    path = repo / "motd"
    after = mon.handled
    path.write_text("hello")
    settle(mon)
    assert mon.wait_handled(str(path), after, BRIEF)


def test_wait_handled_is_told_after_what_handlers_queued(mon: FileMonitor, repo: Path) -> None:
    """Once a new directory counts as handled, its contents have been handled too."""
    sub = repo / "etc"
    told_early: list[bool] = []
    after = mon.handled

    class Tree(TreeWatcher):
        def HandleEvent(self, event: Event) -> None:  # noqa: N802
            if event.path.startswith(str(sub) + os.sep):
                told_early.append(self.mon.wait_handled(str(sub), after, 0))
            super().HandleEvent(event)

    tree = Tree(mon)
    tree.watch(repo)
    mon.handle_event_set()
    sub.mkdir()
    (sub / "motd").write_text("hello")
    settle(mon)
    assert ("exists", str(sub / "motd")) in tree.events
    assert told_early == [False]
    assert mon.wait_handled(str(sub), after, BRIEF)


def test_wait_idle(mon: FileMonitor, repo: Path) -> None:
    assert mon.wait_idle(timeout=BRIEF)
    entered, release = threading.Event(), threading.Event()

    class Slow:
        def HandleEvent(self, event: Event) -> None:  # noqa: N802
            entered.set()
            release.wait(TIMEOUT)

    mon.AddMonitor(str(repo / "missing"), Slow())
    assert not mon.wait_idle(timeout=BRIEF)  # queued, nobody handling it
    stop = threading.Event()
    stop.set()
    assert not mon.wait_idle(stop)  # the core is terminating
    worker = threading.Thread(target=mon.handle_event_set)
    worker.start()
    try:
        assert entered.wait(TIMEOUT)
        assert not mon.wait_idle(timeout=BRIEF)  # being handled
        release.set()
        assert mon.wait_idle(timeout=TIMEOUT)
    finally:
        release.set()
        worker.join(TIMEOUT)
    assert mon.pending() == 0


# -- waking a waiting monitor ----------------------------------------------------------


def test_wake_makes_a_blocked_wait_return(mon: FileMonitor) -> None:
    if isinstance(mon, Pseudo):
        mon.interval = 60.0  # so that only the wake-up can end the wait in time
    waiter = threading.Thread(target=mon.wait)
    waiter.start()
    mon.wake()
    waiter.join(TIMEOUT)
    assert not waiter.is_alive()


def test_wake_before_wait_is_not_lost(mon: FileMonitor) -> None:
    """The core sets its terminate flag, wakes the monitor, then joins its thread."""
    if isinstance(mon, Pseudo):
        mon.interval = 60.0
    mon.wake()
    waiter = threading.Thread(target=mon.wait)
    waiter.start()
    waiter.join(TIMEOUT)
    assert not waiter.is_alive()


def test_wait_returns_when_something_changes(mon: FileMonitor, repo: Path) -> None:
    if isinstance(mon, Pseudo):
        mon.interval = 0.01
    rec = watch(mon, repo)
    (repo / "motd").write_text("hello")
    mon.wait(TIMEOUT)
    mon.handle_event_set()
    assert rec.events == [("created", str(repo / "motd"))]


def test_shutdown_twice_is_harmless(mon: FileMonitor, repo: Path) -> None:
    mon.AddMonitor(str(repo), Recorder())
    mon.shutdown()
    mon.shutdown()
    assert not mon.started


# -- choosing a backend ----------------------------------------------------------------------


def test_default_backend_is_inotify_here() -> None:
    assert load_backend("default") is Inotify
    assert load_backend("inotify") is Inotify


def test_pseudo_backend() -> None:
    assert load_backend("pseudo") is Pseudo


def test_unknown_backend_is_named_in_the_error() -> None:
    with pytest.raises(CoreInitError, match="gamin"):
        load_backend("gamin")


def test_backend_names_match_the_option_choices() -> None:
    opt = next(o for o in options.OPTIONS if (o.section, o.name) == ("server", "filemonitor"))
    for choice in opt.choices:
        cls: Any = load_backend(choice)
        assert issubclass(cls, FileMonitor)
        if choice != "default":
            assert cls.name == choice


class _GateOnAcquire:
    """The monitor's read lock, opening ``gate`` when another thread asks for it."""

    def __init__(self, lock: Any, gate: threading.Event) -> None:
        self.lock = lock
        self.gate = gate

    def __enter__(self) -> None:
        if self.lock.locked():
            self.gate.set()  # someone waits for the reader: let it finish
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_a_catch_up_returns_once_a_read_in_another_thread_queued_what_it_took(
        ino: Inotify, repo: Path) -> None:
    """The file-monitor thread has taken an edit from the kernel and not yet queued it
    when a request catches up (``wait(0)``): the request must wait for it, not find the
    kernel's queue empty and serve what the edit made stale."""
    handler = watch(ino, repo)
    inside, gate = threading.Event(), threading.Event()
    ino._read_lock = _GateOnAcquire(ino._read_lock, gate)  # type: ignore[assignment]
    process = ino.notifier.process_events

    def slow_process() -> None:
        inside.set()
        gate.wait(TIMEOUT)  # opened when the catch-up asks for the read lock
        process()

    ino.notifier.process_events = slow_process  # type: ignore[method-assign]
    (repo / "motd").write_text("edited\n")
    reader = threading.Thread(target=ino.wait, name="file-monitor")
    reader.start()
    assert inside.wait(TIMEOUT)  # the kernel's queue is read, nothing queued yet
    ino.wait(0)  # the request's catch-up
    assert ino.pending(), "the catch-up returned before the edit was queued"
    reader.join(TIMEOUT)
    ino.handle_event_set()
    assert ("created", str(repo / "motd")) in handler.take()
