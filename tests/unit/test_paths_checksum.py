"""The containment function and the offset-binding digest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escp.engine.checksum import FileDigest, block_digest
from escp.errors import ProtocolError
from escp.paths import is_within, split_peer_name

BAD = [b"", b"/etc/x", b"../x", b"a/../../x", b"a/./../x", b"./", b".", b"..", b"//x", b"a\0b", b"a/",
       b"a//b", b"x/" + b"y" * 256]


@pytest.mark.parametrize("name", BAD)
def test_bad_peer_names_refused(name: bytes) -> None:
    with pytest.raises(ProtocolError):
        split_peer_name(name)


@pytest.mark.parametrize("name", [b"a", b"a/b/c", b"we ird $(touch X);'\"\nname", b"\xff\xfe", b"-rf", b"a\\..\\b"])
def test_good_peer_names_kept_literally(name: bytes) -> None:
    assert b"/".join(split_peer_name(name)) == name


@given(st.lists(st.binary(min_size=1, max_size=20).filter(lambda c: b"/" not in c and b"\0" not in c
                                                            and c not in (b".", b"..")), min_size=1, max_size=6))
def test_accepted_names_stay_inside(parts: list[bytes]) -> None:
    name = b"/".join(parts)
    assert is_within(b"/t/dest", b"/t/dest/" + b"/".join(split_peer_name(name)))


def test_sibling_prefix_is_not_inside() -> None:
    assert is_within("/t/dest", "/t/dest/x")
    assert is_within("/t/dest", "/t/dest")
    assert not is_within("/t/dest", "/t/dest2/x")
    assert not is_within("/t/dest", "/t/dest_backup/x")
    assert not is_within("/t/dest", "/t")
    assert not is_within("/t/dest", "/t/dest/../dest2")


def _digest(blocks: list[tuple[int, bytes]], size: int = 3 << 20) -> bytes:
    d = FileDigest(7, size)
    for off, data in blocks:
        d.add(off, len(data), block_digest(data, off))
    return d.digest()


def test_digest_binds_offsets_order_and_count() -> None:
    a, b = b"A" * 1000, b"B" * 1000
    base = _digest([(0, a), (1 << 20, b)])
    assert base == _digest([(1 << 20, b), (0, a)])  # arrival order does not matter
    assert base != _digest([(0, b), (1 << 20, a)])  # swapped contents
    assert base != _digest([(0, a), (1 << 20, a)])  # duplicated block
    assert base != _digest([(0, a)])  # missing block
    assert base != _digest([(0, a), (2 << 20, b)])  # moved block
    assert base != _digest([(0, a), (1 << 20, b)], size=4 << 20)  # other size
    assert len(base) == 16


def test_block_digest_depends_on_offset() -> None:
    assert block_digest(b"x" * 100, 0) != block_digest(b"x" * 100, 1 << 20)
