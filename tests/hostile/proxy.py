"""A frame-aware TCP proxy for network-attacker tests; it does NOT know the session key.

It sits between the sender and the receiver (`--connect-to 127.0.0.1:<proxy port>`) on
127.0.0.1 and understands only the framing: on each connection the receiver first sends
a 32-byte challenge and the sender a 40-byte HELLO; after that every frame is a u32
little-endian length L followed by L bytes (ciphertext + tag). Connections are numbered
in accept order; the sender opens stream 0 (metadata), then 1..T, one after another, so
link number == stream index.

Tampering, per (link, direction, frame number) - direction "c2s" is sender -> receiver,
"s2c" receiver -> sender; frame numbers count the original frames from 0 after the
handshake bytes:
    ("drop",)              do not forward the frame
    ("dup",)               forward it twice
    ("swap",)              hold it and forward it after the next frame
    ("move", link)         send it on another link's same direction instead
    ("cut",)               FIN towards the destination instead of this frame; stop the pump
    ("forge_eos",)         send a made-up end-of-stream-sized frame instead, then FIN
    ("rst",)               reset both TCP connections of the link (SO_LINGER 0 close)
    ("stall", seconds)     wait, then forward
    ("reflect",)           forward it and also send it back to where it came from
    ("replace", bytes)     send these bytes instead
plus `flips={(link, dir): {offset: mask}}`: XOR a byte at an absolute offset of that
direction's byte stream (handshake bytes included), `throttle` (bytes/s on c2s data links),
`gate` (an Event: upstream connects wait for it), pause()/resume() (relay.py), and `recorded[(link, dir)]` with every
byte read. `replay()` sends recorded bytes on a fresh connection to the receiver.

The relay itself (listener, links, one thread per direction) is tests/faults/relay.py.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable

from tests.faults.relay import Link, TcpRelay, rst_close

HANDSHAKE = {"c2s": 40, "s2c": 32}
MAX_FRAME = 80 << 20  # sanity bound only; real limits are the endpoints' business
Action = tuple[object, ...]


class FrameProxy(TcpRelay):
    def __init__(self, upstream: tuple[str, int], *, actions: dict[tuple[int, str, int], Action] | None = None,
                 flips: dict[tuple[int, str], dict[int, int]] | None = None, throttle: float = 0.0,
                 throttle_links: Callable[[int], bool] = lambda i: i > 0, gate: threading.Event | None = None,
                 hook: Callable[[Link, str, int, bytes], list[bytes] | None] | None = None) -> None:
        super().__init__(upstream, backlog=64)
        self.actions = dict(actions or {})
        self.flips = {k: dict(v) for k, v in (flips or {}).items()}
        self.throttle = throttle
        self.throttle_links = throttle_links
        self.gate = gate
        self.hook = hook
        self.recorded: dict[tuple[int, str], bytearray] = {}
        self.frames_seen: dict[tuple[int, str], int] = {}
        self.events: list[str] = []

    @property
    def connect_to(self) -> str:
        return self.address

    # --- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> FrameProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def note(self, text: str) -> None:
        with self._lock:
            self.events.append(text)

    # --- pumping ---------------------------------------------------------------------------------
    def before_connect(self, link: Link) -> None:
        if self.gate is not None:
            self.gate.wait(30)

    def _recv(self, link: Link, direction: str, n: int) -> bytes:
        """Exactly n bytes, fewer at EOF/reset/stop."""
        buf = bytearray()
        while len(buf) < n:
            chunk = self.recv_some(link, direction, n - len(buf))
            if not chunk:
                break
            buf += chunk
        rec = self.recorded.setdefault((link.index, direction), bytearray())
        rec += buf
        return bytes(buf)

    def _send(self, link: Link, direction: str, data: bytes, start_offset: int | None = None) -> None:
        if not data or link.reset:
            return
        flips = self.flips.get((link.index, direction))
        if flips and start_offset is not None:
            b = bytearray(data)
            for off, mask in flips.items():
                if start_offset <= off < start_offset + len(b):
                    b[off - start_offset] ^= mask
                    self.note(f"flip link{link.index} {direction} @{off}")
            data = bytes(b)
        self.hold_while_paused()
        sock = link.dest(direction)
        rate = self.throttle if direction == "c2s" and self.throttle_links(link.index) else 0.0
        with link.locks[direction]:
            try:
                if not rate:
                    sock.sendall(data)
                    return
                step = max(1024, int(rate / 20))
                for i in range(0, len(data), step):
                    if self._stop.is_set():
                        return
                    sock.sendall(data[i : i + step])
                    time.sleep(len(data[i : i + step]) / rate)
            except OSError:
                pass

    def _fin(self, link: Link, direction: str) -> None:
        try:
            link.dest(direction).shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _rst(self, link: Link) -> None:
        link.reset = True
        for s in link.sockets():
            rst_close(s)
        self.note(f"rst link{link.index}")

    def pump(self, link: Link, direction: str) -> None:
        key = (link.index, direction)
        hs = self._recv(link, direction, HANDSHAKE[direction])
        self._send(link, direction, hs, 0)
        offset = len(hs)
        if len(hs) < HANDSHAKE[direction]:
            self._fin(link, direction)
            return
        n = 0
        held: bytes | None = None
        while not self._stop.is_set() and not link.reset:
            prefix = self._recv(link, direction, 4)
            if len(prefix) < 4:
                if held is not None:
                    self._send(link, direction, held)
                self._send(link, direction, prefix, offset)
                self._fin(link, direction)
                break
            (length,) = struct.unpack("<I", prefix)
            body = self._recv(link, direction, min(length, MAX_FRAME)) if length <= MAX_FRAME else b""
            frame = prefix + body
            start = offset
            offset += len(frame)
            self.frames_seen[key] = n + 1
            if len(body) < length:  # truncated by the source, or an absurd length: pass on what we have
                self._send(link, direction, frame, start)
                self._fin(link, direction)
                break
            act = self.actions.get((link.index, direction, n))
            n += 1
            if self.hook is not None:
                out = self.hook(link, direction, n - 1, frame)
                if out is not None:
                    for chunk in out:
                        self._send(link, direction, chunk)
                    continue
            if held is not None:
                self._send(link, direction, frame, start)
                self._send(link, direction, held)
                self.note(f"swapped link{link.index} {direction} frames {n - 2},{n - 1}")
                held = None
                continue
            if act is None:
                self._send(link, direction, frame, start)
                continue
            what = act[0]
            self.note(f"{what} link{link.index} {direction} frame {n - 1}")
            if what == "drop":
                continue
            if what == "dup":
                self._send(link, direction, frame, start)
                self._send(link, direction, frame)
            elif what == "swap":
                held = frame
            elif what == "move":
                other = self.links[int(act[1])]  # type: ignore[call-overload]
                self._send(other, direction, frame)
            elif what == "cut":
                self._fin(link, direction)
                break
            elif what == "forge_eos":
                self._send(link, direction, struct.pack("<I", 17 + 16) + os.urandom(33))
                self._fin(link, direction)
                break
            elif what == "rst":
                self._rst(link)
                break
            elif what == "stall":
                end = time.monotonic() + float(act[1])  # type: ignore[arg-type]
                while time.monotonic() < end and not self._stop.is_set():
                    time.sleep(0.05)
                self._send(link, direction, frame, start)
            elif what == "reflect":
                self._send(link, direction, frame, start)
                back = "s2c" if direction == "c2s" else "c2s"
                self._send(link, back, frame)
            elif what == "replace":
                self._send(link, direction, bytes(act[1]))  # type: ignore[call-overload]
            else:
                raise ValueError(f"unknown proxy action {what!r}")


def replay(address: tuple[str, int], recorded: bytes, *, skip_challenge: bool = True,
           timeout: float = 15.0) -> str:
    """Open a new connection to the receiver and send recorded sender bytes (HELLO + frames).

    Returns "refused" when nothing listens any more (a receiver stops listening once every
    stream of its session is in), "closed" when the receiver closed/reset the connection
    within timeout, else "open" (the receiver kept waiting - it must not, for a replay)."""
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    try:
        if skip_challenge:
            got = b""
            while len(got) < HANDSHAKE["s2c"]:
                chunk = sock.recv(HANDSHAKE["s2c"] - len(got))
                if not chunk:
                    return "closed"
                got += chunk
        try:
            sock.sendall(recorded)
        except OSError:
            return "closed"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                if not sock.recv(65536):
                    return "closed"
            except TimeoutError:
                break
            except OSError:
                return "closed"
        return "open"
    finally:
        sock.close()
