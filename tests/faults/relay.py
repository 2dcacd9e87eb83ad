"""The TCP relay core shared by the test proxies (tests/faults/proxy.py: byte-level faults;
tests/hostile/proxy.py: frame-aware tampering).

A listener on 127.0.0.1 (ephemeral port) accepts connections and numbers them in accept
order; each becomes a `Link` to `upstream` with one pump thread per direction: "c2s"
(client -> upstream, i.e. sender -> receiver) and "s2c". Subclasses implement `pump`.
Every socket has a short timeout so that every loop sees `stop()`; the accept loop also
has a bounded lifetime. `pause()` holds all forwarding (pumps call `hold_while_paused()`
before they pass data on) until `resume()`: a test that must act mid-transfer pauses
first, so that the transfer cannot finish meanwhile however slow the machine is.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

POLL = 0.2  # socket timeout: how often blocked loops look at the stop flag
LIFETIME = 300.0  # the accept loop ends after this long whatever happens


def rst_close(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


@dataclass
class Link:
    """One relayed connection: the accepted client socket and its upstream connection."""

    index: int
    client: socket.socket
    upstream: socket.socket | None = None
    locks: dict[str, threading.Lock] = field(default_factory=lambda: {"c2s": threading.Lock(),
                                                                       "s2c": threading.Lock()})
    done: dict[str, bool] = field(default_factory=lambda: {"c2s": False, "s2c": False})
    reset: bool = False

    def dest(self, direction: str) -> socket.socket:
        s = self.upstream if direction == "c2s" else self.client
        assert s is not None
        return s

    def src(self, direction: str) -> socket.socket:
        s = self.client if direction == "c2s" else self.upstream
        assert s is not None
        return s

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class TcpRelay:
    def __init__(self, upstream: tuple[str, int], *, backlog: int = 64) -> None:
        self.upstream = upstream
        self.links: list[Link] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._threads: list[threading.Thread] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(backlog)
        self.listener.settimeout(POLL)
        self.port = self.listener.getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- hooks for subclasses -------------------------------------------------------------
    def admit(self, client: socket.socket) -> bool:
        """Called for each accepted connection; False refuses it (the subclass closes it)."""
        return True

    def before_connect(self, link: Link) -> None:
        """Called in the link's thread before it connects upstream."""

    def pump(self, link: Link, direction: str) -> None:
        raise NotImplementedError

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.spawn(self._accept_loop, "relay-accept")

    def stop(self) -> None:
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        for link in self.snapshot():
            for s in link.sockets():
                try:
                    s.close()
                except OSError:
                    pass
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(timeout=3)

    def pause(self) -> None:
        """Hold every byte read from now on (both directions) until resume(); EOFs still pass."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def hold_while_paused(self, released: Callable[[], bool] = lambda: False) -> None:
        """Block a pump while paused; returns at resume(), stop() or once released() is true."""
        while not self._running.is_set() and not self._stop.is_set() and not released():
            self._running.wait(POLL)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> list[Link]:
        with self._lock:
            return list(self.links)

    def spawn(self, fn: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        deadline = time.monotonic() + LIFETIME
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.admit(client):
                continue
            with self._lock:
                link = Link(len(self.links), client)
                self.links.append(link)
            self.spawn(self._open_link, f"relay-link{link.index}", link)

    def _open_link(self, link: Link) -> None:
        self.before_connect(link)
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            rst_close(link.client)
            return
        link.upstream = upstream
        for s in link.sockets():
            s.settimeout(POLL)
        if self._stop.is_set():  # stopped while connecting: stop() may have missed this socket
            upstream.close()
            return
        self.spawn(self._run_pump, f"relay-{link.index}-s2c", link, "s2c")
        self._run_pump(link, "c2s")

    def _run_pump(self, link: Link, direction: str) -> None:
        try:
            self.pump(link, direction)
        finally:
            link.done[direction] = True

    def recv_some(self, link: Link, direction: str, n: int) -> bytes:
        """Up to n bytes from the direction's source as soon as some arrive; b"" at EOF,
        reset or stop (timeouts are retried until then)."""
        sock = link.src(direction)
        while not self._stop.is_set() and not link.reset:
            try:
                return sock.recv(n)
            except TimeoutError:
                continue
            except OSError:
                return b""
        return b""

    def send_all(self, sock: socket.socket, data: bytes) -> bool:
        """Send every byte, however long the peer takes to read (timeouts are retried);
        False when stopped first. OSError propagates."""
        view = memoryview(data)
        while view:
            if self._stop.is_set():
                return False
            try:
                k = sock.send(view)
            except TimeoutError:
                continue
            view = view[k:]
        return True
