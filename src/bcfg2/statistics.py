"""Execution-time statistics, reported by the ``get_statistics`` RMI."""

from __future__ import annotations

import functools
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
    """A thread-safe collection of Statistic objects keyed by name."""

    def __init__(self) -> None:
        self.data: dict[str, Statistic] = {}
        self._lock = threading.Lock()

    def add_value(self, name: str, value: float) -> None:
        with self._lock:
            if name in self.data:
                self.data[name].add_value(value)
            else:
                self.data[name] = Statistic(name, value)

    def display(self) -> dict[str, tuple[float, float, float, int]]:
        with self._lock:
            return dict(stat.get_value() for stat in self.data.values())

    def reset(self) -> None:
        with self._lock:
            self.data.clear()


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
