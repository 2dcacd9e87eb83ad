"""--skip-existing in the cores: the receiver decides what it already has, the sender's
data for a file waits for the receiver's FILE_WANT (§9.14). In memory (CorePair)."""

from __future__ import annotations

import os

import pytest

from escp.engine.checksum import block_digest, content_digest
from escp.errors import ProtocolError
from escp.protocol import messages as m
from escp.protocol.data import encode_data
from escp.protocol.flags import SessionFlags
from escp.protocol.receiver_core import Existing
from escp.protocol.states import SessionState
from escp.protocol.wire import NO_DIGEST, STATUS_OK, STATUS_SKIPPED

from .pair import BS, CorePair

QUICK = SessionFlags(skip_quick=True, dest_dir=True)
DIGEST = SessionFlags(skip_digest=True, dest_dir=True)
BIG = os.urandom(2 * BS + 5)
MTIME = 1_700_000_000_123_456_789


def gated_pair(flags: SessionFlags, have: dict[bytes, Existing]) -> CorePair:
    pair = CorePair(streams=1, flags=flags, top_level_count=3)
    pair.existing.update(have)
    return pair


def test_quick_skips_same_size_and_mtime_and_wants_the_rest() -> None:
    pair = gated_pair(QUICK, {b"same": Existing(len(BIG), MTIME), b"older": Existing(len(BIG), MTIME - 1),
                              b"shorter": Existing(5, MTIME)})
    finos = [pair.announce(name, BIG, mtime_ns=MTIME) for name in (b"same", b"older", b"shorter", b"new")]
    pair.flush()
    pair.deliver()
    assert pair.released == finos[1:]  # FILE_WANT for every file the destination lacks
    assert pair.verdicts[finos[0]].ok and pair.verdicts[finos[0]].skipped
    assert pair.rx.files_skipped == 1 and pair.rx.bytes_skipped == len(BIG)
    for fino in finos[1:]:
        pair.send_file(fino, [1])
    pair.flush()
    pair.end_session()
    pair.end_stream(1)
    pair.deliver()
    assert set(pair.published) == {b"older", b"shorter", b"new"}  # nothing written for the skipped file
    assert all(v.ok and not v.skipped for f, v in pair.verdicts.items() if f != finos[0])
    assert pair.finished is not None and pair.tx.state is pair.rx.state is SessionState.DONE


def test_digest_mode_compares_content_digests_and_only_of_the_same_size() -> None:
    digest = content_digest(len(BIG), BS, {})
    pair = gated_pair(DIGEST, {b"same": Existing(len(BIG), 1, digest), b"other": Existing(len(BIG), MTIME, bytes(16))})
    same, other = pair.announce(b"same", BIG, mtime_ns=MTIME), pair.announce(b"other", BIG, mtime_ns=MTIME)
    pair.flush()
    assert pair.rx.files[same].gated  # no decision before FILE_SUM
    f = pair.rx.files[same]
    assert not pair.rx.digest_needed(f, len(BIG) + 1) and pair.rx.digest_needed(f, len(BIG))
    for fino in (same, other):
        pair.tx.content_sum(m.FileSum(fino, digest))
    pair.flush()
    pair.deliver()
    assert pair.verdicts[same].skipped and pair.released == [other]  # another mtime does not matter here


def test_data_or_file_end_before_file_want_is_refused() -> None:
    """In the digest mode the receiver decides only once FILE_SUM is in: until then (and
    until its FILE_WANT) no data and no FILE_END may come for the file."""
    for forge in (lambda fino: encode_data(fino, 0, BS, BIG[:BS], False),
                  lambda fino: m.encode_file_end(m.FileEnd(fino, STATUS_OK, 3, NO_DIGEST))):
        pair = gated_pair(DIGEST, {})
        fino = pair.announce(b"f", BIG)
        pair.flush()
        with pytest.raises(ProtocolError, match="before the receiver wanted"):
            pair.receive_meta(forge(fino))


def test_the_sender_core_holds_its_own_data_until_wanted() -> None:
    pair = gated_pair(QUICK, {})
    fino = pair.announce(b"f", b"small")
    with pytest.raises(ProtocolError, match="before the receiver wanted"):
        pair.inline(fino)


def test_forged_answers_are_refused_by_the_sender() -> None:
    pair = gated_pair(QUICK, {})
    fino = pair.announce(b"f", BIG)
    pair.flush()
    pair.deliver()
    assert pair.released == [fino]
    with pytest.raises(ProtocolError, match="does not wait"):
        pair.tx.receive(m.FileWant(fino))  # wanted twice
    with pytest.raises(ProtocolError, match="skipped after it was wanted"):
        pair.tx.receive(m.FileResult(fino, STATUS_SKIPPED, 0, NO_DIGEST))
    plain = CorePair()
    fino = plain.announce(b"f", BIG)
    with pytest.raises(ProtocolError, match="does not wait"):
        plain.tx.receive(m.FileWant(fino))  # not a gated session


