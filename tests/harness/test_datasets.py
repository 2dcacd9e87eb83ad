"""Datasets are deterministic, carry a manifest, and are reused when unchanged (small sizes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness import datasets

SPECS = {
    "huge-r": {"kind": "huge", "size": "3M", "content": "random"},
    "huge-t": {"kind": "huge", "size": "3M", "content": "text"},
    "tiny": {"kind": "tiny", "files": 120, "max_size": "4K", "files_per_dir": 10},
    "sparse": {"kind": "sparse", "files": 2, "apparent": "64M", "allocated": "2M", "island": "256K"},
    "mixed": {"kind": "mixed", "large_files": 2, "large_size": "2M", "small_files": 60, "depth": 5},
}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_deterministic_and_manifest_matches(tmp_path: Path, name: str) -> None:
    a = datasets.ensure_dataset(tmp_path / "a", name, SPECS[name], log=lambda _: None)
    b = datasets.ensure_dataset(tmp_path / "b", name, SPECS[name], log=lambda _: None)
    assert a.files == b.files
    assert _tree(a.data) == _tree(b.data)
    manifest = json.loads((a.root / datasets.MANIFEST).read_text())
    assert manifest["generator_version"] == datasets.GENERATOR_VERSION
    assert manifest["spec"] == SPECS[name]
    for f in a.files:
        p = a.data / f.path
        assert p.stat().st_size == f.size
        assert datasets.file_digest(p) == f.digest


def test_reuse_and_rebuild(tmp_path: Path) -> None:
    spec = SPECS["tiny"]
    first = datasets.ensure_dataset(tmp_path, "tiny", spec, log=lambda _: None)
    mtime = (first.root / datasets.MANIFEST).stat().st_mtime_ns
    again = datasets.ensure_dataset(tmp_path, "tiny", spec, log=lambda _: pytest.fail("rebuilt"))
    assert again.files == first.files
    assert (first.root / datasets.MANIFEST).stat().st_mtime_ns == mtime
    # a changed spec rebuilds
    logs: list[str] = []
    datasets.ensure_dataset(tmp_path, "tiny", {**spec, "files": 50}, log=logs.append)
    assert logs and len(list((tmp_path / "tiny" / "data").rglob("*.dat"))) == 50
    # a damaged dataset (size changed) rebuilds
    victim = next((tmp_path / "tiny" / "data").rglob("*.dat"))
    victim.write_bytes(b"x" * 5000)
    logs.clear()
    datasets.ensure_dataset(tmp_path, "tiny", {**spec, "files": 50}, log=logs.append)
    assert logs


def test_sparse_is_sparse_and_text_compresses(tmp_path: Path) -> None:
    sp = datasets.ensure_dataset(tmp_path, "sparse", SPECS["sparse"], log=lambda _: None)
    st = os.stat(sp.data / sp.files[0].path)
    assert st.st_blocks * 512 < st.st_size / 4
    zstd = pytest.importorskip("zstandard")
    tx = datasets.ensure_dataset(tmp_path, "huge-t", SPECS["huge-t"], log=lambda _: None)
    data = (tx.data / tx.files[0].path).read_bytes()[: 1 << 20]
    assert len(zstd.ZstdCompressor(level=3).compress(data)) < len(data) / 2
    rnd = datasets.ensure_dataset(tmp_path, "huge-r", SPECS["huge-r"], log=lambda _: None)
    data = (rnd.data / rnd.files[0].path).read_bytes()[: 1 << 20]
    assert len(zstd.ZstdCompressor(level=3).compress(data)) > len(data) * 0.99


def test_parse_size() -> None:
    assert datasets.parse_size("1G") == 1 << 30
    assert datasets.parse_size("256K") == 256 << 10
    assert datasets.parse_size("4MiB") == 4 << 20
    assert datasets.parse_size(123) == 123
