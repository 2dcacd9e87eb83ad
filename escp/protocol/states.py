"""Session and stream states, and the one table of legal transitions (both roles).

Everything that moves a state lives here; the cores (sender_core.py, receiver_core.py)
apply the tables to every frame they send or receive, so an illegal frame is refused
the same way wherever it comes from. docs/protocol.md §10 prints these tables.

Session (each side's view; the same table for the sender and the receiver):
    OPEN --SESSION_END--> ENDING --SESSION_DONE--> DONE, and ABORT from any state -> ABORTED.
A frame "passes" when its side sends or receives it; a pair that is not in the table
is a ProtocolError. Which role may send which frame is the cores' business (SENDS).
Stream (per connection, both sides; EOS only on data streams):
    HANDSHAKE --ACCEPT--> OPEN --DATA--> OPEN --EOS--> CLOSED
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from ..errors import ProtocolError
from . import messages as m
from .roles import DataRole
from .wire import META_STREAM


class SessionState(Enum):
    OPEN = "OPEN"  # files are announced, sent and reported
    ENDING = "ENDING"  # SESSION_END passed: no more entries or FILE_ENDs
    DONE = "DONE"  # SESSION_DONE passed: every file reported, every stream ended
    ABORTED = "ABORTED"  # an ABORT passed


class StreamState(Enum):
    HANDSHAKE = "HANDSHAKE"
    OPEN = "OPEN"
    CLOSED = "CLOSED"  # its EOS passed: nothing more may follow on it


class Event(Enum):
    """The frame types, as events of the tables."""

    ACCEPT = "ACCEPT"
    DATA = "DATA"
    EOS = "EOS"
    FILE_LIST = "FILE_LIST"
    FILE_END = "FILE_END"
    FILE_RESULT = "FILE_RESULT"
    SESSION_END = "SESSION_END"
    SESSION_DONE = "SESSION_DONE"
    KEEPALIVE = "KEEPALIVE"
    TRACE_CHUNK = "TRACE_CHUNK"
    ABORT = "ABORT"
    FILE_WANT = "FILE_WANT"
    FILE_SUM = "FILE_SUM"


S, E = SessionState, Event

SESSION_TRANSITIONS: dict[tuple[SessionState, Event], SessionState] = {
    **{(S.OPEN, e): S.OPEN for e in (E.FILE_LIST, E.DATA, E.FILE_END, E.FILE_RESULT, E.EOS, E.KEEPALIVE,
                                     E.FILE_WANT, E.FILE_SUM)},
    (S.OPEN, E.SESSION_END): S.ENDING,
    # blocks on data streams may still arrive after SESSION_END (they travel on other
    # connections), and so may EOS and results; TRACE_CHUNK comes only right before SESSION_DONE
    **{(S.ENDING, e): S.ENDING for e in (E.DATA, E.FILE_RESULT, E.EOS, E.KEEPALIVE, E.TRACE_CHUNK)},
    (S.ENDING, E.SESSION_DONE): S.DONE,
    (S.DONE, E.KEEPALIVE): S.DONE,  # one that crossed SESSION_DONE is ignored (§9.7)
    **{(s, E.ABORT): S.ABORTED for s in (S.OPEN, S.ENDING, S.DONE)},
}

STREAM_TRANSITIONS: dict[tuple[StreamState, Event], StreamState] = {
    (StreamState.HANDSHAKE, E.ACCEPT): StreamState.OPEN,
    (StreamState.OPEN, E.DATA): StreamState.OPEN,
    (StreamState.OPEN, E.EOS): StreamState.CLOSED,
}

# which role may send which frame (ACCEPT is the listener's, whatever its data role)
SENDS: dict[DataRole, frozenset[Event]] = {
    DataRole.SENDER: frozenset({E.FILE_LIST, E.DATA, E.FILE_END, E.EOS, E.SESSION_END, E.KEEPALIVE, E.ABORT,
                                E.FILE_SUM}),
    DataRole.RECEIVER: frozenset({E.FILE_RESULT, E.TRACE_CHUNK, E.SESSION_DONE, E.KEEPALIVE, E.ABORT,
                                  E.FILE_WANT}),
}

# the event of each decoded (non-DATA) frame
EVENT_OF: dict[type, Event] = {
    list: E.FILE_LIST, m.FileEnd: E.FILE_END, m.FileResult: E.FILE_RESULT, m.Eos: E.EOS, m.Accept: E.ACCEPT,
    m.SessionEnd: E.SESSION_END, m.SessionDone: E.SESSION_DONE, m.Keepalive: E.KEEPALIVE,
    m.TraceChunk: E.TRACE_CHUNK, m.Abort: E.ABORT, m.FileWant: E.FILE_WANT, m.FileSum: E.FILE_SUM,
}

State = TypeVar("State", SessionState, StreamState)


def transition(table: dict[tuple[State, Event], State], state: State, event: Event) -> State:
    try:
        return table[(state, event)]
    except KeyError:
        raise ProtocolError(f"unexpected {event.value} in state {state.value}") from None


def stream_name(index: int) -> str:
    return "metadata stream" if index == META_STREAM else f"data stream {index}"


class StreamBook:
    """One side's streams 0..T: their states, and the DATA frames and raw bytes that passed
    on each data stream (what its EOS must count)."""

    def __init__(self, data_streams: int) -> None:
        self.data_streams = data_streams
        self.states = [StreamState.HANDSHAKE] * (data_streams + 1)
        self.frames = [0] * (data_streams + 1)
        self.nbytes = [0] * (data_streams + 1)
        self._open = data_streams  # data streams without their EOS

    def claim(self, index: int) -> bool:
        """True once per index 0..T (its ACCEPT may go out / came in); False otherwise."""
        if not 0 <= index <= self.data_streams or self.states[index] is not StreamState.HANDSHAKE:
            return False
        self.states[index] = StreamState.OPEN
        return True

    def data(self, index: int, nbytes: int) -> None:
        self.states[index] = transition(STREAM_TRANSITIONS, self.states[index], E.DATA)
        self.frames[index] += 1
        self.nbytes[index] += nbytes

    def end(self, index: int) -> tuple[int, int]:
        """The stream's EOS passes: (DATA frames, raw bytes) it carried."""
        if index == META_STREAM:
            raise ProtocolError("EOS on the metadata stream")
        self.states[index] = transition(STREAM_TRANSITIONS, self.states[index], E.EOS)
        self._open -= 1
        return self.frames[index], self.nbytes[index]

    def state(self, index: int) -> StreamState:
        return self.states[index]

    @property
    def all_ended(self) -> bool:
        """Every data stream's EOS has passed."""
        return self._open == 0
