"""Sans-IO frame decoder: received bytes in, authenticated plaintext frames out.

It owns one receive buffer, allocated once: room for the largest legal frame plus some
read-ahead, so that many small frames arrive per read. The caller reads straight into
it — `recv_buffer()` is where the next `recv_into` lands, `received(n)` commits what
arrived — and `next_frame_into(out)` authenticates and decrypts the next whole frame
into the caller's buffer (decrypt_into: no Python copy of the payload). `feed(data)` is
the convenience form for tests and scripted peers: whole buffers, one byte at a time, or
a frame and part of the next. A frame's length is checked against the negotiated
maximum as soon as its 4-byte prefix is in, before anything waits for its body.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

from ..errors import IntegrityError
from .crypto import FrameOpener
from .wire import LEN_PREFIX, TAG_LEN

READ_AHEAD = 64 * 1024  # bytes a read may take beyond the frame being completed


class FrameDecoder:
    def __init__(self, opener: FrameOpener, read_ahead: int = READ_AHEAD) -> None:
        self.opener = opener
        self.read_ahead = read_ahead
        # anonymous memory: zero pages are only materialised where frames land, so a
        # decoder for 64 MiB blocks costs nothing until such a frame arrives
        self._buf = mmap.mmap(-1, LEN_PREFIX.size + opener.max_len + read_ahead)
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet decoded
        self._end = 0  # end of the bytes received
        self._total = 0  # length of the frame at _start, prefix included, once its prefix is in
        self.frames = 0

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a complete frame."""
        return self._end - self._start

    def _need(self) -> int:
        """Length of the frame at the front, prefix included (the prefix alone until it is in)."""
        if not self._total:
            if self._end - self._start < LEN_PREFIX.size:
                return LEN_PREFIX.size
            prefix = self._view[self._start : self._start + LEN_PREFIX.size]
            self._total = LEN_PREFIX.size + self.opener.check_len(prefix)
        return self._total

    def missing(self) -> int:
        """Bytes still to receive before the next frame is whole (0: it is). ProtocolError
        once the prefix is in and announces a length out of bounds."""
        return max(0, self._need() - (self._end - self._start))

    def recv_buffer(self) -> memoryview:
        """Where the next read should land: free space after the received bytes, enough for
        the frame being completed plus read-ahead. A partial frame near the end of the
        buffer is first moved to its front."""
        need = self._need()
        if self._start + need > len(self._view):
            avail = self._end - self._start
            self._view[:avail] = self._view[self._start : self._end]
            self._start, self._end = 0, avail
        return self._view[self._end : min(len(self._view), self._start + need + self.read_ahead)]

    def received(self, n: int) -> None:
        """n bytes arrived in the buffer returned by recv_buffer()."""
        self._end += n

    def next_frame_into(self, out: memoryview) -> int | None:
        """Open the next whole frame into out: its plaintext length, or None when more bytes
        are needed. IntegrityError when the frame is not authentic (§4.4)."""
        if self.missing():
            return None
        p, end = self._start, self._start + self._total
        body = p + LEN_PREFIX.size
        k = self.opener.open_into(bytes(self._view[p:body]), self._view[body:end], out)
        self._start, self._total = end, 0
        if self._start == self._end:
            self._start = self._end = 0
        self.frames += 1
        return k

    def eof(self, name: str) -> None:
        """The peer closed the connection: fine between frames, a truncation inside one."""
        if self.pending:
            raise IntegrityError(f"{name} truncated mid-frame")

    def next_frame(self) -> bytes | None:
        """The next whole frame's plaintext as bytes (a copy: not for the data path)."""
        if self.missing():
            return None
        out = bytearray(self._total - LEN_PREFIX.size - TAG_LEN)
        self.next_frame_into(memoryview(out))
        return bytes(out)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        """Take `data` and yield the plaintext of every frame it completes."""
        src = memoryview(data).cast("B")
        pos = 0
        while True:
            while (frame := self.next_frame()) is not None:
                yield frame
            if pos >= len(src):
                return
            window = self.recv_buffer()
            n = min(len(window), len(src) - pos)
            window[:n] = src[pos : pos + n]
            self.received(n)
            pos += n
