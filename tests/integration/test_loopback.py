"""End-to-end transfers over real loopback TCP with a locally spawned receiver."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import assert_same_tree, file_digest, local, no_temp_files, random_file

B = 256 * 1024  # smallest block size, to cross block edges cheaply


@pytest.mark.parametrize("size", [0, 1, B - 1, B, B + 1, 3 * B + 7])
def test_file_sizes_around_block_edges(tmp_path: Path, size: int) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    out = tmp_path / "out"
    out.mkdir()
    r = local("--blocksize", "256K", "-t", "2", src, out)
    assert r.code == 0, r.stderr
    assert (out / "src.bin").read_bytes() == src.read_bytes()
    assert no_temp_files(out)


def test_64mib_random_file(tmp_path: Path) -> None:
    src = random_file(tmp_path / "big.bin", 64 << 20)
    out = tmp_path / "out"
    out.mkdir()
    r = local(src, out)
    assert r.code == 0, r.stderr
    assert file_digest(out / "big.bin") == file_digest(src)


def make_tree(root: Path, files: int = 1000) -> None:
    for i in range(files):
        d = root / f"d{i % 17}" / f"e{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i % 4096))
    (root / "empty_dir" / "nested_empty").mkdir(parents=True)
    (root / "zero").write_bytes(b"")


def test_tree_of_1000_tiny_files(tmp_path: Path) -> None:
    src = tmp_path / "tree"
    make_tree(src)
    r = local("-r", src, tmp_path / "copy")
    assert r.code == 0, r.stderr
    assert_same_tree(src, tmp_path / "copy")


@pytest.mark.parametrize("streams", [1, 2, 8])
def test_stream_counts_and_more_streams_than_files(tmp_path: Path, streams: int) -> None:
    src = tmp_path / "tree"
    make_tree(src, files=5)
    (src / "mid.bin").write_bytes(os.urandom(3 * B + 5))
    r = local("-r", "-t", str(streams), "--blocksize", "256K", src, tmp_path / "copy")
    assert r.code == 0, r.stderr
    assert_same_tree(src, tmp_path / "copy")


WEIRD = [b"with space", b"new\nline", b"tab\there", b"quote'\"s", b"$(touch X)", b"`touch Y`", b";rm -rf",
         b"-leading-dash", b"star*?[x]", b"\xff\xfenot-utf8", b"L" * 255, b"\x1b[31mred"]


def test_names_round_trip_byte_exactly_and_run_nothing(tmp_path: Path) -> None:
    src = tmp_path / "names"
    src.mkdir()
    for i, name in enumerate(WEIRD):
        with open(os.path.join(os.fsencode(src), name), "wb") as f:
            f.write(b"%d" % i)
    r = local("-r", src, tmp_path / "copy", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert sorted(os.listdir(os.fsencode(tmp_path / "copy"))) == sorted(WEIRD)
    assert_same_tree(src, tmp_path / "copy")
    assert not (tmp_path / "X").exists() and not (tmp_path / "Y").exists()


def test_several_sources_into_directory(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"alpha")
    b.write_bytes(b"beta")
    out = tmp_path / "out"
    out.mkdir()
    r = local(a, b, out)
    assert r.code == 0, r.stderr
    assert (out / "a.txt").read_bytes() == b"alpha" and (out / "b.txt").read_bytes() == b"beta"


def test_file_to_new_name_and_dir_to_new_name(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"data")
    r = local(f, tmp_path / "renamed.txt")
    assert r.code == 0, r.stderr
    assert (tmp_path / "renamed.txt").read_bytes() == b"data"
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x").write_bytes(b"x")
    r = local("-r", d, tmp_path / "newdir")
    assert r.code == 0, r.stderr
    assert (tmp_path / "newdir" / "sub" / "x").read_bytes() == b"x"
    # into an existing directory, the copy goes below it under its own name
    r = local("-r", d, tmp_path / "newdir")
    assert r.code == 0, r.stderr
    assert (tmp_path / "newdir" / "d" / "sub" / "x").read_bytes() == b"x"


def test_existing_file_replaced_only_by_complete_copy(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(B * 2 + 3))
    dst = tmp_path / "dst.bin"
    dst.write_bytes(b"old content")
    r = local("--blocksize", "256K", src, dst)
    assert r.code == 0, r.stderr
    assert dst.read_bytes() == src.read_bytes()


def test_summary_line_and_json_report(tmp_path: Path) -> None:
    import json

    src = tmp_path / "s.bin"
    src.write_bytes(os.urandom(1000))
    out = tmp_path / "out"
    out.mkdir()
    from tests.helpers import free_port_base, run_escp

    r = run_escp("--local", "--escp_port", str(free_port_base()), "--json", tmp_path / "r.json", src, out)
    assert r.code == 0, r.stderr
    assert "Complete: " in r.stderr and "1 files" in r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["ok"] is True and rep["files"] == 1 and rep["bytes"] == 1000 and rep["files_failed"] == 0
