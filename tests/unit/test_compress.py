"""Unit tests of the compress stage: per-block zstd, raw fallback, adaptive mode, bomb limits."""

from __future__ import annotations

import os

import pytest
import zstandard

from escp.engine.compress import GIVE_UP_AFTER, PROBE_EVERY, BlockCompressor, BlockDecompressor
from escp.errors import ProtocolError

BS = 256 * 1024


def roundtrip(data: bytes) -> bytes | None:
    packed = BlockCompressor(3).compress(memoryview(data))
    if packed is None:
        return None
    out = memoryview(bytearray(BS))
    BlockDecompressor(BS).decompress_into(memoryview(packed), out, len(data))
    return out[: len(data)].tobytes()


def test_compressible_block_round_trips_and_shrinks() -> None:
    data = b"escp block " * (BS // 11)
    packed = BlockCompressor(3).compress(memoryview(data))
    assert packed is not None and len(packed) < len(data) // 10
    assert roundtrip(data) == data


def test_random_block_is_sent_raw() -> None:
    assert BlockCompressor(3).compress(memoryview(os.urandom(BS))) is None


def test_contexts_are_reused_across_blocks() -> None:
    c = BlockCompressor(3, adaptive=False)
    d = BlockDecompressor(BS)
    out = memoryview(bytearray(BS))
    for i in range(5):
        data = (b"%d" % i) * 1000
        packed = c.compress(memoryview(data))
        assert packed is not None
        d.decompress_into(memoryview(packed), out, len(data))
        assert out[: len(data)].tobytes() == data


def test_adaptive_mode_gives_up_then_probes_again() -> None:
    c = BlockCompressor(3, adaptive=True)
    noise = memoryview(os.urandom(64 * 1024))
    text = memoryview(b"a" * 64 * 1024)
    for _ in range(GIVE_UP_AFTER):
        assert c.compress(noise) is None
    # now skipping: even compressible data goes raw until the probe
    skipped = 0
    while c.compress(text) is None:
        skipped += 1
        assert skipped <= PROBE_EVERY
    assert skipped == PROBE_EVERY - 1
    # the probe found compressible data: compression is back on
    assert c.compress(text) is not None


def test_non_adaptive_mode_always_tries() -> None:
    c = BlockCompressor(3, adaptive=False)
    noise = memoryview(os.urandom(16 * 1024))
    for _ in range(GIVE_UP_AFTER + 2):
        assert c.compress(noise) is None
    assert c.compress(memoryview(b"a" * 16 * 1024)) is not None


def test_declared_length_above_block_size_is_refused() -> None:
    d = BlockDecompressor(BS)
    frame = zstandard.ZstdCompressor().compress(b"x" * 100)
    with pytest.raises(ProtocolError):
        d.decompress_into(memoryview(frame), memoryview(bytearray(BS)), BS + 1)


def test_bomb_expanding_beyond_block_is_refused() -> None:
    # frame without a content size that expands to 4x the block size
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(4 * BS))
    d = BlockDecompressor(BS)
    with pytest.raises(ProtocolError):
        d.decompress_into(memoryview(frame), memoryview(bytearray(BS)), BS)


def test_frame_header_declaring_huge_content_size_is_refused() -> None:
    # a hand-made frame: magic, descriptor (8-byte content size, single segment), content size
    # 1 TiB, then one raw last block of 4 bytes. Refused before any decompression.
    frame = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (1 << 40).to_bytes(8, "little") + bytes([0x21, 0, 0]) + b"tiny"
    assert zstandard.frame_content_size(frame) == 1 << 40
    with pytest.raises(ProtocolError):
        BlockDecompressor(BS).decompress_into(memoryview(frame), memoryview(bytearray(BS)), 4)


def test_frame_asking_for_a_huge_window_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters(window_log=30)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = cobj.compress(b"y" * 100) + cobj.flush()
    with pytest.raises(ProtocolError):
        BlockDecompressor(BS).decompress_into(memoryview(frame), memoryview(bytearray(BS)), 100)


def test_short_expansion_and_corrupt_frames_are_refused() -> None:
    d = BlockDecompressor(BS)
    out = memoryview(bytearray(BS))
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"z" * 1000)
    with pytest.raises(ProtocolError):
        d.decompress_into(memoryview(frame), out, 2000)  # expands to less than declared
    with pytest.raises(ProtocolError):
        d.decompress_into(memoryview(b"\x28\xb5\x2f\xfd garbage"), out, 100)
    with pytest.raises(ProtocolError):
        d.decompress_into(memoryview(os.urandom(300)), out, 100)
