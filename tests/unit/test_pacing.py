"""Unit tests of -l/--limit: the rate syntax (scp's Kbit/s, explicit units) and the pacer that
all streams share, on a fake clock (no real time, no sleeps)."""

from __future__ import annotations

import socket
import threading

import pytest

from escp.config import TransferConfig
from escp.engine.pacing import PACE_SLICE, SharedPacer, set_pacing_rate, slowest_rate
from escp.errors import UsageError
from escp.units import parse_rate


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        with self.lock:
            self.slept.append(seconds)
            self.now += seconds
        return False


@pytest.mark.parametrize(("text", "bytes_per_s"), [
    ("5000", 625_000),  # scp: Kbit/s, 5 Mbit/s for the whole transfer
    ("100000", 12_500_000),
    ("1.5", 187),
    ("100M", 100_000_000),  # explicit units keep their meaning: decimal bytes
    ("100MB", 100_000_000),
    ("100MB/s", 100_000_000),
    ("500K", 500_000),
    ("1Gbit", 125_000_000),
    ("1Gbps", 125_000_000),
    ("8Mbit/s", 1_000_000),
    ("5000Kbit", 625_000),
    ("100Mi", 100 * 1024 * 1024),  # binary when asked
    ("4MiB", 4 * 1024 * 1024),
])
def test_rate_syntax(text: str, bytes_per_s: int) -> None:
    assert parse_rate(text) == bytes_per_s


@pytest.mark.parametrize("text", ["0", "abc", "-5M", "5 potatoes", "0.001"])
def test_bad_rates_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_rate(text)


def test_limit_floor_follows_block_size_and_idle_deadline() -> None:
    # -l 5000 (scp's 5 Mbit/s) is fine with every default
    assert TransferConfig(limit_bytes_per_s=parse_rate("5000")).limit_bytes_per_s == 625_000
    floor = slowest_rate(1 << 20, 60.0)
    assert floor * 60 > 1 << 20  # one default block within the default idle deadline
    with pytest.raises(UsageError, match="lower --blocksize or raise --timeout"):
        TransferConfig(limit_bytes_per_s=floor - 1)
    # a smaller block or a longer deadline allows a slower limit
    assert TransferConfig(limit_bytes_per_s=floor - 1, block_size=256 * 1024).limit_bytes_per_s == floor - 1
    assert TransferConfig(limit_bytes_per_s=floor // 5, idle_timeout=600).limit_bytes_per_s == floor // 5


def test_first_burst_is_free_then_the_rate_is_exact() -> None:
    fc = FakeClock()
    p = SharedPacer(1000, 500, clock=fc.clock, sleep=fc.sleep)
    assert p.take(500) and fc.slept == []
    start = fc.now
    for _ in range(20):
        assert p.take(100)
    # 2000 bytes after the burst at 1000 B/s: 2 s of (fake) time, less the last 100 bytes'
    # own 0.1 s (a booking waits for its start, not its end)
    assert fc.now - start == pytest.approx(1.9)


def test_streams_share_one_rate() -> None:
    """Four 'streams' taking turns draw from one pacer: together they get the rate, not 4x."""
    fc = FakeClock()
    p = SharedPacer(64_000, PACE_SLICE, clock=fc.clock, sleep=fc.sleep)
    start = fc.now
    total = 0
    for i in range(400):  # streams 0..3 in turn, frames of assorted sizes
        n = 1000 + (i * 7919) % 60000
        assert p.take(n)
        total += n
    elapsed = fc.now - start
    assert (total - PACE_SLICE) / elapsed == pytest.approx(64_000, rel=0.02)


def test_frame_slices_are_spread_at_the_rate() -> None:
    fc = FakeClock()
    p = SharedPacer(100_000, PACE_SLICE, clock=fc.clock, sleep=fc.sleep)
    p.take(PACE_SLICE)  # the burst is spent
    slices = p.slices(4 * PACE_SLICE + 10)
    assert [(a, b) for a, b, _ in slices] == [(0, PACE_SLICE), (PACE_SLICE, 2 * PACE_SLICE),
                                             (2 * PACE_SLICE, 3 * PACE_SLICE), (3 * PACE_SLICE, 4 * PACE_SLICE),
                                             (4 * PACE_SLICE, 4 * PACE_SLICE + 10)]
    moments = [t for _, _, t in slices]
    assert [b - a for a, b in zip(moments[:-1], moments[1:], strict=True)] == pytest.approx([PACE_SLICE / 100_000] * 4)
    # the next booking starts when this whole frame has gone
    assert p.reserve(1) == pytest.approx(moments[0] + (4 * PACE_SLICE + 10) / 100_000)


def test_idle_time_earns_at_most_one_burst() -> None:
    fc = FakeClock()
    p = SharedPacer(100, 200, clock=fc.clock, sleep=fc.sleep)
    p.take(200)
    fc.now += 3600  # a long pause does not bank an hour of bytes
    assert p.reserve(200) <= fc.now
    assert p.reserve(100) == pytest.approx(fc.now)  # the credit is spent: the next waits
    assert p.reserve(100) == pytest.approx(fc.now + 1.0)


def test_bookings_from_many_threads_never_overlap() -> None:
    """Thread safety: 8 threads book 500 times each on a stopped clock; the bookings must tile
    the schedule without a gap or an overlap (a lost update would show as either)."""
    fc = FakeClock()
    p = SharedPacer(1000, 1000, clock=fc.clock, sleep=fc.sleep)
    got: list[tuple[float, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def book(k: int) -> None:
        barrier.wait(timeout=10)
        mine = [(p.reserve(n), n) for n in (1 + (k * 131 + i * 17) % 900 for i in range(500))]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=book, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(got) == 8 * 500
    got.sort()
    t0 = fc.now - 1.0  # a full burst of credit at the start
    for start, n in got:
        assert start == pytest.approx(t0)
        t0 = start + n / 1000


def test_abort_while_waiting_stops_the_wait() -> None:
    fc = FakeClock()
    p = SharedPacer(10, 10, clock=fc.clock, sleep=lambda s: True)
    assert p.take(10) and p.take(10)  # the burst, then a booking that starts now
    assert p.take(10) is False  # this one must wait a second: the sleep says abort


def test_clock_going_backwards_never_creates_credit() -> None:
    fc = FakeClock()
    p = SharedPacer(100, 100, clock=fc.clock, sleep=fc.sleep)
    p.take(100)
    fc.now -= 50
    assert p.reserve(100) == pytest.approx(fc.now + 50)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        SharedPacer(0, 10)
    with pytest.raises(ValueError):
        SharedPacer(10, 0)


def test_kernel_pacing_rate_on_a_tcp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert set_pacing_rate(s, 2_000_000) is True  # Linux accepts it on any TCP socket
        assert set_pacing_rate(s, 10**12) is True  # capped to 32 bits, not an error
