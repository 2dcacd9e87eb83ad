"""Pacing stage of the sender (-l/--limit RATE, per stream).

Two layers: the kernel's SO_MAX_PACING_RATE on each data socket (honoured by the fq
qdisc and by TCP's internal pacing), and a token bucket in each stream worker that
makes the limit exact whatever the qdisc. The bucket is pure arithmetic over an
injected clock and sleep function, so it is unit-tested without real time. Frames
are sent in slices of at most PACE_SLICE bytes, so even a slow limit keeps bytes
flowing well inside the receiver's idle deadline.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable

log = logging.getLogger("escp")

SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)  # Linux value
PACE_SLICE = 64 * 1024
MIN_RATE = 16 * 1024  # bytes/s per stream: one slice every 4 s at most


class TokenBucket:
    """Allows `rate` bytes per second on average, with bursts of at most `burst` bytes.

    take(n) blocks (through `sleep`) until n bytes may go; `sleep` returns True to stop
    waiting early (an abort), which makes take() return False.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], bool | None] = time.sleep) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def delay_for(self, n: int) -> float:
        """Seconds to wait before n bytes may go (0 when they may go now)."""
        self._refill()
        return 0.0 if self._tokens >= n else (n - self._tokens) / self.rate

    def take(self, n: int) -> bool:
        """Wait until n bytes are allowed, then spend them. n above burst is spent in debt."""
        need = min(n, self.burst)
        for _ in range(1000):  # bounded: each round sleeps for the whole computed deficit
            wait = self.delay_for(int(need))
            if wait <= 0:
                break
            if self._sleep(wait):
                return False
        self._tokens -= n
        return True


def set_pacing_rate(sock: socket.socket, rate: int) -> bool:
    """Ask the kernel to pace this socket at `rate` bytes/s; False when it refuses."""
    try:
        # u32 bytes/s (every kernel takes 4 bytes; ~0U means unlimited)
        sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, struct.pack("=I", min(rate, 0xFFFFFFFF)))
        return True
    except OSError as exc:
        log.debug("SO_MAX_PACING_RATE not applied: %s", exc)
        return False
