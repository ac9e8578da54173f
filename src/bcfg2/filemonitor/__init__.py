"""Watching the repository: the FileMonitor base, Event, and backend choice.

Plugins register the files and directories they read with
``AddMonitor(path, handler)``; the monitor turns what happens on disk into
Events (exists, endExist, created, changed, deleted) and hands each one to
``handler.HandleEvent(event)``, in order. Adding a directory monitor emits
an ``exists`` event for each entry and then ``endExist`` for the directory
itself, so the initial load of the repository and every later change go
through the same code.

Backends are named by ``[server] filemonitor`` and imported only when chosen.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import importlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from bcfg2 import metrics
from bcfg2.errors import CoreInitError

logger = logging.getLogger(__name__)

EVENT_CODES = ("exists", "endExist", "created", "changed", "deleted")


class Handler(Protocol):
    def HandleEvent(self, event: Event) -> None: ...  # noqa: N802


class Event:
    """Something that happened to a watched path.

    ``filename`` is the entry's name relative to the watched directory (or
    the absolute path, for a watched file and for ``endExist``); ``path`` is
    always absolute.
    """

    __slots__ = ("requestID", "filename", "action", "path")

    def __init__(self, request_id: int, filename: str, action: str, path: str) -> None:
        if action not in EVENT_CODES:
            raise ValueError(f"unknown event code {action}")
        self.requestID = request_id
        self.filename = filename
        self.action = action
        self.path = path

    def code2str(self) -> str:
        return self.action

    def __repr__(self) -> str:
        return f"Event({self.action} {self.path})"


class FileMonitor:
    """Queue of events and their dispatch; backends fill the queue."""

    name = "base"

    #: True if ``wait`` blocks until something happens (no polling when idle)
    blocking = False

    def __init__(self, ignore: list[str] | None = None, debug: bool = False) -> None:
        self.ignore = list(ignore or [])
        #: the ignore patterns as one expression: one match per file, not one per pattern
        self._ignored = re.compile("|".join(map(fnmatch.translate, self.ignore))) \
            if self.ignore else None
        self.debug = debug
        self.handles: dict[int, Any] = {}
        self.paths: dict[int, str] = {}
        self.events: collections.deque[Event] = collections.deque()
        self._cond = threading.Condition()
        #: a wake-up that no ``wait`` has consumed yet: it must not be lost
        self._woken = False
        self._next_id = 0
        self.started = False
        #: events handled so far, and the sequence number at which each path was last handled
        self.handled = 0
        self._handled_at: dict[str, int] = {}
        self._handled_cond = threading.Condition()
        self._busy = False
        #: called with each event once its handler has applied it (the configuration cache)
        self.listeners: list[Callable[[Event], None]] = []

    def start(self) -> None:
        self.started = True

    def shutdown(self) -> None:
        self.started = False
        with self._handled_cond:
            self._handled_cond.notify_all()

    def set_debug(self, debug: bool) -> bool:
        self.debug = debug
        return debug

    def should_ignore(self, name: str) -> bool:
        return self._ignored is not None and \
            self._ignored.match(os.path.basename(name)) is not None

    def _new_handle(self, path: str, obj: Any, handle_id: int | None) -> int:
        with self._cond:
            if handle_id is None:
                self._next_id += 1
                handle_id = self._next_id
            self.handles[handle_id] = obj
            self.paths[handle_id] = path
        return handle_id

    def AddMonitor(self, path: str, obj: Any, handleID: int | None = None) -> int:  # noqa: N802,N803
        """Watch a file or directory; events go to ``obj.HandleEvent``."""
        raise NotImplementedError

    def RemoveMonitor(self, handle_id: int) -> None:  # noqa: N802
        with self._cond:
            self.handles.pop(handle_id, None)
            self.paths.pop(handle_id, None)

    def queue(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self.events)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the backend may have new events (at most ``timeout`` seconds)."""
        with self._cond:
            if not self.events and not self._woken:
                self._cond.wait(timeout)
            self._woken = False

    def fds(self) -> list[int]:
        """File descriptors the monitor needs (kept open when daemonizing)."""
        return []

    def wake(self) -> None:
        """Make a ``wait`` in another thread return now (at shutdown), or the next one."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def _take_all(self) -> list[Event]:
        with self._cond:
            events = list(self.events)
            self.events.clear()
        return coalesce(events)

    def handle_one_event(self, event: Event) -> None:
        if event.action != "endExist" and self.should_ignore(event.filename):
            return
        if event.action == "deleted" and os.path.isfile(event.path):
            # replaced, not removed (git checkout unlinks and writes anew): the
            # event for the new file follows, and nothing is taken away meanwhile
            return
        handler = self.handles.get(event.requestID)
        if handler is None:
            return
        if self.debug:
            logger.debug("file monitor: %s", event)
        metrics.file_event(event.action)
        try:
            handler.HandleEvent(event)
        except Exception:  # one bad handler must not stop the others
            logger.exception("error handling %s", event)
        for listener in self.listeners:
            listener(event)

    def handle_event_set(self, lock: threading.Lock | None = None) -> int:
        """Handle every queued event (holding ``lock`` if given); return the count.

        Events that arrived in a burst are coalesced first (see ``coalesce``),
        then handled in order. Waiters on ``wait_handled`` are woken after.
        """
        done: list[Event] = []
        guard = lock if lock is not None else contextlib.nullcontext()
        while True:
            # taken and handled under one lock: two threads draining the
            # queue cannot handle a later batch before an earlier one
            with guard:
                with self._handled_cond:
                    events = self._take_all()
                    if events:
                        self._busy = True  # cleared only once the results are published
                if not events:
                    break
                for event in events:
                    self.handle_one_event(event)
            done.extend(events)
        # published once the queue is empty: events that handlers queued (the
        # contents of a new directory) are handled before anyone is told
        with self._handled_cond:
            for event in done:
                self.handled += 1
                self._handled_at[event.path] = self.handled
            self._busy = False
            self._handled_cond.notify_all()
        return len(done)

    def handle_events_in_interval(self, interval: float) -> None:
        """Handle events as they arrive for ``interval`` seconds."""
        end = time.monotonic() + interval
        while True:
            self.handle_event_set()
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self.wait(remaining)

    def wait_idle(self, stop: threading.Event | None = None, timeout: float | None = None) -> bool:
        """Wait until every queued event has been handled (by another thread)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._handled_cond:
            while self._busy or self.pending():
                if stop is not None and stop.is_set():
                    return False
                step = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if step <= 0:
                    return False
                self._handled_cond.wait(step)
        return True

    def wait_handled(self, path: str, after: int, timeout: float) -> bool:
        """Wait until an event for ``path`` numbered past ``after`` has been handled.

        ``after`` is ``handled`` read before the change was made; this is the
        explicit "events handled" signal tests and benchmarks wait on.
        """
        path = os.path.abspath(path)
        deadline = time.monotonic() + timeout
        with self._handled_cond:
            while self._handled_at.get(path, 0) <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._handled_cond.wait(remaining)
            return True


