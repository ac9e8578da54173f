"""The inotify backend (Linux): the kernel reports changes; nothing polls when idle.

One inotify watch per directory. A watched file is watched through its
directory, so an editor that writes a temporary file and renames it over the
old one is seen as a change of the file. A file is reported only once it is
complete: when the writer closes it (IN_CLOSE_WRITE) or renames it into
place (IN_MOVED_TO), never when it is merely created, so nobody reads a
half-written file. If the kernel's queue overflows, every watched directory
is scanned again, so no change is lost.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import threading
import time
import warnings
from typing import Any

from bcfg2.filemonitor import Event, FileMonitor

with warnings.catch_warnings():
    # pyinotify imports asyncore, deprecated on 3.11 (pyasyncore provides it on 3.12+)
    warnings.simplefilter("ignore", DeprecationWarning)
    import pyinotify

logger = logging.getLogger(__name__)

MASK = (pyinotify.IN_CREATE | pyinotify.IN_DELETE | pyinotify.IN_CLOSE_WRITE
        | pyinotify.IN_MOVED_FROM | pyinotify.IN_MOVED_TO)

#: how long a burst may keep arriving before its events are handled together
SETTLE = 0.01
MAX_SETTLE = 0.25


class Inotify(FileMonitor):
    """File monitor on Linux inotify, through pyinotify."""

    name = "inotify"
    blocking = True

    def __init__(self, ignore: list[str] | None = None, debug: bool = False) -> None:
        super().__init__(ignore, debug)
        self.wm = pyinotify.WatchManager()
        self.notifier = pyinotify.Notifier(self.wm, default_proc_fun=self._on_event)
        #: watched directory -> watch descriptor
        self.watches: dict[str, int] = {}
        #: directory -> (handle, None) for directory monitors, (handle, name) for files
        self.interest: dict[str, list[tuple[int, str | None]]] = {}
        #: entries known to exist in watched directories: created versus changed,
        #: and what a rescan no longer finds
        self.known: dict[str, set[str]] = {}
        self._watch_lock = threading.RLock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._waiting = False
        self._closed = False
        #: pyinotify's reader is not thread-safe: the monitor thread and a
        #: refresh in a request thread take turns
        self._read_lock = threading.Lock()

    def fds(self) -> list[int]:
        return [self.wm.get_fd(), self._wake_r, self._wake_w]

    # -- watches -------------------------------------------------------------

    def _watch(self, directory: str) -> None:
        if directory in self.watches:
            return
        result = self.wm.add_watch(directory, MASK, quiet=True)
        wd = result.get(directory, -1)
        if wd < 0:
            logger.error("Cannot watch %s: changes there will not be noticed (is "
                         "fs.inotify.max_user_watches too low?)", directory)
            return
        self.watches[directory] = wd

    def AddMonitor(self, path: str, obj: Any, handleID: int | None = None) -> int:  # noqa: N802,N803
        path = os.path.abspath(path)
        handle = self._new_handle(path, obj, handleID)
        if os.path.isdir(path):
            with self._watch_lock:
                self._watch(path)
                self.interest.setdefault(path, []).append((handle, None))
            try:
                names = sorted(os.listdir(path))
            except OSError as err:
                logger.error("Cannot list %s: %s", path, err.strerror)
                names = []
            for name in names:
                full = os.path.join(path, name)
                self._know(full)
                self.queue(Event(handle, name, "exists", full))
            self.queue(Event(handle, path, "endExist", path))
        else:
            directory, base = os.path.split(path)
            with self._watch_lock:
                if os.path.isdir(directory):
                    self._watch(directory)
                self.interest.setdefault(directory, []).append((handle, base))
            exists = os.path.exists(path)
            if exists:
                self._know(path)
            self.queue(Event(handle, path, "exists" if exists else "deleted", path))
        return handle

    def RemoveMonitor(self, handle_id: int) -> None:  # noqa: N802
        super().RemoveMonitor(handle_id)
        with self._watch_lock:
            for directory, items in list(self.interest.items()):
                kept = [item for item in items if item[0] != handle_id]
                if kept:
                    self.interest[directory] = kept
                    continue
                del self.interest[directory]
                # only now: other monitors of the directory still need what is known
                self.known.pop(directory, None)
                wd = self.watches.pop(directory, None)
                if wd is not None and wd in self.wm.watches:
                    self.wm.rm_watch(wd, quiet=True)

    def _know(self, path: str) -> None:
        directory, name = os.path.split(path)
        self.known.setdefault(directory, set()).add(name)

    def _knows(self, path: str) -> bool:
        directory, name = os.path.split(path)
        return name in self.known.get(directory, ())

    def _forget(self, path: str) -> None:
        directory, name = os.path.split(path)
        self.known.get(directory, set()).discard(name)

    # -- events --------------------------------------------------------------

    def queue(self, event: Event) -> None:
        super().queue(event)
        if self._waiting:
            self.wake()

    def _on_event(self, revent: Any) -> None:
        """Turn one pyinotify event into Bcfg2 events for everyone interested."""
        mask = revent.mask
        if mask & pyinotify.IN_Q_OVERFLOW:
            logger.warning("inotify queue overflowed; scanning the repository again")
            self._rescan()
            return
        if mask & pyinotify.IN_IGNORED:
            with self._watch_lock:  # the kernel dropped the watch: its directory is gone
                for directory, wd in list(self.watches.items()):
                    if wd == revent.wd:
                        del self.watches[directory]
            return
        directory, name, full = revent.path, revent.name, revent.pathname
        if not name:
            return
        is_dir = bool(mask & pyinotify.IN_ISDIR)
        if mask & (pyinotify.IN_DELETE | pyinotify.IN_MOVED_FROM):
            action = "deleted"
            self._forget(full)
        elif mask & pyinotify.IN_CREATE and not is_dir:
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                return
            if not (stat.S_ISLNK(st.st_mode) or st.st_nlink > 1):
                return  # wait until the writer closes it: never read a half-written file
            action = "changed" if self._knows(full) else "created"
            self._know(full)
        elif is_dir:
            action = "created"
            self._know(full)
        else:
            action = "changed" if self._knows(full) else "created"
            self._know(full)
        self._dispatch(directory, name, action, full)

    def _dispatch(self, directory: str, name: str, action: str, full: str) -> None:
        with self._watch_lock:
            interested = list(self.interest.get(directory, ()))
        for handle, base in interested:
            if base is None:
                self.queue(Event(handle, name, action, full))
            elif base == name:
                self.queue(Event(handle, full, action, full))

    def _rescan(self) -> None:
        """After an overflow: report every entry of every watched directory again.

        Each directory is watched anew: one replaced while events were lost
        would otherwise keep the dead watch of the old one.
        """
        with self._watch_lock:
            directories = list(self.interest)
        for directory in directories:
            with self._watch_lock:
                self.watches.pop(directory, None)
                if os.path.isdir(directory):
                    self._watch(directory)
            try:
                names = set(os.listdir(directory))
            except OSError:
                names = set()
            for name in sorted(names):
                full = os.path.join(directory, name)
                action = "created" if os.path.isdir(full) or not self._knows(full) else "changed"
                self._know(full)
                self._dispatch(directory, name, action, full)
            for name in sorted(self.known.get(directory, set()) - names):
                full = os.path.join(directory, name)
                self._forget(full)
                self._dispatch(directory, name, "deleted", full)

    # -- waiting -------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> None:
        """Block until the kernel reports changes (or ``timeout``); read a whole burst.

        Only a blocking wait (no timeout) lingers for the rest of a burst; a
        ``wait(0)`` reads what the kernel has and returns at once, once a read in
        another thread has queued what it took from the kernel: a change made before
        it is queued when it returns, whichever thread read it.
        """
        if timeout == 0 or self._closed or self.pending():
            self._read(0)
            return
        self._waiting = True
        try:
            if self.pending():
                return
            ready = self._select(timeout)
        finally:
            self._waiting = False
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass
        if self.wm.get_fd() in ready:
            self._read(MAX_SETTLE if timeout is None else 0)

    def _select(self, timeout: float | None) -> list[int]:
        try:
            return select.select([self.wm.get_fd(), self._wake_r], [], [], timeout)[0]
        except (OSError, ValueError):
            return []

    def _read(self, settle: float) -> None:
        """Read what the kernel has, and more while a burst keeps arriving."""
        with self._read_lock:
            self._read_locked(settle)

    def _read_locked(self, settle: float) -> None:
        if self._closed:
            return
        deadline = None
        while True:
            try:
                if not select.select([self.wm.get_fd()], [], [], 0)[0]:
                    if deadline is None:
                        return
                    remaining = min(SETTLE, deadline - time.monotonic())
                    if remaining <= 0 or not select.select([self.wm.get_fd()], [], [],
                                                           remaining)[0]:
                        return
                self.notifier.read_events()
                lost = False
            except UnicodeDecodeError:
                # pyinotify stops at a file name that is not UTF-8: the rest of
                # what it read is gone, so scan again as after an overflow
                logger.warning("a file name in the repository is not UTF-8; scanning again")
                lost = True
            except (OSError, ValueError):
                return
            self.notifier.process_events()
            if lost:
                self._rescan()
            if deadline is None:
                deadline = time.monotonic() + settle

    def wake(self) -> None:
        if self._closed:
            return  # the pipe is closed; its fd number may belong to another file now
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def shutdown(self) -> None:
        super().shutdown()
        if self._closed:
            return
        self.wake()
        self._closed = True
        try:
            self.notifier.stop()
        except OSError:
            pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
