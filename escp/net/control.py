"""Shared session control for the sender and the receiver adapters.

Holds the first fatal error, wakes every blocked thread on abort (by shutting the
sockets down), and stamps progress so a watchdog can end a stalled session. Uses
only the monotonic clock.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..errors import EscpError, OutOfMemory, TimeoutError_
from ..protocol.wire import T_KEEPALIVE

if TYPE_CHECKING:
    from .conn import StreamConn

log = logging.getLogger("escp")

# Keepalives prove the peer is alive but not that the session advances: they can stretch
# the idle deadline to at most this many times its length, never turn it off (HP-13/HP-18).
KEEPALIVE_GRACE = 5
KEEPALIVE_MIN = 0.25  # seconds: the shortest keepalive interval, whatever the idle timeouts


def keepalive_interval(*idle_timeouts: float) -> float:
    """Seconds between keepalives on a quiet metadata stream: a quarter of the shorter of
    both sides' idle timeouts (0 = unknown, ignored), so the peer hears from us well within
    its own deadline (docs/protocol.md §9.10)."""
    known = [t for t in idle_timeouts if t > 0]
    return max(KEEPALIVE_MIN, min(known) / 4) if known else 1.0


def wait_readable(fd: int, timeout: float) -> bool:
    """True when fd is readable (or at EOF/error) within timeout seconds. Uses poll(), not
    select(): select() cannot take descriptors above 1023 (FD_SETSIZE)."""
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLPRI)
    return bool(p.poll(max(0, int(timeout * 1000))))


class SessionControl:
    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.error: EscpError | None = None
        self.aborted = threading.Event()
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._on_abort: list[Callable[[EscpError], None]] = []
        self.last_progress = time.monotonic()
        self.last_alive = self.last_progress

    def progress(self) -> None:
        self.last_progress = self.last_alive = time.monotonic()

    def alive(self) -> None:
        """The peer sent a keepalive: it lives, but nothing advanced."""
        self.last_alive = time.monotonic()

    def add_socket(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self.aborted.is_set():
            self._shutdown(sock)

    def on_abort(self, fn: Callable[[EscpError], None]) -> None:
        self._on_abort.append(fn)

    def abort(self, err: EscpError) -> None:
        with self._lock:
            if self.error is not None or self.done.is_set():
                return
            self.error = err
            socks = list(self._sockets)
        log.debug("session aborted: %s", err.one_line())
        for fn in self._on_abort:
            try:
                fn(err)
            except Exception:  # noqa: BLE001 - best effort while aborting
                log.debug("abort hook failed", exc_info=True)
        self.aborted.set()
        for s in socks:
            self._shutdown(s)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> None:
        self.done.set()

    def wait(self, poll: float = 0.2) -> None:
        """Block until done or aborted; abort with a timeout when nothing progresses."""
        while not self.done.is_set() and not self.aborted.is_set():
            self.done.wait(poll)
            now = time.monotonic()
            idle = now - self.last_progress
            if idle > self.idle_timeout and (now - self.last_alive > self.idle_timeout
                                             or idle > self.idle_timeout * KEEPALIVE_GRACE):
                self.abort(TimeoutError_(f"no progress for {idle:.0f} s (idle deadline {self.idle_timeout:g} s)"))

    def guard(self, fn: Callable[[], None], name: str) -> threading.Thread:
        """Run fn in a daemon thread; an exception aborts the session."""

        def body() -> None:
            try:
                fn()
            except EscpError as exc:
                self.abort(exc)
            except MemoryError:
                self.abort(OutOfMemory(f"out of memory in {name}"))
            except Exception as exc:  # noqa: BLE001 - an unexpected bug must still end the session
                log.exception("internal error in %s", name)
                self.abort(EscpError(f"internal error in {name}: {type(exc).__name__}: {exc}"))

        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        return t


def incoming(conn: StreamConn, plain: memoryview, ctl: SessionControl, closed: Callable[[], None],
             before_wait: Callable[[], None] | None = None) -> Iterator[int]:
    """The frames a metadata stream brings, as plaintext lengths (each frame in `plain`).
    A keepalive only proves the peer lives; any other frame is progress. `before_wait`
    runs whenever the next frame must be waited for; at a clean EOF `closed` runs (it
    raises the core's verdict on the EOF), unless the session is already over."""
    while True:
        if before_wait is not None and not conn.buffered:
            before_wait()
        k = conn.recv_frame_into(plain)
        if k == 1 and plain[0] == T_KEEPALIVE:
            ctl.alive()  # liveness only: keepalives cannot hold the idle deadline off
        else:
            ctl.progress()
        if k is None:
            if not ctl.done.is_set() and not ctl.aborted.is_set():
                closed()
            return
        yield k
