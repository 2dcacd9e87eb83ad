"""DATA frame header codec (docs/protocol.md §6.1): the one place that packs and parses it.

A DATA plaintext is the 20-byte header (type, flags, reserved, fino, offset, raw length)
followed by the payload: the raw block, or a zstd frame when the ZSTD flag is set. The
sender packs the header in place, in front of the block in its preallocated frame buffer;
the receiver parses it from its decrypted frame buffer. Neither copies the payload.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtocolError
from .wire import DATA_FLAG_ZSTD, DATA_HDR, T_DATA

DATA_HEADER_LEN = DATA_HDR.size


@dataclass(frozen=True, slots=True)
class DataHeader:
    fino: int
    offset: int
    raw_len: int  # the block's length before compression
    flags: int = 0  # as received: bits other than ZSTD are refused by the receiver core

    @property
    def compressed(self) -> bool:
        return bool(self.flags & DATA_FLAG_ZSTD)


def pack_data_header(buf: memoryview | bytearray, fino: int, offset: int, raw_len: int, compressed: bool) -> None:
    """Write a DATA header at the start of buf (the payload follows it in the same buffer)."""
    DATA_HDR.pack_into(buf, 0, T_DATA, DATA_FLAG_ZSTD if compressed else 0, 0, fino, offset, raw_len)


def encode_data(fino: int, offset: int, raw_len: int, payload: bytes, compressed: bool) -> bytes:
    """A whole DATA plaintext (a small file's one block on the metadata stream)."""
    return DATA_HDR.pack(T_DATA, DATA_FLAG_ZSTD if compressed else 0, 0, fino, offset, raw_len) + payload


def decode_data_header(plain: memoryview | bytes, length: int) -> DataHeader:
    """The header of a DATA plaintext of `length` bytes; the payload is plain[DATA_HEADER_LEN:length]."""
    if length < DATA_HEADER_LEN:
        raise ProtocolError("DATA frame shorter than its header")
    _, flags, _, fino, offset, raw_len = DATA_HDR.unpack_from(plain)
    return DataHeader(fino, offset, raw_len, flags)