def coalesce(events: list[Event]) -> list[Event]:
    """Drop the redundant events of a burst, keeping order and meaning.

    Repeats of an event for the same watch and path collapse into one
    (``created`` then ``changed`` is still ``created``); a deletion and a
    re-creation are both kept, so a directory that was removed and made
    again is watched anew.
    """
    out: list[Event] = []
    last: dict[tuple[int, str], Event] = {}
    for event in events:
        key = (event.requestID, event.path)
        prev = last.get(key)
        if prev is not None and event.action == "changed" and \
                prev.action in ("changed", "created", "exists"):
            continue
        if prev is not None and event.action == prev.action and event.action != "endExist":
            continue
        out.append(event)
        last[key] = event
    return out


BACKENDS = {
    "inotify": "bcfg2.filemonitor.inotify:Inotify",
    "pseudo": "bcfg2.filemonitor.pseudo:Pseudo",
}
DEFAULT_ORDER = ("inotify", "pseudo")


def load_backend(name: str) -> type[FileMonitor]:
    """Import the named backend (``default``: the best that imports)."""
    names = DEFAULT_ORDER if name == "default" else (name,)
    errors = []
    for candidate in names:
        target = BACKENDS.get(candidate)
        if target is None:
            errors.append(f"{candidate}: not available")
            continue
        module, _, cls = target.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except ImportError as err:
            errors.append(f"{candidate}: {err}")
    raise CoreInitError(f"no usable file monitor ({'; '.join(errors)})")
