"""A small TCP fault proxy on 127.0.0.1 for the data streams (sender --connect-to -> proxy
-> receiver). Byte-level only (it does not know the key):

  cut_after=N     after N bytes sender->receiver in total, reset every connection
  cut_stream=(k, N) reset only the k-th accepted connection (0 = metadata) after N bytes on it
  rate=B          throttle each connection sender->receiver to about B bytes/s
  delay=S         hold each chunk S seconds before forwarding (latency)
  pause()/resume() stop and restart forwarding in both directions (a stalled path)

Every loop is bounded by the sockets' lifetime; close() ends all threads.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

CHUNK = 64 * 1024


class FaultProxy:
    def __init__(self, target_port: int, *, cut_after: int | None = None,
                 cut_stream: tuple[int, int] | None = None, rate: float | None = None,
                 delay: float = 0.0) -> None:
        self.target = ("127.0.0.1", target_port)
        self.cut_after = cut_after
        self.cut_stream = cut_stream
        self.rate = rate
        self.delay = delay
        self.forwarded = 0  # sender -> receiver bytes in total
        self.cut = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._accepted = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                index = self._accepted
                self._accepted += 1
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, index, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, index, False), daemon=True).start()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def cut_all(self) -> None:
        """Reset every connection now (TCP RST on both sides)."""
        self.cut.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._reset(s)

    def _pump(self, src: socket.socket, dst: socket.socket, index: int, upstream: bool) -> None:
        mine = 0
        started = time.monotonic()
        try:
            while not self.cut.is_set():
                data = src.recv(CHUNK)
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                while not self.running.is_set() and not self.cut.is_set():
                    self.running.wait(0.05)
                if self.delay:
                    time.sleep(self.delay)
                if upstream:
                    data = self._apply_cuts(data, index, mine)
                    if data is None:
                        return
                    mine += len(data)
                    if self.rate:
                        ahead = mine / self.rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
                dst.sendall(data)
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
            with self._lock:
                socks = self._socks[2 * index : 2 * index + 2]
            for s in socks:
                self._reset(s)
            return None
        return data

    def close(self) -> None:
        self._closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        self.cut_all()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
