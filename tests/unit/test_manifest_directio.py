"""Unit tests of the content digest and manifests, and of O_DIRECT reads with fallback."""

from __future__ import annotations

import os
from pathlib import Path

from escp.engine.checksum import block_digest, content_digest
from escp.engine.directio import FrameBuffer, open_direct, wants_direct
from escp.engine.manifest import ManifestWriter, file_content_digest, read_manifest, verify_tree
from escp.engine.reader import read_block

BS = 256 * 1024


def test_content_digest_counts_missing_blocks_as_zero() -> None:
    data = os.urandom(BS) + bytes(BS) + b"tail"
    size = len(data)
    full = {o: block_digest(data[o : o + BS], o) for o in range(0, size, BS)}
    sparse = {o: d for o, d in full.items() if o != BS}
    assert content_digest(size, BS, full) == content_digest(size, BS, sparse)
    moved = {0: full[2 * BS], 2 * BS: full[0]}
    assert content_digest(size, BS, moved) != content_digest(size, BS, full)
    assert content_digest(size, BS, full) != content_digest(size, BS * 2, full)


def test_file_content_digest_recomputes_the_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * BS + 17)
    p = tmp_path / "f"
    p.write_bytes(data)
    blocks = {o: block_digest(data[o : o + BS], o) for o in range(0, len(data), BS)}
    assert file_content_digest(bytes(p), BS) == (len(data), content_digest(len(data), BS, blocks))


def test_manifest_round_trip_with_odd_names(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    names = [b"plain.txt", b"new\nline", b"sp ace%", b"\xff"]
    m = tmp_path / "m.txt"
    w = ManifestWriter(str(m), BS)
    for i, name in enumerate(names):
        path = os.path.join(bytes(root), name)
        with open(path, "wb") as fh:
            fh.write(b"x" * i)
        size, digest = file_content_digest(path, BS)
        w.add(name, size, digest)
    w.close()
    assert len(m.read_text().splitlines()) == 1 + len(names)
    bs, lines = read_manifest(str(m))
    assert bs == BS and [entry.name for entry in lines] == names
    assert all(ok for ok, _ in verify_tree(str(m), str(root)))
    with open(os.path.join(bytes(root), b"sp ace%"), "ab") as fh:
        fh.write(b"!")
    os.unlink(root / "plain.txt")
    results = list(verify_tree(str(m), str(root)))
    assert [ok for ok, _ in results] == [False, True, False, True]


def test_frame_buffer_data_is_page_aligned() -> None:
    import ctypes

    buf = FrameBuffer(20, BS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf.data))
    assert addr % 4096 == 0 and len(buf.plain) == 20 + BS and len(buf.data) == BS
    buf.plain[20:24] = b"abcd"
    assert buf.data[:4].tobytes() == b"abcd"


def test_read_block_with_o_direct_and_unaligned_tail(tmp_path: Path) -> None:
    data = os.urandom(BS + 4096 * 3 + 123)
    p = tmp_path / "f"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    dfd = open_direct(bytes(p), os.fstat(fd))
    buf = FrameBuffer(20, BS)
    try:
        for off in range(0, len(data), BS):
            n = min(BS, len(data) - off)
            assert read_block(fd, buf.data[:n], off, n, bytes(p), dfd) is True
            assert buf.data[:n].tobytes() == data[off : off + n]
        # an unaligned buffer makes O_DIRECT fail with EINVAL: fallback, same bytes, reported
        if dfd >= 0:
            odd = memoryview(bytearray(BS + 1))[1:]
            assert read_block(fd, odd, 0, BS, bytes(p), dfd) is False
            assert odd.tobytes() == data[:BS]
    finally:
        os.close(fd)
        if dfd >= 0:
            os.close(dfd)


def test_direct_mode_auto_follows_the_page_cache(tmp_path: Path) -> None:
    p = tmp_path / "big"
    p.write_bytes(os.urandom(4 << 20))
    fd = os.open(p, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert wants_direct("always", fd, size) and not wants_direct("never", fd, size)
        assert not wants_direct("auto", fd, 4096)  # small files: always the page cache
        assert not wants_direct("auto", fd, size)  # just written: every probe is a cache hit
        os.fsync(fd)  # clean pages can be dropped; then the probes would have to wait for the disk
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
            dropped = False
        except BlockingIOError:
            dropped = True
        # where the kernel really dropped the pages (ext4, xfs), auto must choose O_DIRECT;
        # a filesystem that keeps them (tmpfs) must keep the page cache
        assert wants_direct("auto", fd, size) == dropped
    finally:
        os.close(fd)
