"""Execution-time statistics, reported by the ``get_statistics`` RMI."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Statistic:
    """Minimum, maximum, mean and count of one measured quantity."""

    def __init__(self, name: str, value: float) -> None:
        self.name = name
        self.min = value
        self.max = value
        self.ave = value
        self.count = 1

    def add_value(self, value: float) -> None:
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self.ave = (self.ave * self.count + value) / (self.count + 1)
        self.count += 1

    def get_value(self) -> tuple[str, tuple[float, float, float, int]]:
        return self.name, (self.min, self.max, self.ave, self.count)


class Statistics:
    """Statistic objects keyed by name, recorded with little contention.

    Bind records one value per entry from many threads at once, so values go
    to one of SHARDS tables chosen by thread, each with its own lock;
    ``display`` merges them.
    """

    SHARDS = 16

    def __init__(self) -> None:
        self._shards: list[tuple[threading.Lock, dict[str, Statistic]]] = [
            (threading.Lock(), {}) for _ in range(self.SHARDS)]
        self._local = threading.local()
        self._next = itertools.count()

    def add_value(self, name: str, value: float) -> None:
        shard = getattr(self._local, "shard", None)
        if shard is None:  # threads take shards in turn
            shard = self._local.shard = self._shards[next(self._next) % self.SHARDS]
        lock, table = shard
        with lock:
            stat = table.get(name)
            if stat is None:
                table[name] = Statistic(name, value)
            else:
                stat.add_value(value)

    def display(self) -> dict[str, tuple[float, float, float, int]]:
        """Every statistic, merged over the shards."""
        merged: dict[str, list[float]] = {}
        for lock, table in self._shards:
            with lock:
                values = [stat.get_value() for stat in table.values()]
            for name, (low, high, mean, count) in values:
                old = merged.get(name)
                if old is None:
                    merged[name] = [low, high, mean, count]
                else:
                    total = old[3] + count
                    merged[name] = [min(old[0], low), max(old[1], high),
                                    (old[2] * old[3] + mean * count) / total, total]
        return {name: (v[0], v[1], v[2], int(v[3])) for name, v in merged.items()}

    def reset(self) -> None:
        for lock, table in self._shards:
            with lock:
                table.clear()


stats = Statistics()


def track_statistics(name: str | None = None) -> Callable[[F], F]:
    """Decorator: record how long each call of the function takes."""

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return func(*args, **kwargs)
            finally:
                label = name or func.__name__
                if args and hasattr(args[0], "__class__") and name is None:
                    label = f"{args[0].__class__.__name__}:{func.__name__}"
                stats.add_value(label, time.monotonic() - start)

        return wrapper  # type: ignore[return-value]

    return decorator
