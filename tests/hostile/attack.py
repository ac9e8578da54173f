"""What every hostile test shares: a real agent run, and the proof it is still served.

Each hostile test mounts one attack against a server and asserts two
things: the attack fails, and an ordinary agent (web1 of repo-example)
completes a whole run meanwhile within ``AGENT_DEADLINE`` seconds. The
deadline is a liveness bound (a starved or stalled server misses it by
far), not a speed target: speed lives in ``make bench`` (``make
bench-hostile`` times the same agent run under these attacks).

The run itself and the raw requests live in ``tests/bench/connattack.py``,
which the benchmark shares; they are named here too for the tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from connattack import STATS, Proxied, agent_run, call_body, fault_of, raw_call, tls_socket

__all__ = ["AGENT_DEADLINE", "STATS", "agent_run", "assert_served", "call_body", "fault_of",
           "in_background", "raw_call", "tls_socket"]

#: seconds a whole agent run may take while the server is under attack
AGENT_DEADLINE = 10.0


def assert_served(server: Proxied, within: float = AGENT_DEADLINE, **kwargs: Any) -> str:
    """A real agent run completes within ``within`` seconds; its configuration."""
    started = time.monotonic()
    config = agent_run(server, **kwargs)
    elapsed = time.monotonic() - started
    assert elapsed < within, f"an agent run took {elapsed:.1f}s under attack (limit {within}s)"
    return config


@contextmanager
def in_background(attack: Callable[[threading.Event], None], threads: int = 1) -> Iterator[None]:
    """Run ``attack(stop)`` in threads while the block runs; stop and join them after it."""
    stop = threading.Event()
    workers = [threading.Thread(target=attack, args=(stop,), daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        assert not any(w.is_alive() for w in workers), "an attack thread did not stop"
