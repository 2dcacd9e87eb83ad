"""Pacing stage of the sender (-l/--limit RATE): one limit for the whole transfer.

Every stream worker and the metadata sender draw from one SharedPacer, so the streams
together send at most RATE, whatever their number. The pacer hands out time on one
schedule (virtual scheduling, equivalent to a token bucket of `burst` bytes): a caller
reserves n bytes and gets the moment they may start; reservations follow each other in
the order they were made, under a lock, so no two callers are given the same time.

A stream worker reserves a whole frame at once and sends it in slices of at most
PACE_SLICE bytes, each at its moment of the schedule: frames leave one after another at
RATE, so even at a slow limit each frame reaches the receiver within one frame's time
(block size / RATE), which the idle deadline bounds (slowest_rate). Besides, the kernel's
SO_MAX_PACING_RATE is set on every data socket to RATE, a hint that keeps one socket from
bursting above the whole limit (honoured by the fq qdisc and TCP's internal pacing).

The pacer is pure arithmetic over an injected clock and sleep function, so it is
unit-tested without real time.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable

log = logging.getLogger("escp")

SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)  # Linux value
PACE_SLICE = 64 * 1024
MIN_RATE = 1000  # bytes/s: the floor of -l whatever the block size and idle deadline
WAIT_ROUNDS = 1000  # bounded: each round sleeps for the whole remaining wait


def slowest_rate(block_size: int, idle_timeout: float) -> int:
    """The lowest -l (bytes/s) a session allows: one block must reach the receiver within its
    idle deadline, or the receiver would see no progress and end the session."""
    return max(MIN_RATE, int(block_size / idle_timeout) + 1)


class SharedPacer:
    """Allows `rate` bytes per second on average to all its callers together, with bursts of at
    most `burst` bytes after an idle time. Thread-safe.

    `sleep(seconds)` returns True to stop waiting early (an abort), which makes the waits
    return False.
    """

    def __init__(self, rate: float, burst: int = PACE_SLICE, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], bool | None] = time.sleep) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = float("-inf")  # when the next reservation may start

    def reserve(self, n: int) -> float:
        """Book n bytes on the schedule; returns the moment (clock time) they may start. Idle
        time earns at most `burst` bytes of credit."""
        with self._lock:
            start = max(self._next, self._clock() - self.burst / self.rate)
            self._next = start + n / self.rate
            return start

    def wait_until(self, moment: float) -> bool:
        """Sleep until the clock reaches moment; False when the sleep was cut short (abort)."""
        for _ in range(WAIT_ROUNDS):
            left = moment - self._clock()
            if left <= 0:
                return True
            if self._sleep(left):
                return False
        return True

    def take(self, n: int) -> bool:
        """Wait until n bytes may go (they are booked now); False when aborted."""
        return self.wait_until(self.reserve(n))

    def slices(self, n: int) -> list[tuple[int, int, float]]:
        """Book n bytes at once; (start, end, moment) of each slice of at most PACE_SLICE bytes,
        the moment being when that slice may start (the bytes before it at `rate`)."""
        start = self.reserve(n)
        return [(off, min(n, off + PACE_SLICE), start + off / self.rate) for off in range(0, n, PACE_SLICE)]


def set_pacing_rate(sock: socket.socket, rate: int) -> bool:
    """Ask the kernel to pace this socket at `rate` bytes/s; False when it refuses."""
    try:
        # u32 bytes/s (every kernel takes 4 bytes; ~0U means unlimited)
        sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, struct.pack("=I", min(rate, 0xFFFFFFFF)))
        return True
    except OSError as exc:
        log.debug("SO_MAX_PACING_RATE not applied: %s", exc)
        return False
