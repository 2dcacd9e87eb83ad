"""A small TCP fault proxy on 127.0.0.1 for the data streams (sender --connect-to -> proxy
-> receiver at `upstream`, usually a Scene's pinned address and port). Byte-level only (it does not know the key):

  cut_after=N     after N bytes sender->receiver in total, reset every connection
  cut_stream=(k, N) reset only the k-th accepted connection (0 = metadata) after N bytes on it
  rate=B          throttle each connection sender->receiver to about B bytes/s
  delay=S         hold each chunk S seconds before forwarding (latency)
  pause()/resume() stop and restart forwarding in both directions (a stalled path; see relay.py)

The relay itself (listener, links, one thread per direction) is tests/faults/relay.py.
Every loop is bounded by the sockets' lifetime; close() ends all threads.
"""

from __future__ import annotations

import socket
import threading
import time

from tests.faults.relay import Link, TcpRelay, rst_close

CHUNK = 64 * 1024


class FaultProxy(TcpRelay):
    def __init__(self, upstream: tuple[str, int], *, cut_after: int | None = None,
                 cut_stream: tuple[int, int] | None = None, rate: float | None = None,
                 delay: float = 0.0) -> None:
        super().__init__(upstream, backlog=128)
        self.cut_after = cut_after
        self.cut_stream = cut_stream
        self.rate = rate
        self.delay = delay
        self.forwarded = 0  # sender -> receiver bytes in total
        self.cut = threading.Event()
        self.cut_at: float | None = None  # time.monotonic() of the first cut
        self.start()

    def admit(self, client: socket.socket) -> bool:
        if self.cut.is_set():
            rst_close(client)
            return False
        return True

    def cut_all(self) -> None:
        """Reset every connection now (TCP RST on both sides)."""
        if self.cut_at is None:
            self.cut_at = time.monotonic()
        self.cut.set()
        for link in self.snapshot():
            for s in link.sockets():
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                rst_close(s)

    def pump(self, link: Link, direction: str) -> None:
        upstream = direction == "c2s"
        dst = link.dest(direction)
        mine = 0
        started = time.monotonic()
        try:
            while not self.cut.is_set():
                data = self.recv_some(link, direction, CHUNK)
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                self.hold_while_paused(self.cut.is_set)
                if self.delay:
                    time.sleep(self.delay)
                if upstream:
                    cut = self._apply_cuts(data, link.index, mine)
                    if cut is None:
                        return
                    data = cut
                    mine += len(data)
                    if self.rate:
                        ahead = mine / self.rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
                if not self.send_all(dst, data):
                    return
        except OSError:
            return

    def _apply_cuts(self, data: bytes, index: int, mine: int) -> bytes | None:
        """Forward at most up to a cut point; at the cut, reset everything (or one stream)."""
        with self._lock:
            total = self.forwarded
            self.forwarded += len(data)
        if self.cut_after is not None and total + len(data) >= self.cut_after:
            self.cut_all()
            return None
        if self.cut_stream is not None and self.cut_stream[0] == index and mine + len(data) >= self.cut_stream[1]:
            for s in self.snapshot()[index].sockets():
                rst_close(s)
            return None
        return data

    def close(self) -> None:
        self.cut_all()
        self.stop()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
