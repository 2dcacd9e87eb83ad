"""A long fat pipe on loopback: a TCP relay that gives every connection through it the round-trip
time, window and bottleneck of a WAN path. Used by the WAN scenarios (escp's data streams via
`--connect-to`, ssh via its port) and by the tests (tests/harness/test_pathemu.py).

Per connection and direction, a reader thread takes bytes from the source socket and a writer
thread hands them to the destination socket:

  delay    every chunk is held until it has crossed the bottleneck and then one way of the path
           (rtt / 2): a delay line of (due time, bytes);
  window   the reader takes new bytes only while fewer than `window` bytes are in flight: read
           and not yet acknowledged, where a chunk is acknowledged one way after the writer
           delivered it. So one connection moves at most window / rtt, as TCP with that window
           does; the bytes it may not take yet wait in the sender's socket buffer;
  rate     every chunk of every connection is serialised on one shared link at `rate` bytes/s
           (a virtual clock: a chunk leaves the link size / rate after the previous one), so the
           total never exceeds the bottleneck;
  stalls   `stall(seconds)` (or the spec's schedule) stops every delivery for a while: nothing
           moves, acknowledgements stop, windows fill.

Accounting: every delivery is logged (time, route, connection, direction, bytes, due time), so
tests and the harness check what the emulator really did against what it should do
(`throughput`, `steady_rate`, `peak_rate`). Limits of a Python relay on this 2-core VM are in the harness
README ("Highest emulable rate"). An optional kernel shaper (tc tbf in a network namespace) is
harness/netns.py.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CHUNK = 256 * 1024  # most bytes one read takes (a chunk is delayed and accounted as one)
POLL_S = 0.2  # socket timeout: how often blocked threads look at the stop flag
LOG_MAX = 1_000_000  # deliveries kept in the accounting log
C2S, S2C = "c2s", "s2c"  # client -> upstream (escp's data direction), upstream -> client
Connector = Callable[[tuple[str, int]], socket.socket]


@dataclass(frozen=True)
class PathSpec:
    """An emulated path: round-trip time, window per connection, bottleneck shared by all."""

    rtt_s: float
    window_bytes: int
    rate_bytes_per_s: float | None = None  # None: no bottleneck
    stalls: tuple[tuple[float, float], ...] = ()  # (start s after the first connection, duration s)

    def per_stream(self) -> float:
        """The most one connection moves: window / rtt (bytes/s)."""
        return self.window_bytes / self.rtt_s

    def ceiling(self, streams: int) -> float:
        """min(streams x window / rtt, bottleneck): the most `streams` connections move together."""
        total = streams * self.per_stream()
        return min(total, self.rate_bytes_per_s) if self.rate_bytes_per_s else total

    def describe(self) -> str:
        rate = f"{self.rate_bytes_per_s * 8 / 1e9:g} Gbit/s" if self.rate_bytes_per_s else "no"
        return (f"RTT {self.rtt_s * 1e3:g} ms, window {self.window_bytes / 2**20:g} MiB "
                f"({self.per_stream() / 1e6:.1f} MB/s per stream), {rate} bottleneck")


@dataclass(frozen=True)
class Delivery:
    t: float  # when the writer handed the chunk to the destination socket (time.monotonic)
    route: str
    conn: int
    direction: str
    nbytes: int
    due: float  # when the path says it may arrive (after the link and the one-way delay)


class _Link:
    """The bottleneck: one virtual clock for the bytes of every connection."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._free_at = 0.0
        self._lock = threading.Lock()

    def transmit(self, nbytes: int, now: float) -> float:
        """When nbytes entering the link now have left it."""
        if not self.rate:
            return now
        with self._lock:
            self._free_at = max(now, self._free_at) + nbytes / self.rate
            return self._free_at


@dataclass
class _Pipe:
    """One direction of one relayed connection: the delay line and the bytes in flight."""

    src: socket.socket
    dst: socket.socket
    route: str
    conn: int
    direction: str
    pending: deque[tuple[float, bytes]] = field(default_factory=deque)  # read, not yet delivered
    acks: deque[tuple[float, int]] = field(default_factory=deque)  # delivered: (acknowledged at, bytes)
    inflight: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def release(self, now: float) -> float | None:
        """Drop acknowledged bytes from the flight; the next acknowledgement time (None: none due)."""
        while self.acks and self.acks[0][0] <= now:
            self.inflight -= self.acks.popleft()[1]
        return self.acks[0][0] if self.acks else None


