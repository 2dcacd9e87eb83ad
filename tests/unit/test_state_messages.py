"""The sans-IO state: legal transitions, receiver and sender bookkeeping, message codecs.
(A sender core against a receiver core, in memory: tests/protocol/.)"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from escp.errors import ProtocolError
from escp.protocol import messages as m
from escp.protocol.bootstrap import SessionInit
from escp.protocol.receiver_core import CompleteFile, ReceiverCore, SendResult
from escp.protocol.sender_core import FileVerdict, SenderCore
from escp.protocol.states import SESSION_TRANSITIONS, Event, SessionState, transition
from escp.protocol.wire import KIND_DIR, KIND_FILE, STATUS_FAILED, STATUS_OK

BS = 256 * 1024


def session_init(streams: int = 1) -> SessionInit:
    return SessionInit(session_id=1, key=bytes(16), flags=0, block_size=BS, streams=streams, port_start=1,
                       port_range=1, dest_path=b"/d", top_level_count=1000)

entry_st = st.builds(
    m.FileEntry,
    fino=st.integers(0, 2**32 - 1),
    name=st.binary(min_size=1, max_size=300),
    kind=st.sampled_from([KIND_FILE, KIND_DIR]),
    mode=st.integers(0, 0o7777),
    size=st.integers(0, 2**40),
    uid=st.integers(0, 2**32 - 1),
    gid=st.integers(0, 2**32 - 1),
    atime_ns=st.integers(-(2**62), 2**62),
    mtime_ns=st.integers(-(2**62), 2**62),
).map(lambda e: e if e.kind == KIND_FILE else m.FileEntry(e.fino, e.name, KIND_DIR, e.mode, 0, e.uid, e.gid,
                                                           e.atime_ns, e.mtime_ns))


@given(st.lists(entry_st, min_size=0, max_size=40))
def test_file_list_round_trip(entries: list[m.FileEntry]) -> None:
    assert m.decode_message(m.encode_file_list(entries)) == entries


@given(st.sampled_from(["end", "result", "eos", "session_end", "abort", "keepalive", "done", "accept"]),
       st.integers(0, 2**32 - 1), st.binary(min_size=16, max_size=16), st.text(max_size=100))
def test_fixed_messages_round_trip(kind: str, n: int, digest: bytes, text: str) -> None:
    msg = {
        "end": m.FileEnd(n, STATUS_OK, n, digest, text),
        "result": m.FileResult(n, STATUS_FAILED, 3, digest, text),
        "eos": m.Eos(n, n * 7),
        "session_end": m.SessionEnd(n),
        "abort": m.Abort(2, text),
        "keepalive": m.Keepalive(),
        "done": m.SessionDone(n, 1, n, text.encode()),
        "accept": m.Accept(n & 0xFFFF),
    }[kind]
    enc = {
        "end": m.encode_file_end, "result": m.encode_file_result, "eos": m.encode_eos,
        "session_end": m.encode_session_end, "abort": m.encode_abort, "done": m.encode_session_done,
        "accept": m.encode_accept,
    }
    plain = m.encode_keepalive() if kind == "keepalive" else enc[kind](msg)  # type: ignore[operator]
    assert m.decode_message(plain) == msg


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_decoder_raises_only_protocol_errors(data: bytes) -> None:
    try:
        m.decode_message(data)
    except ProtocolError:
        pass


@given(st.sampled_from([10, 14]), st.binary(max_size=600))
@settings(max_examples=500)
def test_flatbuffer_decoders_reject_garbage_cleanly(ftype: int, body: bytes) -> None:
    try:
        m.decode_message(bytes([ftype]) + body)
    except ProtocolError:
        pass


def test_session_transitions_table() -> None:
    S = SessionState
    assert transition(SESSION_TRANSITIONS, S.OPEN, Event.FILE_LIST) is S.OPEN
    assert transition(SESSION_TRANSITIONS, S.OPEN, Event.SESSION_END) is S.ENDING
    with pytest.raises(ProtocolError):
        transition(SESSION_TRANSITIONS, S.ENDING, Event.FILE_LIST)
    with pytest.raises(ProtocolError):
        transition(SESSION_TRANSITIONS, S.DONE, Event.FILE_END)


def _file(fino: int, size: int) -> m.FileEntry:
    return m.FileEntry(fino, b"f%d" % fino, KIND_FILE, 0o644, size)


def test_receiver_core_rejects_bad_blocks() -> None:
    core = ReceiverCore(session_init())
    f = core.add_entry(_file(0, 3 * BS + 5), (b"f0",))
    with pytest.raises(ProtocolError):
        core.add_entry(_file(2, 1), (b"f2",))  # out of sequence
    with pytest.raises(ProtocolError):
        core.add_entry(_file(1, 1), (b"f0",))  # same name twice
    for off, length in [(1, BS), (BS, BS - 1), (4 * BS, 5), (3 * BS, 6), (-BS, BS)]:
        with pytest.raises((ProtocolError, OverflowError)):
            core.check_block(f, off, length)
    core.check_block(f, 3 * BS, 5)
    with pytest.raises(ProtocolError):
        core.check_block(f, 3 * BS, 5)  # duplicate block (HP-8)
    assert core.lookup(7) is None  # not announced yet: the adapter waits


class ReceiverMachine(RuleBasedStateMachine):
    """Random interleavings of DATA, FILE_END and SESSION_END for a few files."""

    def __init__(self) -> None:
        super().__init__()
        self.core = ReceiverCore(session_init())
        assert self.core.claim_stream(1)
        self.sizes = [0, 1, BS, 2 * BS + 1]
        for i, size in enumerate(self.sizes):
            self.core.add_entry(_file(i, size), (b"f%d" % i,))
        self.pending = {i: list(range(0, size, BS)) for i, size in enumerate(self.sizes)}
        self.ended: set[int] = set()
        self.finished: set[int] = set()

    @rule(data=st.data())
    def send_block(self, data: st.DataObject) -> None:
        live = [i for i, offs in self.pending.items() if offs]
        if not live:
            return
        i = data.draw(st.sampled_from(live))
        off = self.pending[i].pop(0)
        f = self.core.files[i]
        self.core.check_block(f, off, min(BS, self.sizes[i] - off))
        if self.core.block_stored(f, min(BS, self.sizes[i] - off)) == [CompleteFile(f)]:
            self.finish(i)

    @rule(data=st.data())
    def send_end(self, data: st.DataObject) -> None:
        left = [i for i in range(len(self.sizes)) if i not in self.ended]
        if not left:
            return
        i = data.draw(st.sampled_from(left))
        self.ended.add(i)
        f = self.core.files[i]
        if self.core.receive(m.FileEnd(i, STATUS_OK, len(range(0, self.sizes[i], BS)), bytes(16))) == [CompleteFile(f)]:
            self.finish(i)

    def finish(self, i: int) -> None:
        assert i not in self.finished, "a file completed twice"
        assert not self.pending[i] and i in self.ended
        f = self.core.files[i]
        assert isinstance(self.core.published(f, bytes(16)), SendResult)
        assert self.core.published(f, bytes(16)) is None  # one result per file
        assert self.core.retire(f) == []  # the data stream has not ended: no SESSION_DONE yet
        self.finished.add(i)

    @precondition(lambda self: len(self.finished) == len(self.sizes) and self.core.state is SessionState.OPEN)
    @rule()
    def end_session(self) -> None:
        assert self.core.receive(m.SessionEnd(len(self.sizes))) == []
        assert self.core.state is SessionState.ENDING
        actions = self.core.receive_eos(1, 0, 0)
        assert self.core.state is SessionState.DONE and len(actions) == 1

    @invariant()
    def never_done_early(self) -> None:
        if self.core.state is SessionState.DONE:
            assert len(self.finished) == len(self.sizes)


TestReceiverMachine = ReceiverMachine.TestCase


def test_sender_core_refuses_impossible_results() -> None:
    core = SenderCore(session_init())
    core.announce(_file(0, 10), b"/src/f0")
    with pytest.raises(ProtocolError):
        core.receive(m.FileResult(0, STATUS_OK, 0, bytes(16)))  # success before it was sent (HP-15)
    with pytest.raises(ProtocolError):
        core.receive(m.FileResult(9, STATUS_OK, 0, bytes(16)))  # never announced
    core.file_end(m.FileEnd(0, STATUS_OK, 1, b"d" * 16))
    verdict = core.receive(m.FileResult(0, STATUS_OK, 0, b"d" * 16))
    assert isinstance(verdict, FileVerdict) and verdict.ok and verdict.file.entry.fino == 0
    with pytest.raises(ProtocolError):
        core.receive(m.FileResult(0, STATUS_OK, 0, b"d" * 16))  # twice
