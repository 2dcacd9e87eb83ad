"""Session rules, tested with a SenderCore against a ReceiverCore in memory (no sockets)."""

from __future__ import annotations

import os

import pytest

from escp.errors import ConnectionFailure, IntegrityError, ProtocolError
from escp.protocol import messages as m
from escp.protocol.data import encode_data
from escp.protocol.flags import SessionFlags
from escp.protocol.states import SessionState
from escp.protocol.wire import KIND_DIR, META_STREAM, STATUS_FAILED, STATUS_OK

from .pair import BS, CorePair

BIG = os.urandom(3 * BS + 1000)  # four blocks, the last one short


def test_normal_session_reports_every_file_and_ends_on_both_sides() -> None:
    pair = CorePair(streams=2, top_level_count=1)
    files = {b"top/big": BIG, b"top/small": b"tiny file\n", b"top/empty": b""}
    pair.transfer(files, directories=(b"top",))
    assert pair.published == files
    assert {f: v.ok for f, v in pair.verdicts.items()} == {0: True, 1: True, 2: True, 3: True}
    assert pair.finished is not None
    assert (pair.finished.summary.files_ok, pair.finished.summary.files_failed) == (4, 0)
    assert pair.finished.summary.bytes_written == len(BIG) + len(b"tiny file\n")
    assert pair.tx.state is pair.rx.state is SessionState.DONE
    assert pair.tx.pending == 0 and not pair.rx.files and not pair.discarded


def test_small_files_travel_inline_on_the_metadata_stream() -> None:
    pair = CorePair(streams=1, top_level_count=3)
    pair.transfer({b"a": b"x", b"b": b"y" * 1000, b"c": b""})
    assert pair.published == {b"a": b"x", b"b": b"y" * 1000, b"c": b""}
    assert pair.tx.streams.frames == [0, 0]  # nothing went over the data stream
    assert pair.finished is not None


def test_data_on_the_metadata_stream_for_an_unannounced_file_fails_at_once() -> None:
    pair = CorePair()
    with pytest.raises(ProtocolError, match="never announced"):
        pair.receive_meta(encode_data(0, 0, 1, b"x", False))


def test_a_data_stream_may_overtake_the_file_list_until_session_end() -> None:
    pair = CorePair(streams=1)
    fino = pair.announce(b"f", BIG)
    block = encode_data(fino, 0, BS, BIG[:BS], False)
    assert pair.receive_data(1, block) is None  # not announced yet: the adapter waits
    pair.flush()
    assert pair.receive_data(1, block) is not None  # the same frame, once the entry is in
    late = CorePair(streams=1)
    late.end_session()
    with pytest.raises(ProtocolError, match="never announced"):
        late.receive_data(1, block)  # after SESSION_END no announcement can follow


def test_failure_at_the_source_fails_that_file_only() -> None:
    pair = CorePair(streams=1, top_level_count=2)
    ok, bad = pair.announce(b"ok", BIG), pair.announce(b"bad", BIG)
    pair.flush()
    pair.send_file(ok, [1])
    pair.send_block(1, bad, 0)
    pair.end_file(bad, status=STATUS_FAILED, blocks=1, message="read error: Input/output error")
    pair.flush()
    pair.end_session()
    pair.end_stream(1)
    pair.deliver()
    assert pair.verdicts[ok].ok
    v = pair.verdicts[bad]
    assert (v.ok, v.cause, v.message) == (False, "I/O", "read error: Input/output error")
    assert bad in pair.discarded and b"bad" not in pair.published
    assert pair.finished is not None and pair.finished.summary.files_failed == 1


def test_digest_mismatch_is_caught_by_the_receiver() -> None:
    pair = CorePair(streams=1)
    fino = pair.announce(b"f", BIG)
    pair.flush()
    pair.send_block(1, fino, 0, data=bytes(BS))  # corrupted in flight (after the frame checks)
    for offset in range(BS, len(BIG), BS):
        pair.send_block(1, fino, offset)
    pair.end_file(fino)
    pair.flush()
    pair.end_session()
    pair.end_stream(1)
    pair.deliver()
    v = pair.verdicts[fino]
    assert (v.ok, v.cause) == (False, "integrity") and "checksum mismatch" in v.message
    assert fino in pair.discarded and not pair.published