def test_file_sum_only_in_the_digest_mode_and_once() -> None:
    pair = gated_pair(QUICK, {})
    fino = pair.announce(b"f", BIG)
    pair.flush()
    with pytest.raises(ProtocolError, match="does not await"):
        pair.receive_meta(m.encode_file_sum(m.FileSum(fino, bytes(16))))
    pair = gated_pair(DIGEST, {})
    fino = pair.announce(b"f", BIG)
    pair.flush()
    pair.receive_meta(m.encode_file_sum(m.FileSum(fino, bytes(16))))
    with pytest.raises(ProtocolError, match="does not await"):
        pair.receive_meta(m.encode_file_sum(m.FileSum(fino, bytes(16))))


def test_a_whole_tree_already_there_sends_no_data_and_ends() -> None:
    files = {b"a": BIG, b"b": b"tiny", b"c": b""}
    pair = gated_pair(QUICK, {name: Existing(len(c), MTIME) for name, c in files.items()})
    for name, content in files.items():
        pair.announce(name, content, mtime_ns=MTIME)
    pair.flush()
    pair.deliver()
    assert pair.tx.may_end_session(walk_done=True)  # skipped files need no FILE_END
    pair.end_session()
    pair.end_stream(1)
    pair.deliver()
    assert pair.finished is not None and not pair.published and pair.tx.bytes_sent == 0
    assert all(v.skipped for v in pair.verdicts.values()) and len(pair.verdicts) == 3


def test_both_skip_modes_at_once_are_refused() -> None:
    from escp.protocol.bootstrap import decode_init, encode_init

    from .pair import session_init
    init = session_init(flags=SessionFlags(skip_quick=True, skip_digest=True))
    with pytest.raises(ProtocolError, match="both skip modes"):
        decode_init(encode_init(init)[12:])


# --- --resume: kept ranges (§9.15) ---------------------------------------------------------
RESUME = SessionFlags(resume=True, dest_dir=True)


def resumed_pair(kept: dict[int, bytes]) -> tuple[CorePair, int]:
    pair = CorePair(streams=1, flags=RESUME, top_level_count=1)
    pair.kept[b"f"] = kept
    fino = pair.announce(b"f", BIG)
    pair.flush()
    pair.deliver()
    return pair, fino


def test_kept_ranges_are_not_sent_and_the_file_is_whole() -> None:
    pair, fino = resumed_pair({0: BIG[:BS], BS: BIG[BS : 2 * BS]})
    assert [r.offset for r in pair.offers[fino]] == [0, BS]
    for r in pair.offers[fino]:  # the sender's source still has them: kept, their digests count
        pair.digests[fino].add(r.offset, r.length, block_digest(BIG[r.offset : r.offset + r.length], r.offset))
    pair.send_block(1, fino, 2 * BS)
    pair.end_file(fino, blocks=1)
    pair.flush()
    pair.end_session()
    pair.end_stream(1)
    pair.deliver()
    assert pair.published == {b"f": BIG} and pair.verdicts[fino].ok
    assert pair.tx.bytes_sent == len(BIG) - 2 * BS and pair.verdicts[fino].file.entry.size == len(BIG)


def test_a_range_sent_again_must_come_whole() -> None:
    pair, fino = resumed_pair({0: BIG[:BS], BS: b"x" * BS})  # the second range no longer matches
    pair.digests[fino].add(0, BS, block_digest(BIG[:BS], 0))
    pair.send_block(1, fino, BS)
    pair.send_block(1, fino, 2 * BS)
    pair.end_file(fino, blocks=2)
    pair.flush()
    pair.end_session()
    pair.end_stream(1)
    pair.deliver()
    assert pair.published == {b"f": BIG}  # the stale block was replaced, the good one kept
    bad, fino = resumed_pair({0: BIG[:BS], BS: BIG[BS : 2 * BS]})
    bad.send_block(1, fino, 0)  # claims range 0 was not kept ... and sends nothing of range 1
    bad.end_file(fino, blocks=1)
    bad.flush()
    bad.end_session()
    bad.end_stream(1)
    bad.deliver()
    assert not bad.published and not bad.verdicts[fino].ok  # block 2 neither kept nor sent: no splice


def test_offers_are_checked_by_the_sender() -> None:
    pair = CorePair(streams=1, flags=RESUME)
    fino = pair.announce(b"f", BIG)
    pair.flush()
    pair.to_sender.clear()
    for bad in (m.KeptRange(1, BS, bytes(16)), m.KeptRange(0, len(BIG) + BS, bytes(16)),
                m.KeptRange(0, BS + 1, bytes(16))):
        with pytest.raises(ProtocolError, match="kept range"):
            pair.tx.receive(m.FileWant(fino, (bad,)))
    with pytest.raises(ProtocolError, match="kept range"):
        pair.tx.receive(m.FileWant(fino, (m.KeptRange(BS, BS, bytes(16)), m.KeptRange(0, BS, bytes(16)))))
    quick = gated_pair(QUICK, {})
    fino = quick.announce(b"f", BIG)
    quick.tx.queue.clear()
    with pytest.raises(ProtocolError, match="without --resume"):
        quick.tx.receive(m.FileWant(fino, (m.KeptRange(0, BS, bytes(16)),)))
    with pytest.raises(ProtocolError, match="wrong size"):
        m.decode_message(m.encode_file_want(m.FileWant(fino)) + b"\0" * 7)
