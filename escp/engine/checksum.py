"""Checksum stage: per-block digests bound to their offset, and the per-file digest.

A block digest is XXH3-128 of the block's bytes seeded with its offset, so the same
bytes at another offset give another digest. The file digest is BLAKE2b-128 over the
file number, size and block count and then, in offset order, each block's (offset,
length, digest). Swapped, duplicated, missing or moved blocks all change it.
Both sides compute it independently and both compare: the receiver before it publishes,
the sender on the receiver's FILE_RESULT (docs/protocol.md).
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Callable

import xxhash

from ..protocol.wire import DIGEST_LEN

_BLOCK_REC = struct.Struct(">QI16s")


def block_digest(data: memoryview | bytes | bytearray, offset: int) -> bytes:
    return xxhash.xxh3_128_digest(data, seed=offset)


class FileDigest:
    """Collects block digests of one file in any order; thread-safe."""

    __slots__ = ("fino", "size", "_blocks", "_lock")

    def __init__(self, fino: int, size: int) -> None:
        self.fino = fino
        self.size = size
        self._blocks: dict[int, tuple[int, bytes]] = {}
        self._lock = threading.Lock()

    def add(self, offset: int, length: int, digest: bytes) -> None:
        with self._lock:
            self._blocks[offset] = (length, digest)

    def block_digests(self) -> dict[int, bytes]:
        with self._lock:
            return {offset: d for offset, (_, d) in self._blocks.items()}

    @property
    def blocks(self) -> int:
        return len(self._blocks)

    def digest(self) -> bytes:
        with self._lock:
            items = sorted(self._blocks.items())
        h = hashlib.blake2b(digest_size=DIGEST_LEN, person=b"escp-file-v1")
        h.update(struct.pack(">IQQ", self.fino, self.size, len(items)))
        for offset, (length, d) in items:
            h.update(_BLOCK_REC.pack(offset, length, d))
        return h.digest()


def zero_block_digest(offset: int, length: int) -> bytes:
    """Block digest of `length` zero bytes at offset (a hole or a skipped sparse block)."""
    return block_digest(bytes(length), offset)


def content_digest(size: int, block_size: int, blocks: dict[int, bytes]) -> bytes:
    """The manifest digest of a file's content: BLAKE2b-128 (person "escp-content-1") over
    (size u64, block size u32) and then, for every block in offset order, (offset u64,
    length u32, XXH3-128 of the block seeded with its offset). `blocks` maps offset ->
    block digest; a missing offset is an all-zero block. Unlike the transfer digest it does
    not depend on the file number, so re-reading the file recomputes it (escp --verify-manifest).
    """
    h = hashlib.blake2b(digest_size=DIGEST_LEN, person=b"escp-content-1")
    h.update(struct.pack(">QI", size, block_size))
    for offset in range(0, size, block_size):
        length = min(block_size, size - offset)
        d = blocks.get(offset)
        h.update(_BLOCK_REC.pack(offset, length, d if d is not None else zero_block_digest(offset, length)))
    return h.digest()


def range_digest(blocks: list[tuple[int, int, bytes]]) -> bytes:
    """The digest of a run of whole blocks (--resume, docs/protocol.md §9.15): BLAKE2b-128
    (person "escp-range-1") over each block's (offset u64, length u32, block digest), in
    the order given (offset order)."""
    h = hashlib.blake2b(digest_size=DIGEST_LEN, person=b"escp-range-1")
    for offset, length, d in blocks:
        h.update(_BLOCK_REC.pack(offset, length, d))
    return h.digest()


def fd_block_digests(fd: int, offset: int, length: int, block_size: int,
                     tick: Callable[[], None] | None = None) -> list[tuple[int, int, bytes]] | None:
    """(offset, length, block digest) of each block of fd's range [offset, offset+length),
    read with one reused buffer; None when the file is shorter. `tick` runs after each
    block (a long read is progress)."""
    view = memoryview(bytearray(block_size))
    out: list[tuple[int, int, bytes]] = []
    end = offset + length
    while offset < end:
        want = min(block_size, end - offset)
        got = 0
        while got < want:
            n = os.preadv(fd, [view[got:want]], offset + got)
            if not n:
                return None
            got += n
        out.append((offset, want, block_digest(view[:want], offset)))
        offset += want
        if tick is not None:
            tick()
    return out


def fd_content_digest(fd: int, block_size: int) -> tuple[int, bytes]:
    """(size, content_digest) of an open file, read block by block from offset 0 with one
    reused buffer; the size is what was read (a file that changed while it was read gives
    the digest of what was read)."""
    blocks: dict[int, bytes] = {}
    view = memoryview(bytearray(block_size))
    offset = 0
    while True:
        got = 0
        while got < block_size:  # fill the block across short reads
            n = os.preadv(fd, [view[got:]], offset + got)
            if not n:
                break
            got += n
        if got:
            blocks[offset] = block_digest(view[:got], offset)
            offset += got
        if got < block_size:
            return offset, content_digest(offset, block_size, blocks)
