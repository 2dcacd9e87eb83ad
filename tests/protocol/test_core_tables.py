"""Each core against the one transition table: every (state, event) pair it can meet.

A core is driven into a state by legal frames (with what a legal frame in that state
needs: a file without FILE_END, an open data stream...), then fed one event, sent or
received as its role dictates. It must accept exactly the pairs of SESSION_TRANSITIONS
(for frames its peer may send, or that it sends itself) and end in the table's state;
every other pair is a ProtocolError and leaves no trace.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from escp.errors import ConnectionFailure, ProtocolError
from escp.protocol import messages as m
from escp.protocol.data import DataHeader
from escp.protocol.flags import SessionFlags
from escp.protocol.roles import DataRole
from escp.protocol.states import SENDS, SESSION_TRANSITIONS, Event, SessionState
from escp.protocol.wire import KIND_DIR, STATUS_FAILED, STATUS_OK

from .pair import BS, CorePair

S = SessionState
SIZE = 2 * BS  # file A: two blocks
Op = Callable[[CorePair], object]


def receiver_in(state: SessionState) -> CorePair:
    """A receiver that knows file A (no FILE_END, no block yet) and has two data streams."""
    pair = CorePair(streams=2, flags=SessionFlags(dest_dir=True))
    pair.announce(b"A", bytes(SIZE))
    pair.flush()
    if state in (S.ENDING, S.DONE):
        pair.rx.receive(m.SessionEnd(1))
    if state is S.DONE:
        pair.act(pair.rx.receive_eos(1, 0, 0))
        pair.act(pair.rx.receive_eos(2, 0, 0))  # A can never finish: it fails, and the session ends
    if state is S.ABORTED:
        with pytest.raises(ConnectionFailure):
            pair.rx.receive(m.Abort(0, "bye"))
    assert pair.rx.state is state
    return pair


def sender_in(state: SessionState) -> CorePair:
    """A sender that announced A (FILE_END queued) and B (not yet), over two data streams."""
    pair = CorePair(streams=2, flags=SessionFlags(dest_dir=True))
    a = pair.announce(b"A", bytes(SIZE))
    pair.announce(b"B", bytes(SIZE))
    pair.end_file(a, blocks=0, digest=bytes(16), status=STATUS_OK)
    if state is S.DONE:
        for fino in (0, 1):
            pair.tx.receive(m.FileResult(fino, STATUS_FAILED, 0, bytes(16), "no"))
    if state in (S.ENDING, S.DONE):
        pair.tx.end_session()
    if state is S.DONE:
        pair.tx.receive(m.SessionDone(0, 2, 0, b""))
    if state is S.ABORTED:
        with pytest.raises(ConnectionFailure):
            pair.tx.receive(m.Abort(0, "bye"))
    assert pair.tx.state is state
    return pair


def _results_then_done(pair: CorePair) -> object:
    if pair.tx.state is S.ENDING:  # what makes SESSION_DONE legal in ENDING: every result first
        for fino in list(pair.tx.files):
            pair.tx.receive(m.FileResult(fino, STATUS_FAILED, 0, bytes(16), "no"))
    return pair.tx.receive(m.SessionDone(0, 2, 0, b""))


def _gate(pair: CorePair, fino: int, digest_mode: bool) -> None:
    """What makes FILE_SUM / FILE_WANT legal for a file: a gated session's file that still
    waits (the setups are not gated; their file A or B is made to wait here)."""
    for core in (pair.rx, pair.tx):
        core.skip_digest = core.skip_digest or digest_mode
    for files in (pair.rx.files, pair.tx.files):
        f = files.get(fino)
        if f is not None:
            f.gated = True


def _sum_in(p: CorePair) -> object:
    _gate(p, 0, digest_mode=True)
    return p.rx.receive(m.FileSum(0, bytes(16)))


def _want_in(p: CorePair) -> object:
    _gate(p, 1, digest_mode=False)
    return p.tx.receive(m.FileWant(1))


def _sum_out(p: CorePair) -> object:
    _gate(p, 1, digest_mode=True)
    return p.tx.content_sum(m.FileSum(1, bytes(16)))


# what the receiver core is fed: the sender's frames, and the receiver's own frames coming back
RECEIVER_OPS: dict[Event, Op] = {
    Event.FILE_LIST: lambda p: p.rx.check_file_list([(m.FileEntry(p.rx.next_fino, b"d", KIND_DIR), (b"d",))]),
    Event.DATA: lambda p: p.rx.receive_data(1, DataHeader(0, 0, BS), BS),
    Event.EOS: lambda p: p.rx.receive_eos(2, 0, 0),
    Event.FILE_END: lambda p: p.rx.receive(m.FileEnd(0, STATUS_OK, 2, bytes(16))),
    Event.SESSION_END: lambda p: p.rx.receive(m.SessionEnd(p.rx.next_fino)),
    Event.KEEPALIVE: lambda p: p.rx.receive(m.Keepalive()),
    Event.ABORT: lambda p: p.rx.receive(m.Abort(0, "bye")),
    Event.FILE_RESULT: lambda p: p.rx.receive(m.FileResult(0, STATUS_OK, 0, bytes(16))),
    Event.TRACE_CHUNK: lambda p: p.rx.receive(m.TraceChunk(b"{}")),
    Event.SESSION_DONE: lambda p: p.rx.receive(m.SessionDone(0, 0, 0, b"")),
    Event.ACCEPT: lambda p: p.rx.receive(m.Accept(0)),
    Event.FILE_SUM: _sum_in,
    Event.FILE_WANT: lambda p: p.rx.receive(m.FileWant(0)),
}

# what the sender core is fed: what it sends itself, and the receiver's frames
SENDER_OPS: dict[Event, Op] = {
    Event.FILE_LIST: lambda p: p.tx.announce(m.FileEntry(p.tx.entries, b"d", KIND_DIR), b"/src/d"),
    Event.DATA: lambda p: p.tx.data_sent(1, BS),
    Event.EOS: lambda p: p.tx.end_stream(2),
    Event.FILE_END: lambda p: p.tx.file_end(m.FileEnd(1, STATUS_OK, 0, bytes(16))),
    Event.SESSION_END: lambda p: p.tx.end_session(),
    Event.KEEPALIVE: lambda p: p.tx.keepalive(),
    Event.ABORT: lambda p: p.tx.receive(m.Abort(0, "bye")),
    Event.FILE_RESULT: lambda p: p.tx.receive(m.FileResult(0, STATUS_FAILED, 0, bytes(16), "no")),
    Event.TRACE_CHUNK: lambda p: p.tx.receive(m.TraceChunk(b"{}")),
    Event.SESSION_DONE: _results_then_done,
    Event.ACCEPT: lambda p: p.tx.receive(m.Accept(0)),
    Event.FILE_SUM: _sum_out,
    Event.FILE_WANT: _want_in,
}

SETUP = {DataRole.RECEIVER: receiver_in, DataRole.SENDER: sender_in}
OPS = {DataRole.RECEIVER: RECEIVER_OPS, DataRole.SENDER: SENDER_OPS}


def legal(role: DataRole, state: SessionState, event: Event) -> SessionState | None:
    """The table's answer for `role`'s core: frames its peer sends or it sends itself."""
    if event not in SENDS[role] | SENDS[role.peer]:
        return None
    if event in SENDS[role] - SENDS[role.peer] and role is DataRole.RECEIVER:
        return None  # the receiver core's own frames come out as actions, never in
    return SESSION_TRANSITIONS.get((state, event))


def check(role: DataRole, state: SessionState, event: Event) -> None:
    pair = SETUP[role](state)
    core = pair.rx if role is DataRole.RECEIVER else pair.tx
    expected = legal(role, state, event)
    if expected is None:
        with pytest.raises(ProtocolError):
            OPS[role][event](pair)
        assert core.state is state, "a refused frame moved the state"
        return
    if event is Event.ABORT:
        with pytest.raises(ConnectionFailure):
            OPS[role][event](pair)
    else:
        OPS[role][event](pair)
    assert core.state is expected


# docs/protocol.md §10.1, written out: the table the code must have (a change to either is deliberate)
DOCUMENTED = """
OPEN FILE_LIST OPEN | OPEN DATA OPEN | OPEN FILE_END OPEN | OPEN FILE_RESULT OPEN | OPEN EOS OPEN
OPEN KEEPALIVE OPEN | OPEN FILE_WANT OPEN | OPEN FILE_SUM OPEN | OPEN SESSION_END ENDING | OPEN ABORT ABORTED
ENDING DATA ENDING | ENDING FILE_RESULT ENDING | ENDING EOS ENDING | ENDING KEEPALIVE ENDING
ENDING TRACE_CHUNK ENDING | ENDING SESSION_DONE DONE | ENDING ABORT ABORTED
DONE KEEPALIVE DONE | DONE ABORT ABORTED
"""


def test_table_is_the_documented_one() -> None:
    rows = [row.split() for row in DOCUMENTED.replace("\n", "|").split("|") if row.strip()]
    assert SESSION_TRANSITIONS == {(SessionState(a), Event(e)): SessionState(b) for a, e, b in rows}
    assert SENDS[DataRole.SENDER] == {Event[e] for e in
                                      "FILE_LIST DATA FILE_END EOS SESSION_END KEEPALIVE ABORT FILE_SUM".split()}
    assert SENDS[DataRole.RECEIVER] == {Event[e] for e in
                                        "FILE_RESULT TRACE_CHUNK SESSION_DONE KEEPALIVE ABORT FILE_WANT".split()}


CASES = [(r, s, e) for r in DataRole for s in SessionState for e in Event]


@given(st.sampled_from(CASES))
@settings(max_examples=300)
def test_core_follows_the_table(case: tuple[DataRole, SessionState, Event]) -> None:
    check(*case)


@pytest.mark.parametrize("role,state,event", CASES, ids=lambda v: getattr(v, "value", v))
def test_every_pair_of_the_table(role: DataRole, state: SessionState, event: Event) -> None:
    """The same check over the whole grid (104 pairs), so none is left to chance."""
    check(role, state, event)


class SenderMachine(RuleBasedStateMachine):
    """Random interleavings of announcements, FILE_ENDs, results and the session end."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = CorePair(streams=1, flags=SessionFlags(dest_dir=True))
        self.unended: list[int] = []
        self.ended: list[int] = []
        self.reported: set[int] = set()

    @precondition(lambda self: self.pair.tx.state is S.OPEN)
    @rule(size=st.integers(0, 3 * BS))
    def announce(self, size: int) -> None:
        self.unended.append(self.pair.announce(b"f%d" % self.pair.tx.entries, bytes(size)))

    @precondition(lambda self: self.unended)
    @rule(data=st.data())
    def end_file(self, data: st.DataObject) -> None:
        fino = data.draw(st.sampled_from(self.unended))
        self.unended.remove(fino)
        self.pair.end_file(fino, blocks=0, digest=bytes(16))
        self.ended.append(fino)

    @precondition(lambda self: self.ended)
    @rule(data=st.data(), ok=st.booleans())
    def result(self, data: st.DataObject, ok: bool) -> None:
        fino = data.draw(st.sampled_from(self.ended))
        self.ended.remove(fino)
        verdict = self.pair.tx.receive(m.FileResult(fino, STATUS_OK if ok else STATUS_FAILED, 0, bytes(16)))
        assert verdict is not None and getattr(verdict, "ok", None) is ok
        self.reported.add(fino)
        with pytest.raises(ProtocolError):
            self.pair.tx.receive(m.FileResult(fino, STATUS_OK, 0, bytes(16)))  # one result per file

    @rule()
    def try_end(self) -> None:
        self.pair.tx.take_batch()
        may = self.pair.tx.may_end_session(walk_done=True)
        assert may == (self.pair.tx.state is S.OPEN and not self.unended)
        if may:
            assert self.pair.tx.end_session().entries == self.pair.tx.entries

    @rule()
    def session_done(self) -> None:
        early = self.pair.tx.state is not S.ENDING or self.pair.tx.pending > 0
        if early:
            with pytest.raises(ProtocolError, match="before every file"):
                self.pair.tx.receive(m.SessionDone(0, 0, 0, b""))
        else:
            assert self.pair.tx.receive(m.SessionDone(0, 0, 0, b"")) is not None
            assert self.pair.tx.state is S.DONE

    @invariant()
    def pending_counts_unreported(self) -> None:
        assert self.pair.tx.pending == self.pair.tx.entries - len(self.reported)


TestSenderMachine = SenderMachine.TestCase