def test_digest_mismatch_is_caught_by_the_sender_too() -> None:
    """A receiver that reports success with another digest does not fool the sender."""
    pair = CorePair(streams=1, flags=SessionFlags())
    fino = pair.announce(b"f", b"abc")
    pair.inline(fino)
    pair.end_file(fino)
    pair.tx.take_batch()
    pair.tx.end_session()
    pair.to_sender.append(m.encode_file_result(m.FileResult(fino, STATUS_OK, 0, b"\x01" * 16)))
    pair.deliver()
    v = pair.verdicts[fino]
    assert (v.ok, v.cause, v.message) == (False, "integrity", "receiver's digest differs from the sender's")


def test_without_checksums_digests_are_not_compared() -> None:
    pair = CorePair(streams=1, flags=SessionFlags(no_checksum=True))
    pair.transfer({b"f": BIG})
    assert pair.verdicts[0].ok and pair.published == {b"f": BIG}


def test_unrequested_top_level_name_is_refused() -> None:
    """CVE-2019-6111 class: one source was asked for; a second top-level name is refused
    before anything of its list is registered."""
    pair = CorePair(top_level_count=1)
    pair.announce(b"asked")
    pair.flush()
    pair.announce(b"asked/inside")
    pair.announce(b".bashrc")
    with pytest.raises(ProtocolError, match="unrequested"):
        pair.flush()
    assert pair.rx.next_fino == 1  # the refused list left nothing behind


def test_top_level_rule_is_off_with_a_destination_directory() -> None:
    pair = CorePair(flags=SessionFlags(dest_dir=True), top_level_count=0)
    pair.transfer({b"a": b"1", b"b": b"2"})
    assert pair.finished is not None


def test_eos_count_mismatch_is_an_integrity_error() -> None:
    pair = CorePair(streams=1)
    fino = pair.announce(b"f", BIG)
    pair.flush()
    pair.send_block(1, fino, 0)
    with pytest.raises(IntegrityError, match="data stream 1: end-of-stream counts differ"):
        pair.end_stream(1, m.Eos(2, 2 * BS))


def test_missing_blocks_fail_the_file_once_every_stream_ended() -> None:
    pair = CorePair(streams=2)
    fino = pair.announce(b"f", BIG)
    pair.flush()
    for offset in range(0, 3 * BS, BS):  # the last block never comes
        pair.send_block(1, fino, offset)
    pair.end_file(fino)
    pair.flush()
    pair.end_session()
    pair.end_stream(1)
    assert pair.rx.state is SessionState.ENDING and not pair.discarded  # stream 2 may still bring it
    pair.end_stream(2)
    pair.deliver()
    v = pair.verdicts[fino]
    assert (v.ok, v.cause, v.message) == (False, "integrity", "1 of 4 blocks never arrived")
    assert fino in pair.discarded
    assert pair.finished is not None and pair.tx.state is SessionState.DONE


def test_session_end_without_file_end_fails_the_file() -> None:
    pair = CorePair(streams=1)
    fino = pair.announce(b"f", BIG)
    pair.flush()
    pair.receive_meta(m.encode_session_end(m.SessionEnd(1)))  # a hostile sender skips FILE_END
    pair.end_stream(1)
    result, done = (m.decode_message(plain) for plain in pair.to_sender)
    assert isinstance(result, m.FileResult) and result.fino == fino and result.status == STATUS_FAILED
    assert result.message == "the sender ended the session without ending this file"
    assert isinstance(done, m.SessionDone) and pair.rx.state is SessionState.DONE


