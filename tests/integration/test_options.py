"""Transfer options end to end over loopback (real processes, real files): -C, --sparse,
-p, -l, --ioengine, --direct, --nodirect, --nochecksum. Every test compares source and destination
exactly for what the option promises."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from tests.helpers import assert_same_tree, local, no_temp_files

B = 256 * 1024


def mixed_tree(root: Path) -> None:
    """Compressible, incompressible and mixed blocks; sizes around block edges."""
    root.mkdir()
    (root / "text.txt").write_bytes(b"the quick brown fox jumps over the lazy dog\n" * 30000)
    (root / "random.bin").write_bytes(os.urandom(3 * B + 1))
    (root / "half.bin").write_bytes(os.urandom(B // 2) + b"a" * (B + B // 2) + os.urandom(7))
    (root / "zeros.bin").write_bytes(bytes(2 * B))
    (root / "empty").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "small.txt").write_bytes(b"hello\n" * 10)


@pytest.mark.parametrize("level", ["1", "3", "19"])
def test_compress_round_trips_exactly(tmp_path: Path, level: str) -> None:
    src = tmp_path / "src"
    mixed_tree(src)
    r = local("-r", "-C", "--compress-level", level, "--blocksize", "256K", "-t", "3", "--json",
              tmp_path / "r.json", src, tmp_path / "dst")
    assert r.code == 0, r.stderr
    assert_same_tree(src, tmp_path / "dst")
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["compress"] is True and rep["files"] == 6


def test_compress_with_dummy_sender_sends_zeros_of_the_stat_size(tmp_path: Path) -> None:
    # the dummy reader reads no disk: the copy is all zeros, of each source's size; compressed
    # blocks must not leave their bytes in the read buffer of the next block
    src = tmp_path / "src"
    mixed_tree(src)
    r = local("-r", "-C", "--ioengine", "dummy::posix", "--blocksize", "256K", "-t", "1", src, tmp_path / "dst")
    assert r.code == 0, r.stderr
    for p in src.rglob("*"):
        q = tmp_path / "dst" / p.relative_to(src)
        if p.is_file():
            assert q.read_bytes() == bytes(p.stat().st_size), p


def make_sparse(path: Path, size: int, pieces: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in pieces:
            f.seek(off)
            f.write(data)


def sparse_sources(root: Path) -> None:
    root.mkdir()
    M = 1 << 20
    make_sparse(root / "middle", 10 * M, [(3 * M, os.urandom(5000)), (7 * M, bytes(M))])  # hole, data, zeros
    make_sparse(root / "tail_hole", 5 * M + 123, [(0, os.urandom(M))])  # ends in a hole: size via ftruncate
    make_sparse(root / "all_hole", 4 * M + 1, [])
    make_sparse(root / "head_hole", 3 * M, [(3 * M - 10, b"0123456789")])
    make_sparse(root / "unaligned", 2 * M + 5, [(M + 4095, b"xy"), (2 * M, b"tail!")])
    (root / "dense").write_bytes(os.urandom(M + 17))


@pytest.mark.parametrize("compress", [False, True])
def test_sparse_keeps_content_size_and_holes(tmp_path: Path, compress: bool) -> None:
    src = tmp_path / "src"
    sparse_sources(src)
    args = ["-r", "--sparse", "-t", "2"] + (["-C"] if compress else [])
    r = local(*args, src, tmp_path / "dst")
    assert r.code == 0, r.stderr
    assert_same_tree(src, tmp_path / "dst")
    for p in src.iterdir():
        s, d = p.stat(), (tmp_path / "dst" / p.name).stat()
        assert d.st_size == s.st_size, p.name
        assert d.st_blocks <= s.st_blocks, f"{p.name}: {d.st_blocks} blocks allocated, source has {s.st_blocks}"
    assert no_temp_files(tmp_path / "dst")


def test_without_sparse_zeros_are_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_sparse(src / "all_hole", 2 << 20, [])
    r = local("-r", src, tmp_path / "dst")
    assert r.code == 0, r.stderr
    assert (tmp_path / "dst" / "all_hole").read_bytes() == bytes(2 << 20)


def meta(p: Path) -> tuple[int, int, int, int, int]:
    st = os.lstat(p)
    return stat.S_IMODE(st.st_mode), st.st_atime_ns, st.st_mtime_ns, st.st_uid, st.st_gid


def preserve_tree(root: Path) -> None:
    (root / "d1" / "d2").mkdir(parents=True)
    (root / "d1" / "d2" / "f").write_bytes(os.urandom(B + 3))
    (root / "suid").write_bytes(b"#!/bin/sh\n")
    (root / "plain").write_bytes(b"p")
    os.chmod(root / "suid", 0o4755)
    os.chmod(root / "plain", 0o640)
    os.chmod(root / "d1" / "d2", 0o2750)
    os.chmod(root / "d1", 0o711)
    for i, p in enumerate([root / "d1" / "d2" / "f", root / "suid", root / "plain", root / "d1" / "d2",
                           root / "d1", root]):
        # atime a day ahead of now: relatime never updates it when the trees are read
        future = time.time_ns() + 86_400 * 10**9
        os.utime(p, ns=(future + 1_000_000_000 * i + 123_456_789, 2_000_000_000 * (i + 1) + 987_654_321))


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path of -p (owners, setuid) needs root")
def test_preserve_as_root_keeps_modes_times_and_owners(tmp_path: Path) -> None:
    src = tmp_path / "src"
    preserve_tree(src)
    for p in [src / "plain", src / "d1"]:
        os.chown(p, 1234, 5678)
    before = {p: meta(p) for p in [src, *src.rglob("*")]}
    r = local("-r", "-p", "-t", "2", "--blocksize", "256K", src, tmp_path / "dst")
    assert r.code == 0, r.stderr
    assert_same_tree(src, tmp_path / "dst")
    for p, m in before.items():
        q = tmp_path / "dst" / p.relative_to(src)
        assert meta(q) == m, p


def test_without_preserve_modes_follow_scp_and_setuid_is_stripped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    preserve_tree(src)
    os.chown(src / "plain", 1234, 5678)
    old = os.umask(0o027)
    try:
        r = local("-r", src, tmp_path / "dst")
    finally:
        os.umask(old)
    assert r.code == 0, r.stderr
    dst = tmp_path / "dst"
    for p in [src, *src.rglob("*")]:
        q = dst / p.relative_to(src)
        assert stat.S_IMODE(q.stat().st_mode) == stat.S_IMODE(p.stat().st_mode) & 0o777 & ~0o027, p
        assert (q.stat().st_uid, q.stat().st_gid) == (os.geteuid(), os.getegid())
    assert not (dst / "suid").stat().st_mode & stat.S_ISUID
    assert (dst / "plain").stat().st_mtime_ns != (src / "plain").stat().st_mtime_ns


def test_limit_paces_and_completes_exactly(tmp_path: Path) -> None:
    src = tmp_path / "paced.bin"
    src.write_bytes(os.urandom(2 * B + 99))
    out = tmp_path / "out"
    out.mkdir()
    small = tmp_path / "small.txt"  # small files travel on the metadata stream, paced too
    small.write_bytes(os.urandom(5000))
    r = local("-l", "4M", "-t", "2", "--blocksize", "256K", src, small, out)
    assert r.code == 0, r.stderr
    assert (out / "paced.bin").read_bytes() == src.read_bytes()
    assert (out / "small.txt").read_bytes() == small.read_bytes()
    r = local("-l", "8Mbit", "-C", "-t", "1", src, out)
    assert r.code == 0, r.stderr
    assert (out / "paced.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("flags", [[], ["--nodirect"], ["--direct"]])
@pytest.mark.parametrize("blocksize", ["256K", "262145"])  # 262145: blocks not a multiple of the page
def test_direct_and_nodirect_with_unaligned_tails(tmp_path: Path, flags: list[str], blocksize: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for size in (1, 511, 4095, 4097, B - 1, B + 4096, 3 * B + 513):
        (src / f"f{size}").write_bytes(os.urandom(size))
    r = local("-r", "-t", "3", "--blocksize", blocksize, *flags, src, tmp_path / "dst")
    assert r.code == 0, r.stderr
    assert_same_tree(src, tmp_path / "dst")


def test_dummy_receiver_writes_nothing_but_verifies(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mixed_tree(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    r = local("-r", "--ioengine", "posix::dummy", "--json", tmp_path / "r.json", src, dst)
    assert r.code == 0, r.stderr
    assert list(dst.iterdir()) == []
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["files"] == 6 and rep["files_failed"] == 0
    assert all(o["ok"] for o in rep["outcomes"]) and len(rep["outcomes"]) == 6


def test_dummy_both_sides_moves_only_network_data(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * B))
    dst = tmp_path / "nowhere"  # never created: the dummy receiver does not touch its disk
    r = local("--ioengine", "dummy", "-C", src, dst)
    assert r.code == 0, r.stderr
    assert not dst.exists()


def test_nochecksum_still_copies_exactly(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mixed_tree(src)
    r = local("-r", "--nochecksum", "-C", src, tmp_path / "dst")
    assert r.code == 0, r.stderr
    assert_same_tree(src, tmp_path / "dst")