class PathEmulator:
    """Relays TCP connections over an emulated path. `add_route(upstream)` opens a listener on
    127.0.0.1 whose connections go to upstream; all routes share the link and the stalls."""

    def __init__(self, spec: PathSpec, *, connector: Connector | None = None) -> None:
        self.spec = spec
        self.one_way = spec.rtt_s / 2
        self._link = _Link(spec.rate_bytes_per_s)
        self._connect: Connector = connector or (lambda addr: socket.create_connection(addr, timeout=10))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._conns = 0
        self._stalled_until = 0.0
        self._t_first: float | None = None  # first connection: the origin of the stall schedule
        self.log: deque[Delivery] = deque(maxlen=LOG_MAX)
        self.errors: list[str] = []

    # ------------------------------------------------------------------ set-up
    def add_route(self, upstream: tuple[str, int], name: str = "data") -> int:
        """Listen on 127.0.0.1 (a free port, returned) and relay each connection to upstream."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.settimeout(POLL_S)
        self._track(listener)
        self._spawn(self._accept_loop, f"pathemu-{name}", listener, upstream, name)
        return int(listener.getsockname()[1])

    def stall(self, seconds: float) -> None:
        """Stop every delivery for `seconds` from now."""
        with self._lock:
            self._stalled_until = max(self._stalled_until, time.monotonic() + seconds)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for s in sockets:
            try:
                s.close()
            except OSError:
                pass
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout=3)

    def __enter__(self) -> PathEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ accounting
    def deliveries(self, route: str | None = None, direction: str = C2S) -> list[Delivery]:
        with self._lock:
            return [d for d in self.log if d.direction == direction and (route is None or d.route == route)]

    def reset_accounting(self) -> None:
        with self._lock:
            self.log.clear()

    def throughput(self, route: str | None = None, direction: str = C2S, conn: int | None = None) -> float:
        """Bytes delivered after the first delivery per second until the last one (0 with fewer
        than two): for deliveries that come once per round trip or once per link slot, the
        steady rate without the first burst."""
        ds = [d for d in self.deliveries(route, direction) if conn is None or d.conn == conn]
        if len(ds) < 2:
            return 0.0
        span = ds[-1].t - ds[0].t
        return sum(d.nbytes for d in ds[1:]) / span if span > 0 else 0.0

    def steady_rate(self, route: str | None = None, direction: str = C2S, middle: float = 0.9) -> float:
        """Bytes per second while the middle `middle` share of the bytes crossed: the rate once the
        data flows, without the set-up before it and the tail after it (0 without deliveries)."""
        ds = self.deliveries(route, direction)
        total = sum(d.nbytes for d in ds)
        lo_mark, hi_mark = total * (1 - middle) / 2, total * (1 + middle) / 2
        done, t_lo, b_lo = 0, None, 0
        for d in ds:
            done += d.nbytes
            if t_lo is None and done >= lo_mark:
                t_lo, b_lo = d.t, done
            if done >= hi_mark and t_lo is not None and d.t > t_lo:
                return (done - b_lo) / (d.t - t_lo)
        return 0.0

    def peak_rate(self, window_s: float, route: str | None = None, direction: str = C2S) -> float:
        """The most bytes delivered within any `window_s` seconds, per second."""
        ds = self.deliveries(route, direction)
        best = total = lo = 0
        for d in ds:
            total += d.nbytes
            while ds[lo].t < d.t - window_s:
                total -= ds[lo].nbytes
                lo += 1
            best = max(best, total)
        return best / window_s

    def summary(self, route: str | None = None) -> dict[str, Any]:
        ds = self.deliveries(route)
        return {
            "connections": len({(d.route, d.conn) for d in ds}),
            "bytes": sum(d.nbytes for d in ds),
            "throughput_Bps": round(self.throughput(route), 1),
            "steady_Bps": round(self.steady_rate(route), 1),
            "late_s_max": round(max((d.t - d.due for d in ds), default=0.0), 4),
        }

    # ------------------------------------------------------------------ relaying
    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.append(s)

    def _spawn(self, fn: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self, listener: socket.socket, upstream: tuple[str, int], name: str) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                index = self._conns
                self._conns += 1
                if self._t_first is None:
                    self._t_first = time.monotonic()
                    for start, duration in self.spec.stalls:
                        timer = threading.Timer(start, self.stall, (duration,))
                        timer.daemon = True
                        timer.start()
            self._spawn(self._open, f"pathemu-{name}-{index}", client, upstream, name, index)

    def _open(self, client: socket.socket, upstream: tuple[str, int], name: str, index: int) -> None:
        self._track(client)
        try:
            server = self._connect(upstream)
        except OSError as exc:
            self.errors.append(f"{name} #{index}: connect {upstream}: {exc}")
            client.close()
            return
        self._track(server)
        for s in (client, server):
            s.settimeout(POLL_S)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._stop.is_set():
            return
        for src, dst, direction in ((client, server, C2S), (server, client, S2C)):
            pipe = _Pipe(src, dst, name, index, direction)
            self._spawn(self._read, f"pathemu-{name}-{index}-{direction}-r", pipe)
            self._spawn(self._write, f"pathemu-{name}-{index}-{direction}-w", pipe)

    def _read(self, pipe: _Pipe) -> None:
        """Take bytes while the window has room; stamp when each chunk may arrive."""
        window = self.spec.window_bytes
        while not self._stop.is_set():
            with pipe.cond:
                while True:
                    next_ack = pipe.release(time.monotonic())
                    room = window - pipe.inflight
                    if room > 0 or self._stop.is_set():
                        break
                    pipe.cond.wait(POLL_S if next_ack is None else max(0.0, next_ack - time.monotonic()))
            try:
                data = pipe.src.recv(min(CHUNK, room))
            except TimeoutError:
                continue
            except OSError:
                data = b""
            due = self._link.transmit(len(data), time.monotonic()) + self.one_way
            with pipe.cond:
                pipe.pending.append((due, data))  # b"": the end of the stream, in order
                pipe.inflight += len(data)
                pipe.cond.notify_all()
            if not data:
                return

    def _write(self, pipe: _Pipe) -> None:
        """Deliver each chunk at its due time (later during a stall), then count it in flight
        until its acknowledgement has come back one way."""
        while not self._stop.is_set():
            with pipe.cond:
                while not pipe.pending and not self._stop.is_set():
                    pipe.cond.wait(POLL_S)
                if self._stop.is_set():
                    return
                due, data = pipe.pending[0]
            while not self._stop.is_set():
                wait = max(due, self._stalled_until) - time.monotonic()
                if wait <= 0:
                    break
                self._stop.wait(min(wait, POLL_S))
            if not data:
                try:
                    pipe.dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if not self._send_all(pipe.dst, data):
                return
            now = time.monotonic()
            with pipe.cond:
                pipe.pending.popleft()
                pipe.acks.append((now + self.one_way, len(data)))
                pipe.cond.notify_all()
            with self._lock:
                self.log.append(Delivery(now, pipe.route, pipe.conn, pipe.direction, len(data), due))

    def _send_all(self, sock: socket.socket, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            if self._stop.is_set():
                return False
            try:
                view = view[sock.send(view):]
            except TimeoutError:
                continue
            except OSError:
                return False
        return True


# ---------------------------------------------------------------- measuring the emulator itself


def measure(spec: PathSpec, streams: int, nbytes: int) -> dict[str, float]:
    """Send nbytes on each of `streams` connections through an emulator into a sink on 127.0.0.1;
    the end-to-end rate, the emulator's own steady rate and lateness, and the ceiling."""
    sink = socket.create_server(("127.0.0.1", 0), backlog=streams)
    received: list[int] = []
    drains: list[threading.Thread] = []

    def drain(conn: socket.socket) -> None:
        buf, n = bytearray(1 << 20), 0
        with conn:
            while k := conn.recv_into(buf):
                n += k
        received.append(n)

    def accept() -> None:
        for _ in range(streams):
            conn, _ = sink.accept()
            drains.append(threading.Thread(target=drain, args=(conn,), daemon=True))
            drains[-1].start()

    def send(port: int) -> None:
        payload = memoryview(bytes(1 << 20))
        with socket.create_connection(("127.0.0.1", port)) as s:
            for start in range(0, nbytes, len(payload)):
                s.sendall(payload[: min(len(payload), nbytes - start)])
            s.shutdown(socket.SHUT_WR)
            s.recv(1)

    with sink, PathEmulator(spec) as emu:
        port = emu.add_route(sink.getsockname()[:2])
        threading.Thread(target=accept, daemon=True).start()
        t0 = time.monotonic()
        senders = [threading.Thread(target=send, args=(port,)) for _ in range(streams)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        for t in list(drains):
            t.join()
        elapsed = time.monotonic() - t0
        out = {"end_to_end_Bps": sum(received) / elapsed, "steady_Bps": emu.steady_rate(),
               "ceiling_Bps": spec.ceiling(streams), "late_s_max": emu.summary()["late_s_max"]}
    if sum(received) != streams * nbytes:
        raise OSError(f"received {sum(received)} of {streams * nbytes} bytes")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from escp.units import parse_rate
    from harness.datasets import parse_size

    ap = argparse.ArgumentParser(prog="python -m harness.pathemu",
                                 description="measure the path emulator on this machine")
    ap.add_argument("--rtt-ms", type=float, default=0.1)
    ap.add_argument("--window", default="64M")
    ap.add_argument("--bottleneck", default=None, help="e.g. 1Gbit (default: none)")
    ap.add_argument("-t", "--streams", type=int, default=1)
    ap.add_argument("--bytes", default="1G", help="per stream")
    a = ap.parse_args(argv)
    spec = PathSpec(a.rtt_ms / 1e3, parse_size(a.window), parse_rate(a.bottleneck) if a.bottleneck else None)
    r = measure(spec, a.streams, parse_size(a.bytes))
    print(f"{spec.describe()}, {a.streams} streams: end to end {r['end_to_end_Bps'] / 1e6:.1f} MB/s, "
          f"on the path {r['steady_Bps'] / 1e6:.1f} MB/s, ceiling {r['ceiling_Bps'] / 1e6:.1f} MB/s, "
          f"latest delivery {1e3 * r['late_s_max']:.1f} ms after its time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
