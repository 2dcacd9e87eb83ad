"""What the user watches on stderr while a transfer runs, and the line that ends it.

On a terminal: one status line redrawn in place (erased at the end). Elsewhere (a batch
job, a Slurm log), with --progress or --progress-interval: a plain line every interval
seconds. Both show the same figures, from the sending session's ProgressSnapshot: bytes
done of the bytes found so far, a `+` while the walk still finds more (the % and the ETA
only once the walk is complete, when the total is known), files done of files found, the
rate over the last few seconds, and the file being sent. Sizes and rates are in the one
unit system of escp/units.py (--bits: rates in bit/s).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from .errors import escape_name
from .results import ProgressSnapshot, TransferResult
from .units import format_bytes, format_rate

REDRAW = 0.25  # seconds between redraws on a terminal
DEFAULT_INTERVAL = 10.0  # seconds between plain status lines (--progress-interval)
RATE_WINDOW = 5.0  # the rate is measured over at most this many recent seconds
DEFAULT_WIDTH = 80
CLEAR_LINE = "\r\x1b[K"  # back to column 0, erase to the end of the line


def clock_text(seconds: float) -> str:
    """H:MM:SS, or M:SS under an hour."""
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def status_text(s: ProgressSnapshot, rate: float | None, bits: bool) -> str:
    """The figures of one status line (no file name)."""
    more = "" if s.walk_done else "+"
    parts = []
    if s.walk_done and s.bytes_known > 0:
        parts.append(f"{min(100, 100 * s.bytes_done // s.bytes_known):3d}%")
    parts.append(f"{format_bytes(s.bytes_done)}/{format_bytes(s.bytes_known)}{more}")
    if rate is not None:
        parts.append(format_rate(rate, bits=bits))
        if s.walk_done and rate > 0:
            parts.append(f"ETA {clock_text(max(0, s.bytes_known - s.bytes_done) / rate)}")
    parts.append(f"{s.files_done}/{s.files_known}{more} files")
    return "  ".join(parts)


def fit(text: str, name: str, width: int) -> str:
    """text, then as much of the end of name as fits in width columns."""
    room = width - len(text) - 2
    if room <= 3 or not name:
        return text[:width]
    if len(name) > room:
        name = "..." + name[len(name) - room + 3 :]
    return f"{text}  {name}"


class RateMeter:
    """Bytes per second over the last RATE_WINDOW seconds of samples."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float | None:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        t0, d0 = self.samples[0]
        return (done - d0) / (now - t0) if now > t0 else None


class ProgressDisplay:
    """Draws the status of a running transfer from a background thread until close()."""

    def __init__(self, source: Callable[[], ProgressSnapshot | None], out: TextIO, *, terminal: bool,
                 interval: float = DEFAULT_INTERVAL, bits: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source  # None until the session exists
        self.out = out
        self.terminal = terminal
        self.interval = REDRAW if terminal else interval
        self.bits = bits
        self.clock = clock
        self.meter = RateMeter()
        self.start_time = clock()
        self.drawn = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self) -> str | None:
        """The status line now (None before the session starts)."""
        snap = self.source()
        if snap is None:
            return None
        now = self.clock()
        text = status_text(snap, self.meter.add(now, snap.bytes_done), self.bits)
        name = escape_name(snap.current)
        if self.terminal:
            return fit(text, name, self._width() - 1)
        return f"progress {clock_text(now - self.start_time)}  {text}" + (f"  {name}" if name else "")

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self.out.fileno()).columns or DEFAULT_WIDTH
        except (OSError, ValueError, AttributeError):
            return DEFAULT_WIDTH

    def draw(self) -> None:
        text = self.line()
        if text is None:
            return
        if self.terminal:
            self.out.write(CLEAR_LINE + text)
            self.drawn = True
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.draw()

        self._thread = threading.Thread(target=loop, name="progress", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop drawing; a terminal's status line is erased."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.drawn:
            self.out.write(CLEAR_LINE)
            self.out.flush()


def summary_line(result: TransferResult, bits: bool) -> str | None:
    """The line that ends a transfer; None when nothing was copied and every file failed
    (their error lines say it all)."""
    if result.files_ok == 0 and result.files_failed > 0:
        return None
    rate = result.bytes_payload / result.seconds if result.seconds > 0 else 0.0
    failed = f" ({result.files_failed} failed)" if result.files_failed else ""
    copied = result.files_ok - result.files_skipped
    skipped = (f"; skipped {result.files_skipped} files, {format_bytes(result.bytes_skipped)} not sent"
               if result.files_skipped else "")
    if result.files_resumed:
        skipped += f"; resumed {result.files_resumed} files, {format_bytes(result.bytes_resumed)} not sent again"
    return (f"Complete: {format_bytes(result.bytes_payload)} in {copied} files at "
            f"{format_rate(rate, bits=bits)} in {result.seconds:.2f} s{failed}{skipped}")
