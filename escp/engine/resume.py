"""The resume record (--resume): what an interrupted receiver keeps next to a temp file so
that a later run can take over the blocks it verified (docs/protocol.md §9.15).

With --resume the temp file of NAME is `.NAME.escp-resume.part` (a stable name, so the
next session finds it, and one the stale-temp sweep leaves alone) and its record is
`.NAME.escp-resume`, both in NAME's directory. The record (binary, little-endian):

    magic "ESCPRES1" | u32 block size | u64 source size | i64 source mtime_ns |
    u16 name length | name (NAME's last component) | u32 n | n * (u64 offset, u64 length,
    16-byte range digest) | 16-byte BLAKE2b (person "escp-record-1") of everything before

Ranges are runs of whole blocks written to the temp file, in offset order, each with its
checksum.range_digest over the block digests the receiver computed as it wrote them.
`decode` returns None for anything that is not exactly such a record (truncated,
garbled, another version): the file then restarts from zero.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ..protocol.messages import KeptRange
from ..protocol.wire import DIGEST_LEN, KEPT_RANGE, MAX_KEPT_RANGES
from .checksum import range_digest

MAGIC = b"ESCPRES1"
_HEAD = struct.Struct("<8sIQqH")  # magic, block size, source size, source mtime_ns, name length
_COUNT = struct.Struct("<I")
MAX_RECORD = _HEAD.size + 4096 + _COUNT.size + MAX_KEPT_RANGES * KEPT_RANGE.size + DIGEST_LEN
RECORD_MIN_BLOCKS = 4  # blocks written between two records, at least ...
RECORD_SHARE = 64  # ... or this share of what the file has written (bounds the work of records)


def temp_name(base: bytes) -> bytes:
    """The temp file of NAME under --resume."""
    return b"." + base[:180] + b".escp-resume.part"


def record_name(base: bytes) -> bytes:
    return b"." + base[:180] + b".escp-resume"


@dataclass(frozen=True)
class ResumeRecord:
    block_size: int
    size: int  # the source's size and mtime when the temp file was started
    mtime_ns: int
    name: bytes  # the final name's last component
    ranges: tuple[KeptRange, ...]


def _seal(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=DIGEST_LEN, person=b"escp-record-1").digest()


def encode(r: ResumeRecord) -> bytes:
    body = (_HEAD.pack(MAGIC, r.block_size, r.size, r.mtime_ns, len(r.name)) + r.name
            + _COUNT.pack(len(r.ranges)) + b"".join(KEPT_RANGE.pack(k.offset, k.length, k.digest) for k in r.ranges))
    return body + _seal(body)


def decode(data: bytes) -> ResumeRecord | None:
    """The record in `data`, or None when it is not exactly one (any damage)."""
    if len(data) < _HEAD.size + _COUNT.size + DIGEST_LEN or len(data) > MAX_RECORD:
        return None
    body, seal = data[:-DIGEST_LEN], data[-DIGEST_LEN:]
    if _seal(body) != seal:
        return None
    magic, block_size, size, mtime_ns, name_len = _HEAD.unpack_from(body)
    at = _HEAD.size + name_len
    if magic != MAGIC or len(body) < at + _COUNT.size:
        return None
    (n,) = _COUNT.unpack_from(body, at)
    at += _COUNT.size
    if n > MAX_KEPT_RANGES or len(body) != at + n * KEPT_RANGE.size:
        return None
    ranges = tuple(KeptRange(*KEPT_RANGE.unpack_from(body, at + i * KEPT_RANGE.size)) for i in range(n))
    return ResumeRecord(block_size, size, mtime_ns, body[_HEAD.size : _HEAD.size + name_len], ranges)


def runs(blocks: dict[int, bytes], size: int, block_size: int) -> tuple[KeptRange, ...]:
    """The written blocks (offset -> block digest) as ranges of consecutive blocks with
    their range digests, in offset order; at most MAX_KEPT_RANGES (the first ones)."""
    out: list[KeptRange] = []
    run: list[tuple[int, int, bytes]] = []
    for offset in sorted(blocks):
        if run and offset != run[-1][0] + block_size:
            out.append(_range(run))
            if len(out) == MAX_KEPT_RANGES:
                return tuple(out)
            run = []
        run.append((offset, min(block_size, size - offset), blocks[offset]))
    if run and len(out) < MAX_KEPT_RANGES:
        out.append(_range(run))
    return tuple(out)


def _range(run: list[tuple[int, int, bytes]]) -> KeptRange:
    return KeptRange(run[0][0], sum(length for _, length, _ in run), range_digest(run))


def due(written: int, since: int) -> bool:
    """Whether a record should be written now: `since` blocks were written since the last
    one, `written` in all."""
    return since >= max(RECORD_MIN_BLOCKS, written // RECORD_SHARE)
