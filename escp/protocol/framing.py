"""Sans-IO frame decoder: bytes in, authenticated plaintext frames out.

Feed it whatever arrived from the socket (a whole buffer, one byte at a time, or a
frame and trailing bytes of the next); it yields each frame's plaintext once the frame
is complete and authentic. Lengths are checked against the negotiated maximum before
any buffer is grown, so a hostile length cannot make it allocate.
"""

from __future__ import annotations

from collections.abc import Iterator

from .crypto import FrameOpener
from .wire import LEN_PREFIX


class FrameDecoder:
    def __init__(self, opener: FrameOpener) -> None:
        self.opener = opener
        self._buf = bytearray()
        self.frames = 0

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        self._buf += data
        while True:
            if len(self._buf) < LEN_PREFIX.size:
                return
            n = self.opener.check_len(self._buf)
            total = LEN_PREFIX.size + n
            if len(self._buf) < total:
                return
            view = memoryview(self._buf)
            try:
                prefix = bytes(view[: LEN_PREFIX.size])
                plain = self.opener.open(prefix, bytes(view[LEN_PREFIX.size : total]))
            finally:
                view.release()
            del self._buf[:total]
            self.frames += 1
            yield plain
