"""Unit tests of the --limit token bucket, on a fake clock (no real time, no sleeps)."""

from __future__ import annotations

import socket

import pytest

from escp.engine.pacing import TokenBucket, set_pacing_rate


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.slept.append(seconds)
        self.now += seconds
        return False


def test_first_burst_is_free_then_rate_is_exact() -> None:
    fc = FakeClock()
    tb = TokenBucket(1000, 500, clock=fc.clock, sleep=fc.sleep)
    assert tb.take(500) and fc.slept == []
    start = fc.now
    for _ in range(20):
        assert tb.take(100)
    # 2000 bytes after the burst at 1000 B/s: exactly 2 s of (fake) time
    assert fc.now - start == pytest.approx(2.0)


def test_long_run_average_equals_the_rate() -> None:
    fc = FakeClock()
    tb = TokenBucket(64 * 1024, 64 * 1024, clock=fc.clock, sleep=fc.sleep)
    start = fc.now
    total = 0
    for i in range(1000):
        n = 1000 + (i * 7919) % 60000
        tb.take(n)
        total += n
    elapsed = fc.now - start
    assert total / elapsed == pytest.approx(64 * 1024, rel=0.02)


def test_idle_time_refills_only_up_to_the_burst() -> None:
    fc = FakeClock()
    tb = TokenBucket(100, 200, clock=fc.clock, sleep=fc.sleep)
    tb.take(200)
    fc.now += 3600  # a long pause does not bank an hour of tokens
    assert tb.delay_for(200) == 0
    tb.take(200)
    assert tb.delay_for(100) == pytest.approx(1.0)


def test_request_above_burst_goes_into_debt() -> None:
    fc = FakeClock()
    tb = TokenBucket(100, 100, clock=fc.clock, sleep=fc.sleep)
    assert tb.take(1000)  # allowed at once (burst full) ...
    assert tb.delay_for(100) == pytest.approx(10.0)  # ... and paid back afterwards


def test_abort_while_waiting_stops_take() -> None:
    fc = FakeClock()
    tb = TokenBucket(10, 10, clock=fc.clock, sleep=lambda s: True)
    tb.take(10)
    assert tb.take(10) is False


def test_clock_going_backwards_never_creates_tokens() -> None:
    fc = FakeClock()
    tb = TokenBucket(100, 100, clock=fc.clock, sleep=fc.sleep)
    tb.take(100)
    fc.now -= 50
    assert tb.delay_for(100) == pytest.approx(1.0)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 10)
    with pytest.raises(ValueError):
        TokenBucket(10, 0)


def test_kernel_pacing_rate_on_a_tcp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert set_pacing_rate(s, 2_000_000) is True  # Linux accepts it on any TCP socket
        assert set_pacing_rate(s, 10**12) is True  # capped to 32 bits, not an error
