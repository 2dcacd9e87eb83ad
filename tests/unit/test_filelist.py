"""Unit tests of --filelist parsing and of the SourceItems it produces."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from escp.engine.filelist import ListEntry, is_yaml, iter_filelist, parse_filelist, read_list_file
from escp.engine.sources import SourceItem, SourceProblem
from escp.errors import UsageError
from escp.protocol.wire import KIND_DIR, KIND_FILE


def test_plain_list_keeps_relative_structure_and_bytes() -> None:
    text = b"a/b/c.txt\n./d.txt\n\n# comment\n/abs/path/e.bin\n../up/f\n\xffraw\r\n"
    assert parse_filelist(text) == [
        ListEntry(b"a/b/c.txt", b"a/b/c.txt"),
        ListEntry(b"./d.txt", b"d.txt"),
        ListEntry(b"/abs/path/e.bin", b"e.bin"),
        ListEntry(b"../up/f", b"f"),
        ListEntry(b"\xffraw", b"\xffraw"),
    ]


def test_yaml_list_with_pairs_and_plain_items() -> None:
    text = b"# list\n- a.txt\n- [b.txt, sub/renamed.txt]\n- ['/x/y', z]\n"
    assert is_yaml(text)
    assert parse_filelist(text) == [
        ListEntry(b"a.txt", b"a.txt"),
        ListEntry(b"b.txt", b"sub/renamed.txt"),
        ListEntry(b"/x/y", b"z"),
    ]


def test_plain_list_is_never_parsed_as_yaml() -> None:
    text = b"file one.txt\nkey: value.txt\n[weird].txt\n"
    assert not is_yaml(text)
    assert [e.src for e in parse_filelist(text)] == [b"file one.txt", b"key: value.txt", b"[weird].txt"]


@pytest.mark.parametrize("text, fragment", [
    (b"- [a, ../escape]\n", "destination name refused"),
    (b"- [a, /abs]\n", "destination name refused"),
    (b"- [a, b, c]\n", "expected SRC or [SRC, DST]"),
    (b"- {src: a}\n", "expected SRC or [SRC, DST]"),
    (b"- [a, '']\n", "expected SRC or [SRC, DST]"),
    (b"- [a\n", "not valid YAML"),
    (b"---\nkey: value\n", "must be a sequence"),
    (b"a\x00b\n", "NUL"),
])
def test_malformed_lists_are_usage_errors(text: bytes, fragment: str) -> None:
    with pytest.raises(UsageError) as ei:
        parse_filelist(text)
    assert fragment in ei.value.one_line()


def test_read_from_stdin_and_missing_file() -> None:
    assert read_list_file("-", io.BytesIO(b"x\n")) == b"x\n"
    with pytest.raises(UsageError):
        read_list_file("/nonexistent/list.txt")


def items(entries: list[ListEntry], recursive: bool = False) -> list[SourceItem | SourceProblem]:
    return list(iter_filelist(entries, recursive))


def test_implicit_parents_come_first_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_bytes(b"c")
    (tmp_path / "a" / "d.txt").write_bytes(b"d")
    os.chmod(tmp_path / "a", 0o750)
    out = items(parse_filelist(b"a/b/c.txt\na/d.txt\n"))
    assert [(i.kind, i.name) for i in out if isinstance(i, SourceItem)] == [
        (KIND_DIR, b"a"), (KIND_DIR, b"a/b"), (KIND_FILE, b"a/b/c.txt"), (KIND_FILE, b"a/d.txt")]
    first = out[0]
    assert isinstance(first, SourceItem) and first.st.st_mode & 0o777 == 0o750  # the source dir's metadata


def test_duplicates_and_clashes_are_reported_not_sent(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"f")
    g = tmp_path / "g.txt"
    g.write_bytes(b"g")
    out = items([ListEntry(bytes(f), b"x"), ListEntry(bytes(f), b"x"), ListEntry(bytes(g), b"x"),
                 ListEntry(bytes(g), b"x/y")])
    sent = [i.name for i in out if isinstance(i, SourceItem)]
    problems = [i for i in out if isinstance(i, SourceProblem)]
    assert sent == [b"x"]
    assert [p.warning for p in problems] == [True, False, False]


def test_directory_needs_recursive_and_fifo_is_skipped(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_bytes(b"1")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = items([ListEntry(bytes(d), b"dir"), ListEntry(bytes(fifo), b"fifo")])
    assert all(isinstance(i, SourceProblem) for i in out)
    out = items([ListEntry(bytes(d), b"t/dir")], recursive=True)
    assert [i.name for i in out if isinstance(i, SourceItem)] == [b"t", b"t/dir", b"t/dir/sub", b"t/dir/sub/f"]
