"""--skip-existing in every direction: a re-run of a finished copy sends no file data and
reports each file `skipped`; a changed file is sent again; the receiver never follows a
symlink to decide (local over a child, pull, remote to remote direct and -3 over the
fake ssh)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import assert_same_tree, local
from tests.integration.test_directions import MODES, escp, tree  # noqa: F401 - escp is a fixture

B = 256 * 1024


def report(path: Path) -> dict:
    return json.loads(path.read_text())


def statuses(rep: dict) -> dict[str, str]:
    return {os.path.basename(o["name"]): o["status"] for o in rep["outcomes"]}


def test_local_rerun_skips_everything_then_sends_only_what_changed(tmp_path: Path) -> None:
    src = tree(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    j = tmp_path / "r.json"
    assert local("-r", "-p", src, out).code == 0
    r = local("-r", "-p", "--skip-existing", "--json", j, src, out)
    assert r.code == 0, r.stderr
    rep = report(j)
    assert rep["bytes_sent"] == 0 and rep["files_skipped"] == 3 == rep["files"]
    assert rep["bytes_skipped"] == 3 * B + 11 + 5 and rep["bytes"] == 0
    assert set(statuses(rep).values()) == {"skipped"}
    big = src / "sub" / "deeper" / "big.bin"
    big.write_bytes(os.urandom(3 * B + 12))  # another size
    r = local("-r", "-p", "--skip-existing=quick", "--json", j, src, out)
    assert r.code == 0, r.stderr
    rep = report(j)
    assert statuses(rep) == {"big.bin": "copied", "small.txt": "skipped", "zero": "skipped"}
    assert rep["bytes_sent"] == 3 * B + 12
    assert_same_tree(src, out / "src")


def test_quick_goes_by_size_and_mtime_digest_by_content(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "same").write_bytes(os.urandom(2 * B))
    (src / "touched").write_bytes(os.urandom(2 * B))
    (src / "edited").write_bytes(os.urandom(2 * B))
    out = tmp_path / "out"
    out.mkdir()
    j = tmp_path / "r.json"
    assert local("-r", "-p", src, out).code == 0
    out = out / "src"
    os.utime(src / "touched", ns=(1, 10**18))  # same content, another mtime
    st = os.stat(src / "edited")
    with open(src / "edited", "r+b") as f:  # another content, same size and mtime
        f.write(b"X")
    os.utime(src / "edited", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert local("-r", "--skip-existing=quick", "--json", j, src, out.parent).code == 0
    assert statuses(report(j)) == {"same": "skipped", "touched": "copied", "edited": "skipped"}  # as rsync
    assert (out / "edited").read_bytes() != (src / "edited").read_bytes()
    assert local("-r", "--skip-existing=digest", "--json", j, src, out.parent).code == 0
    rep = report(j)
    assert statuses(rep) == {"same": "skipped", "touched": "skipped", "edited": "copied"}
    assert rep["bytes_sent"] == 2 * B
    assert (out / "edited").read_bytes() == (src / "edited").read_bytes()


def test_a_symlink_at_the_destination_is_never_followed(tmp_path: Path) -> None:
    """The receiver looks at the final name with O_NOFOLLOW: a link to a matching file
    outside the destination is not "already there"; the copy replaces the link and the
    outside file is untouched."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(B + 1)
    (src / "f").write_bytes(data)
    outside = tmp_path / "outside"
    outside.write_bytes(data)
    st = os.stat(src / "f")
    os.utime(outside, ns=(st.st_atime_ns, st.st_mtime_ns))
    out = tmp_path / "out"
    out.mkdir()
    (out / "f").symlink_to(outside)
    j = tmp_path / "r.json"
    for mode in ("quick", "digest"):
        r = local("-p", f"--skip-existing={mode}", "--json", j, src / "f", out)
        assert r.code == 0, r.stderr
        assert statuses(report(j)) == {"f": "copied"}
        assert not (out / "f").is_symlink() and (out / "f").read_bytes() == data
        (out / "f").unlink()
        (out / "f").symlink_to(outside)
    assert outside.read_bytes() == data


def test_usage_errors(tmp_path: Path) -> None:
    r = local("--skip-existing=sometimes", tmp_path, tmp_path / "x")
    assert r.code == 2 and "--skip-existing" in r.stderr


def test_pull_rerun_skips(escp: object, tmp_path: Path) -> None:  # noqa: F811
    src = tree(tmp_path / "tree")
    out = tmp_path / "out"
    out.mkdir()
    j = tmp_path / "r.json"
    assert escp("-q", "-r", "-p", f"localhost:{src}", out).code == 0  # type: ignore[operator]
    (src / "sub" / "small.txt").write_bytes(b"SMALL!")
    r = escp("-q", "-r", "-p", "--skip-existing", "--json", j, f"localhost:{src}", out)  # type: ignore[operator]
    assert r.code == 0, r.stderr
    rep = report(j)
    assert statuses(rep) == {"big.bin": "skipped", "small.txt": "copied", "zero": "skipped"}
    assert rep["bytes_sent"] == 6 and rep["files_skipped"] == 2 and rep["bytes_skipped"] == 3 * B + 11
    assert_same_tree(src, out / "tree")


@pytest.mark.parametrize("mode", MODES)
def test_remote_to_remote_rerun_skips(escp: object, tmp_path: Path, mode: str) -> None:  # noqa: F811
    src = tree(tmp_path / "tree")
    out = tmp_path / "out"
    out.mkdir()
    j = tmp_path / "r.json"
    args = [*MODES[mode], "-q", "-r", "-p"]
    assert escp(*args, f"localhost:{src}", f"127.0.0.2:{out}").code == 0  # type: ignore[operator]
    r = escp(*args, "--skip-existing=digest", "--json", j, f"localhost:{src}", f"127.0.0.2:{out}")  # type: ignore[operator]
    assert r.code == 0, r.stderr
    rep = report(j)
    assert rep["files_skipped"] == 3 and rep["bytes_skipped"] == 3 * B + 16 and rep["bytes_sent"] == 0
    if mode == "relay":  # the relay sees every verdict; a direct copy reports the counts
        assert set(statuses(rep).values()) == {"skipped"}
    assert_same_tree(src, out / "tree")


def test_a_bare_skip_existing_never_takes_the_next_word(tmp_path: Path) -> None:
    """`--skip-existing SRC DEST`: SRC stays a source (the mode is only given as =MODE)."""
    (tmp_path / "f").write_bytes(b"data")
    out = tmp_path / "out"
    out.mkdir()
    for _ in range(2):
        r = local("-p", "--skip-existing", tmp_path / "f", out)
        assert r.code == 0, r.stderr
    assert (out / "f").read_bytes() == b"data"
