"""Compress / decompress stage: zstd per block with reused per-stream contexts.

A block is sent compressed only when that makes it smaller. The receiver decompresses
only authenticated frames, into a buffer capped at the negotiated block size, and
requires the frame to expand to exactly the declared length: anything else (a bomb,
a short or corrupt frame) is a ProtocolError. The adaptive mode stops compressing a
stream whose recent blocks did not shrink, and probes again every PROBE_EVERY blocks.
"""

from __future__ import annotations

import zstandard

from ..errors import ProtocolError

PROBE_EVERY = 64
GIVE_UP_AFTER = 8
MIN_GAIN = 0.97  # a block must shrink to below 97 % to count as compressible


class BlockCompressor:
    """One per sender stream; not thread-safe."""

    def __init__(self, level: int, adaptive: bool = True) -> None:
        self._cctx = zstandard.ZstdCompressor(level=level, write_content_size=False, write_checksum=False)
        self.adaptive = adaptive
        self._misses = 0
        self._skipped = 0

    def compress(self, data: memoryview) -> bytes | None:
        """Compressed bytes when they are smaller than data, else None (send raw)."""
        if self.adaptive and self._misses >= GIVE_UP_AFTER:
            self._skipped += 1
            if self._skipped < PROBE_EVERY:
                return None
            self._skipped = 0
        out = self._cctx.compress(data)
        if len(out) < len(data) * MIN_GAIN:
            self._misses = 0
            return out
        self._misses += 1
        return None


class BlockDecompressor:
    """One per receiver stream; not thread-safe."""

    def __init__(self, max_output: int) -> None:
        self._dctx = zstandard.ZstdDecompressor()
        self.max_output = max_output

    def decompress_into(self, frame: memoryview, out: memoryview, expected: int) -> None:
        if expected > self.max_output or expected > len(out):
            raise ProtocolError(f"compressed block declares {expected} bytes, above the block size")
        try:
            # zstd trusts a content size in the frame header over max_output_size: check it first
            declared = zstandard.frame_content_size(frame)
            if declared > expected:
                raise ProtocolError(f"compressed block declares {declared} bytes, more than {expected}")
            result = self._dctx.decompress(frame, max_output_size=self.max_output)
        except zstandard.ZstdError as exc:
            raise ProtocolError(f"compressed block is corrupt or too large ({exc})") from None
        if len(result) != expected:
            raise ProtocolError(f"compressed block expanded to {len(result)} bytes, declared {expected}")
        out[:expected] = result
