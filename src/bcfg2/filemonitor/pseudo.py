"""A file monitor using only the standard library: it scans and compares."""

from __future__ import annotations

import os
from typing import Any

from bcfg2.filemonitor import Event, FileMonitor


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Pseudo(FileMonitor):
    """Scans watched paths; ``poll()`` turns differences into events."""

    name = "pseudo"
    #: seconds between two scans of the watched paths
    interval = 1.0

    def __init__(self, ignore: list[str] | None = None, debug: bool = False) -> None:
        super().__init__(ignore, debug)
        # handle id -> {absolute path: signature}
        self.snapshots: dict[int, dict[str, tuple[int, int, int] | None]] = {}

    def AddMonitor(self, path: str, obj: Any, handleID: int | None = None) -> int:  # noqa: N802,N803
        path = os.path.abspath(path)
        handle = self._new_handle(path, obj, handleID)
        snapshot: dict[str, tuple[int, int, int] | None] = {}
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                snapshot[full] = _signature(full)
                self.queue(Event(handle, name, "exists", full))
            self.queue(Event(handle, path, "endExist", path))
        else:
            snapshot[path] = _signature(path)
            self.queue(Event(handle, path, "exists" if snapshot[path] else "deleted", path))
        self.snapshots[handle] = snapshot
        return handle

    def RemoveMonitor(self, handle_id: int) -> None:  # noqa: N802
        super().RemoveMonitor(handle_id)
        self.snapshots.pop(handle_id, None)

    def wait(self, timeout: float | None = None) -> None:
        """Wait one scan interval (or ``timeout``), then scan."""
        with self._cond:
            if not self.events and not self._woken and self.started:
                self._cond.wait(self.interval if timeout is None else min(timeout, self.interval))
            self._woken = False
        self.poll()

    def shutdown(self) -> None:
        super().shutdown()
        with self._cond:
            self._cond.notify_all()

    def poll(self) -> int:
        """Compare every watched path with its last scan; queue the changes."""
        queued = 0
        for handle, old in list(self.snapshots.items()):
            path = self.paths.get(handle)
            if path is None:
                continue
            new: dict[str, tuple[int, int, int] | None] = {}
            is_dir = os.path.isdir(path)
            if is_dir:
                try:
                    names = sorted(os.listdir(path))
                except OSError:
                    names = []
                for name in names:
                    full = os.path.join(path, name)
                    new[full] = _signature(full)
            else:
                new[path] = _signature(path)
            for full, sig in new.items():
                name = os.path.basename(full) if is_dir else full
                if sig is None:
                    continue  # vanished between listing and stat: a deleted event follows
                if full not in old or old[full] is None:
                    self.queue(Event(handle, name, "created", full))
                    queued += 1
                elif sig != old[full] and not os.path.isdir(full):
                    self.queue(Event(handle, name, "changed", full))
                    queued += 1
            for full, sig in old.items():
                if sig is not None and new.get(full) is None:
                    name = os.path.basename(full) if is_dir else full
                    self.queue(Event(handle, name, "deleted", full))
                    queued += 1
            self.snapshots[handle] = new
        return queued
