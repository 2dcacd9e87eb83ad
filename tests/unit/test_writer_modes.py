"""Unit tests of the receiver's mode rules (scp vs --preserve) and of sparse writing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from escp.engine.writer import DestinationTree, nonzero_runs, plan_destination, pwrite_sparse


def tree(tmp_path: Path, umask: int, preserve: bool, root: bool) -> DestinationTree:
    t = DestinationTree(plan_destination(bytes(tmp_path), 1, False), 1, umask, preserve)
    t.is_root = root  # the rule as a non-root receiver would apply it
    return t


@pytest.mark.parametrize("root", [False, True])
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_without_preserve_modes_follow_scp(tmp_path: Path, umask: int, root: bool) -> None:
    t = tree(tmp_path, umask, False, root)
    for mode in (0o644, 0o755, 0o777, 0o4755, 0o2775, 0o1777, 0o600):
        for is_dir in (False, True):
            assert t.final_mode(mode, is_dir) == mode & 0o777 & ~umask
    t.close()


def test_preserve_as_non_root_strips_setuid_and_setgid(tmp_path: Path) -> None:
    t = tree(tmp_path, 0o077, True, False)
    assert t.final_mode(0o4755, False) == 0o755
    assert t.final_mode(0o2775, True) == 0o775
    assert t.final_mode(0o1777, True) == 0o1777  # sticky bit is harmless and kept
    assert t.final_mode(0o600, False) == 0o600  # umask does not apply with -p
    t.close()


def test_preserve_as_root_keeps_every_bit(tmp_path: Path) -> None:
    t = tree(tmp_path, 0o022, True, True)
    assert t.final_mode(0o6755, False) == 0o6755
    t.close()


def test_nonzero_runs_page_aligned_to_the_file() -> None:
    page = 4096
    data = bytearray(8 * page)
    data[5] = 1  # page 0
    data[3 * page + 10] = 1  # page 3
    data[4 * page] = 1  # page 4 (joins page 3)
    data[8 * page - 1] = 1  # last page
    assert nonzero_runs(bytes(data), 0) == [(0, page), (3 * page, 5 * page), (7 * page, 8 * page)]
    assert nonzero_runs(bytes(len(data)), 0) == []
    # a block starting mid-page: the first piece runs to the next file page boundary
    assert nonzero_runs(b"\0" * 100 + b"x", page - 100) == [(100, 101)]
    assert nonzero_runs(b"x" + b"\0" * 200, page - 100) == [(0, 100)]


def test_pwrite_sparse_leaves_holes(tmp_path: Path) -> None:
    block = bytearray(1 << 20)
    block[123456] = 7
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        pwrite_sparse(fd, memoryview(block), 1 << 20)
        os.ftruncate(fd, 3 << 20)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(1 << 20) + bytes(block) + bytes(1 << 20)
    assert st.st_blocks * 512 <= 8192