@pytest.mark.parametrize("frame", ["duplicate", "beyond-size", "wrong-length", "compressed-without-flag"])
def test_bad_blocks_are_refused_before_anything_is_written(frame: str) -> None:
    pair = CorePair(streams=1)
    fino = pair.announce(b"f", BIG)
    pair.flush()
    pair.send_block(1, fino, 0)
    plain = {
        "duplicate": encode_data(fino, 0, BS, BIG[:BS], False),
        "beyond-size": encode_data(fino, 4 * BS, BS, bytes(BS), False),
        "wrong-length": encode_data(fino, BS, BS - 1, bytes(BS - 1), False),
        "compressed-without-flag": encode_data(fino, BS, BS, b"\x28\xb5\x2f\xfd", True),
    }[frame]
    with pytest.raises(ProtocolError):
        pair.receive_data(1, plain)


def test_truncated_session_is_detected_on_both_sides() -> None:
    pair = CorePair(streams=1)
    fino = pair.announce(b"f", BIG)
    pair.flush()
    pair.send_block(1, fino, 0)
    with pytest.raises(IntegrityError, match="data stream 1 closed without an end-of-stream frame"):
        pair.rx.stream_closed(1)
    with pytest.raises(IntegrityError, match="metadata stream closed without the session end"):
        pair.rx.stream_closed(META_STREAM)
    with pytest.raises(ConnectionFailure, match="before the session ended"):
        pair.tx.stream_closed()
    done = CorePair(streams=1)
    done.transfer({b"f": BIG})
    done.rx.stream_closed(META_STREAM)  # after SESSION_DONE, EOF is the normal end
    done.tx.stream_closed()


def test_session_done_before_every_result_is_refused() -> None:
    pair = CorePair(streams=1)
    pair.announce(b"d", kind=KIND_DIR)
    pair.tx.take_batch()
    pair.tx.end_session()
    pair.to_sender.append(m.encode_session_done(m.SessionDone(0, 0, 0, b"")))
    with pytest.raises(ProtocolError, match="before every file was reported"):
        pair.deliver()


def test_abort_from_either_side_ends_the_other() -> None:
    pair = CorePair()
    with pytest.raises(ConnectionFailure, match="sender aborted: disk on fire"):
        pair.rx.receive(m.Abort(3, "disk on fire"))
    assert pair.rx.state is SessionState.ABORTED
    with pytest.raises(ConnectionFailure, match=r"receiver aborted the session \(I/O\): full"):
        pair.tx.receive(m.Abort(3, "full"))
    assert pair.tx.state is SessionState.ABORTED


def test_receiver_refuses_frames_only_it_may_send() -> None:
    pair = CorePair()
    for msg in (m.FileResult(0, STATUS_OK, 0, bytes(16)), m.SessionDone(0, 0, 0, b""), m.TraceChunk(b"{}"),
                m.Accept(0), m.Eos(0, 0)):
        with pytest.raises(ProtocolError, match="unexpected .* on the metadata stream"):
            pair.rx.receive(msg)
    with pytest.raises(ProtocolError, match="unexpected .* from the receiver"):
        pair.tx.receive(m.FileEnd(0, STATUS_OK, 0, bytes(16)))


def test_receiver_trace_is_collected_and_bounded() -> None:
    pair = CorePair(streams=1)
    pair.tx.end_session()
    pair.tx.receive(m.TraceChunk(b'{"a": '))
    pair.tx.receive(m.TraceChunk(b"1}"))
    done = pair.tx.receive(m.SessionDone(0, 0, 0, b""))
    assert done is not None and getattr(done, "receiver_trace", None) == b'{"a": 1}'


def test_a_failed_early_file_gets_one_result() -> None:
    """The receiver fails a file at its first block (e.g. ENOSPC): the result goes out at
    once, later blocks are checked and counted but not written, no second result."""
    pair = CorePair(streams=1)
    fino = pair.announce(b"f", BIG)
    pair.flush()
    f = pair.rx.files[fino]
    result = pair.rx.fail(f, IntegrityError("write failed: no space left on device"))
    assert result is not None and pair.rx.fail(f, IntegrityError("again")) is None
    pair.to_sender.append(m.encode_file_result(result.result))
    pair.send_file(fino, [1])
    pair.flush()
    pair.end_session()
    pair.end_stream(1)
    pair.deliver()
    assert not pair.verdicts[fino].ok and fino in pair.discarded
    assert pair.finished is not None and pair.finished.summary.files_failed == 1
