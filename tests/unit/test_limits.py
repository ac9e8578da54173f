"""bcfg2.limits: sources, logging once per burst, the failed-authentication throttle, the fd limit."""

from __future__ import annotations

import logging
import resource

import pytest
from conftest import wait_until

from bcfg2 import limits
from bcfg2.limits import AuthThrottle, BurstLog, raise_fd_limit, source_of

logger = logging.getLogger("bcfg2.test-limits")


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger.name]


@pytest.mark.parametrize("ip, source", [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("fe80::1%eth0", "fe80::/64"),
    ("not an address", "not an address"),
])
def test_a_source_is_an_ipv4_address_or_an_ipv6_64(ip: str, source: str) -> None:
    assert source_of(ip) == source


def test_a_burst_is_logged_once_and_summarised_when_it_ends(caplog) -> None:
    caplog.set_level(logging.INFO, logger=logger.name)
    log = BurstLog(logger, "%s: %d more in %.0f s", window=0.2)
    assert log.note("a", "first from %s", "a") is True
    for _ in range(4):
        assert log.note("a", "first from %s", "a") is False
    assert log.note("b", "first from %s", "b") is True
    assert messages(caplog) == ["first from a", "first from b"]
    wait_until(lambda: len(messages(caplog)) == 3, 5, "the burst's summary")
    assert messages(caplog)[2].startswith("a: 4 more in")  # b had nothing more: no summary
    assert log.note("a", "again from %s", "a") is True  # a new burst


def test_more_sources_than_bursts_are_counted_together(caplog, monkeypatch) -> None:
    monkeypatch.setattr(limits, "MAX_BURSTS", 2)
    caplog.set_level(logging.INFO, logger=logger.name)
    log = BurstLog(logger, "%s: %d more in %.0f s", window=60)
    for key in "abcdef":
        log.note(key, "first from %s", key)
    log.flush()
    assert messages(caplog) == ["first from a", "first from b", "other sources: 4 more in 0 s"]


def test_failures_past_the_limit_are_refused_unchecked_until_the_window_passes(caplog) -> None:
    caplog.set_level(logging.INFO, logger=logger.name)
    throttle = AuthThrottle(limit=3, window=0.3, logger=logger)
    for _ in range(3):
        assert not throttle.refused("192.0.2.1")
        throttle.failed("192.0.2.1", "guess")
    assert throttle.refused("192.0.2.1")
    assert throttle.refused("192.0.2.1")  # refusals do not extend the back-off
    assert not throttle.refused("192.0.2.2")  # another source is not concerned
    wait_until(lambda: not throttle.refused("192.0.2.1"), 5, "the back-off to end")
    lines = messages(caplog)
    assert lines[0] == "Authentication failure from 192.0.2.1 (user 'guess')"
    assert any(line.startswith("Throttling authentication from 192.0.2.1") for line in lines)
    assert len(lines) == 2, "one line per burst, one when throttling starts"
    throttle.log.flush()


def test_a_success_does_not_clear_the_failures_and_zero_turns_throttling_off() -> None:
    throttle = AuthThrottle(limit=2, window=60, logger=logger)
    throttle.failed("192.0.2.1", "x")
    throttle.failed("192.0.2.1", "x")
    assert throttle.refused("192.0.2.1")
    off = AuthThrottle(limit=0, window=60, logger=logger)
    for _ in range(100):
        off.failed("192.0.2.1", "x")
    assert not off.refused("192.0.2.1")
    for each in (throttle, off):
        each.log.flush()


def test_the_throttle_forgets_sources_to_stay_bounded(monkeypatch) -> None:
    monkeypatch.setattr(limits, "MAX_TRACKED_SOURCES", 10)
    throttle = AuthThrottle(limit=5, window=60, logger=logger)
    for n in range(50):
        throttle.failed(f"192.0.2.{n}", "x")
    assert len(throttle._failures) <= 10
    throttle.log.flush()


class FakeLimits:
    """getrlimit and setrlimit of RLIMIT_NOFILE, in memory."""

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.value = (soft, hard)
        self.refuse = refuse

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.value

    def setrlimit(self, which: int, value: tuple[int, int]) -> None:
        if self.refuse:
            raise ValueError("not allowed")
        self.value = value


@pytest.mark.parametrize("soft, hard, raised", [
    (1024, 4096, 4096),
    (1024, resource.RLIM_INFINITY, limits.FD_CEILING),
    (1024, 1_048_576, limits.FD_CEILING),
    (100_000, 1_048_576, 100_000),  # never lowered
])
def test_the_soft_fd_limit_is_raised_towards_the_hard_limit(monkeypatch, caplog, soft, hard,
                                                            raised) -> None:
    fake = FakeLimits(soft, hard)
    monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
    caplog.set_level(logging.INFO, logger=logger.name)
    assert raise_fd_limit(512, logger) == raised
    assert fake.value == (raised, hard)
    if raised != soft:
        assert messages(caplog)[0].startswith(f"Raised the soft limit of open files from {soft} "
                                              f"to {raised}")
    else:
        assert messages(caplog) == []


def test_a_limit_too_low_for_max_connections_is_warned_about(monkeypatch, caplog) -> None:
    for fake in (FakeLimits(256, 256), FakeLimits(256, 4096, refuse=True)):
        monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
        monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
        caplog.clear()
        assert raise_fd_limit(512, logger) == 256
        assert "max_connections = 512 needs about 640" in messages(caplog)[-1]
