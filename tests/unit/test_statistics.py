"""Execution-time statistics recorded from many threads are merged correctly."""

from __future__ import annotations

import threading

from bcfg2.statistics import Statistics


def test_values_from_many_threads_merge_into_min_max_mean_and_count() -> None:
    stats = Statistics()
    values = {n: [float(n), float(n) + 10.0] for n in range(40)}

    def record(n: int) -> None:
        for value in values[n]:
            stats.add_value("GetConfig", value)
        stats.add_value(f"only-{n % 3}", 1.0)

    threads = [threading.Thread(target=record, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shown = stats.display()
    everything = [v for pair in values.values() for v in pair]
    low, high, mean, count = shown["GetConfig"]
    assert (low, high, count) == (min(everything), max(everything), len(everything))
    assert abs(mean - sum(everything) / len(everything)) < 1e-9
    assert sum(shown[f"only-{k}"][3] for k in range(3)) == 40
    stats.reset()
    assert stats.display() == {}
