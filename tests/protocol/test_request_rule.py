"""The pulling receiver's request rule (protocol/request.py), without sockets: what a
remote sender may announce for each kind of request, and how sources name their top."""

from __future__ import annotations

import pytest

from escp.errors import ProtocolError
from escp.protocol.messages import FileEntry
from escp.protocol.request import RequestRule, is_pattern, source_parent, top_name
from escp.protocol.wire import KIND_DIR, KIND_FILE


def f(name: bytes, kind: int = KIND_FILE) -> FileEntry:
    return FileEntry(0, name, kind)


@pytest.mark.parametrize("path, name", [
    (b"/data/run.h5", b"run.h5"), (b"/data/dir/", b"dir"), (b"rel/x", b"x"), (b"../up", b"up"), (b"/", b"root"),
    (b"/a/..", b"root"), (b"~/x", b"x"), (b"", None), (b".", None), (b"..", None), (b"a/..", None), (b"~", None),
    (b"~user/", None), (b"/data/*.h5", b"*.h5"), (b"/d/run*/out.h5", b"out.h5"),
])
def test_top_name_matches_what_a_sender_announces(path: bytes, name: bytes | None) -> None:
    assert top_name(path) == name


def test_patterns_and_parents() -> None:
    assert is_pattern(b"/d/*.h5") and is_pattern(b"a?") and is_pattern(b"[ab]") and not is_pattern(b"/d/x.h5")
    assert source_parent(b"/data/dir/") == b"/data"
    assert source_parent(b"/d/run*/out.h5") is None  # the parent is a pattern: unknown here
    assert source_parent(b"") is None


def test_literal_sources_allow_only_their_names() -> None:
    rule = RequestRule.for_sources([b"/d/a.txt", b"/e/b.txt"], recursive=False)
    rule.check(f(b"a.txt"))
    rule.check(f(b"b.txt"))
    with pytest.raises(ProtocolError, match="outside the requested sources"):
        rule.check(f(b"c.txt"))
    with pytest.raises(ProtocolError, match="without -r"):
        RequestRule.for_sources([b"/d/a.txt"], recursive=False).check(f(b"a.txt", KIND_DIR))
    assert rule.remote_path(b"a.txt") == b"/d/a.txt"


def test_glob_sources_match_like_the_remote_glob() -> None:
    rule = RequestRule.for_sources([b"/data/*.h5"], recursive=False)
    for ok in (b"x.h5", b"run.1.h5"):
        rule.check(f(ok))
    for bad in (b".hidden.h5", b"x.h5.sh", b"passwd"):
        with pytest.raises(ProtocolError):
            rule.check(f(bad))
    assert RequestRule.for_sources([b"/data/.*"], recursive=False).check(f(b".profile")) is None


def test_recursive_trees_need_their_top_announced_as_a_directory() -> None:
    rule = RequestRule.for_sources([b"/data/tree", b"/data/file"], recursive=True)
    rule.check(f(b"tree", KIND_DIR))
    rule.check(f(b"tree/sub", KIND_DIR))
    rule.check(f(b"tree/sub/x"))
    rule.check(f(b"file"))
    with pytest.raises(ProtocolError, match="below something"):
        rule.check(f(b"file/x"))
    with pytest.raises(ProtocolError, match="below something"):
        rule.check(f(b"other/x"))
    assert rule.remote_path(b"tree/sub/x") == b"/data/tree/sub/x"


def test_a_single_file_announced_at_set_up_cannot_become_a_directory() -> None:
    rule = RequestRule.for_sources([b"/data/x"], recursive=True, single_top_file=True)
    with pytest.raises(ProtocolError, match="announced a file"):
        rule.check(f(b"x", KIND_DIR))


def test_a_source_only_the_remote_can_name_allows_one_name() -> None:
    rule = RequestRule.for_sources([b"", b"/d/a"], recursive=True)  # the remote's home, and a literal
    rule.check(f(b"alice", KIND_DIR))
    rule.check(f(b"alice/notes"))
    rule.check(f(b"a"))
    with pytest.raises(ProtocolError):
        rule.check(f(b"bob", KIND_DIR))
    assert rule.remote_path(b"alice/notes") is None


def test_filelist_names_their_parents_and_with_r_their_contents() -> None:
    rule = RequestRule.for_filelist([(b"/src/a", b"x/y/a"), (b"/src/t", b"t")], recursive=True)
    rule.check(f(b"x", KIND_DIR))
    rule.check(f(b"x/y", KIND_DIR))
    rule.check(f(b"x/y/a"))
    rule.check(f(b"t", KIND_DIR))
    rule.check(f(b"t/inner"))
    for bad, kind in ((b"x/other", KIND_FILE), (b"x", KIND_FILE), (b"x/y/a/z", KIND_FILE), (b"u", KIND_FILE)):
        with pytest.raises(ProtocolError):
            rule.check(f(bad, kind))
    assert rule.remote_path(b"t/inner") == b"/src/t/inner"
    no_r = RequestRule.for_filelist([(b"/src/t", b"t")], recursive=False)
    with pytest.raises(ProtocolError, match="without -r"):
        no_r.check(f(b"t", KIND_DIR))
