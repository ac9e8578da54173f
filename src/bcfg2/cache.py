"""The client-metadata cache (see the [caching] client_metadata option)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any


class Cache:
    """A thread-safe dict keyed by client name, with ``expire``."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()
        #: bumped by every expiry, so a value computed before it is not stored after it
        self.generation = 0

    def get(self, key: str) -> Any:
        with self._lock:
            return self._data.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def store(self, key: str, value: Any, generation: int) -> bool:
        """Store a value computed when ``generation`` was current, unless expired since."""
        with self._lock:
            if generation != self.generation:
                return False
            self._data[key] = value
            return True

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._data)

    def expire(self, keys: str | Iterable[str] | None = None) -> None:
        """Forget one client, several, or (with no argument) all of them."""
        with self._lock:
            self.generation += 1
            if keys is None:
                self._data.clear()
                return
            if isinstance(keys, str):
                keys = [keys]
            for key in keys:
                self._data.pop(key, None)
