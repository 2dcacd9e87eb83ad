"""The sender's sans-IO session core: what goes out in which order, and what the receiver
may answer.

Rule 1, as in h11: whatever decides whether the session may go on, and how each file
ends for the user, lives here. The adapter (escp/net/send.py) reports what the walk and
the stream workers did and sends what this core queues; it owns the sockets, threads,
files and clock, this module owns none of them. Not thread-safe: the adapter serialises
calls with one lock.

Out, in order on the metadata stream: `announce` (FILE_LIST entries), `inline` (a small
file's DATA), `file_end`, `keepalive`, then `end_session` (SESSION_END) once
`may_end_session`; `take_batch` hands the queue to the sender thread, `encode_batch` turns
it into frames. On data streams: `data_sent` per block, `end_stream` for EOS.
In: `receive` (FILE_RESULT, FILE_WANT, TRACE_CHUNK, SESSION_DONE, KEEPALIVE, ABORT) and
`stream_closed` (TCP EOF); out of it come FileVerdicts, Released and SessionFinished.

In a gated session (--skip-existing, §9.14) a regular file is announced (with its FILE_SUM
in the digest mode) and then held: its DATA and FILE_END may only follow the receiver's
FILE_WANT (Released); a FILE_RESULT SKIPPED (or a failure) instead ends it unsent. With
--resume the FILE_WANT may offer kept ranges (`check_offer`): the adapter keeps those whose
digest its current source still has, and sends every other block.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConnectionFailure, ProtocolError
from .bootstrap import SessionInit
from .messages import (
    Abort,
    Eos,
    FileEnd,
    FileEntry,
    FileResult,
    FileSum,
    FileWant,
    Keepalive,
    KeptRange,
    Message,
    SessionDone,
    SessionEnd,
    TraceChunk,
    check_offer,
    encode_file_end,
    encode_file_list,
    encode_file_sum,
    encode_keepalive,
)
from .roles import DataRole
from .states import EVENT_OF, SENDS, SESSION_TRANSITIONS, Event, SessionState, StreamBook, transition
from .wire import (
    KIND_DIR,
    MAX_FILES_PER_LIST,
    META_MAX_PLAINTEXT,
    STATUS_OK,
    STATUS_SKIPPED,
    TRACE_TOTAL_MAX,
    cause_name,
)

ENTRY_OVERHEAD = 128  # bytes a FILE_LIST entry takes beyond its name (a bound, for packing lists)
LIST_SLACK = 1024  # room left in a FILE_LIST frame below META_MAX_PLAINTEXT


@dataclass(frozen=True, slots=True)
class InlineBlock:
    """A small file's one block, sent on the metadata stream right after its entry (§7.6)."""

    fino: int
    data: bytes


MetaItem = FileEntry | FileSum | InlineBlock | FileEnd | Keepalive  # the metadata queue, in send order
KEEPALIVE = Keepalive()


@dataclass
class TxFile:
    """Sender's state of one announced file (the data-path part lives in the scheduler)."""

    entry: FileEntry
    path: bytes  # the local source
    end_sent: bool = False  # its FILE_END is queued (from the start for a directory)
    digest: bytes = b""  # the sender's file digest, from FILE_END
    local_error: str | None = None  # why it failed at the source, from FILE_END
    gated: bool = False  # a gated session's file the receiver has not wanted yet (no data may go)


@dataclass(frozen=True, slots=True)
class FileVerdict:
    """How one file ended for the user, from the receiver's FILE_RESULT and the sender's own view."""

    file: TxFile
    ok: bool
    cause: str = ""  # "" when ok
    message: str = ""
    at_source: bool = False  # it failed at the source (the sender's file), else at the destination
    skipped: bool = False  # the receiver already had it: nothing was sent (ok is True)


@dataclass(frozen=True, slots=True)
class Released:
    """FILE_WANT arrived: the gated file's data may go now, but for the ranges of `offer`
    that the source still holds (--resume)."""

    file: TxFile
    offer: tuple[KeptRange, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionFinished:
    """SESSION_DONE arrived after every result: the session is over."""

    summary: SessionDone
    receiver_trace: bytes  # the TRACE_CHUNK payloads, joined (JSON), or b""


class SenderCore:
    role = DataRole.SENDER

    def __init__(self, init: SessionInit) -> None:
        self.checksums = init.session_flags.checksum
        self.gated = init.session_flags.gated
        self.resume = init.session_flags.resume
        self.block_size = init.block_size
        self.skip_digest = init.session_flags.skip_digest
        self.state = SessionState.OPEN
        self.streams = StreamBook(init.streams)
        self.files: dict[int, TxFile] = {}  # announced, without a result yet
        self.entries = 0  # entries announced (files and directories)
        self.bytes_sent = 0  # raw bytes of DATA sent, on any stream
        self.queue: deque[MetaItem] = deque()
        self._unended: set[int] = set()  # regular files announced whose FILE_END is not queued
        self._trace = bytearray()

    def _pass(self, event: Event) -> None:
        self.state = transition(SESSION_TRANSITIONS, self.state, event)

    @property
    def pending(self) -> int:
        """Announced entries still without a FILE_RESULT."""
        return len(self.files)

    # --- the metadata queue ----------------------------------------------------------------
    def announce(self, entry: FileEntry, path: bytes) -> None:
        """Queue an entry; its DATA and FILE_END can only follow it."""
        self._pass(Event.FILE_LIST)
        is_dir = entry.kind == KIND_DIR
        self.files[entry.fino] = TxFile(entry, path, end_sent=is_dir, gated=self.gated and not is_dir)
        if not is_dir:
            self._unended.add(entry.fino)
        self.entries += 1
        self.queue.append(entry)

    def content_sum(self, msg: FileSum) -> None:
        """Queue a gated file's FILE_SUM (digest mode), right behind its entry."""
        f = self.files.get(msg.fino)
        if not self.skip_digest or f is None or not f.gated:
            raise ProtocolError(f"FILE_SUM for file {msg.fino}, which does not take one")
        self._pass(Event.FILE_SUM)
        self.queue.append(msg)

    def inline(self, block: InlineBlock) -> None:
        f = self.files.get(block.fino)
        if f is not None and f.gated:
            raise ProtocolError("data before the receiver wanted the file", path=f.entry.name)
        self._pass(Event.DATA)
        self.bytes_sent += len(block.data)
        self.queue.append(block)

    def file_end(self, end: FileEnd) -> None:
        """Queue a FILE_END: the file's digest, or why it failed at the source."""
        self._pass(Event.FILE_END)
        self._unended.discard(end.fino)
        f = self.files.get(end.fino)  # None when the receiver already failed it
        if f is not None:
            f.end_sent, f.digest = True, end.digest
            f.local_error = end.message if end.status != STATUS_OK else None
        self.queue.append(end)

    def keepalive(self) -> None:
        self._pass(Event.KEEPALIVE)
        self.queue.append(KEEPALIVE)

    def take_batch(self) -> list[MetaItem]:
        batch = list(self.queue)
        self.queue.clear()
        return batch

    def may_end_session(self, walk_done: bool) -> bool:
        """SESSION_END may go now: the walk is over (every source enumerated, every file
        finished), every FILE_END is queued and the queue is empty (sent)."""
        return walk_done and self.state is SessionState.OPEN and not self.queue and not self._unended

    def end_session(self) -> SessionEnd:
        """SESSION_END passes now: marked before it is sent, as SESSION_DONE may follow at once."""
        self._pass(Event.SESSION_END)
        return SessionEnd(self.entries)

    # --- data streams --------------------------------------------------------------------------
    def claim_stream(self, index: int) -> bool:
        """True once per valid stream index (its ACCEPT came in, or goes out)."""
        return self.streams.claim(index)

    def data_sent(self, index: int, nbytes: int) -> None:
        self._pass(Event.DATA)
        self.streams.data(index, nbytes)
        self.bytes_sent += nbytes

    def end_stream(self, index: int) -> Eos:
        """The stream's EOS: the DATA frames and raw bytes it carried."""
        self._pass(Event.EOS)
        return Eos(*self.streams.end(index))

    # --- what the receiver says ----------------------------------------------------------------
    def receive(self, msg: Message) -> FileVerdict | Released | SessionFinished | None:
        event = EVENT_OF.get(type(msg))
        if event not in SENDS[DataRole.RECEIVER]:
            raise ProtocolError(f"unexpected {type(msg).__name__} from the receiver")
        if isinstance(msg, SessionDone) and (self.files or self.state is not SessionState.ENDING):
            raise ProtocolError("receiver ended the session before every file was reported")
        assert event is not None
        self._pass(event)
        if isinstance(msg, FileResult):
            return self._verdict(msg)
        if isinstance(msg, FileWant):
            return self._released(msg)
        if isinstance(msg, TraceChunk):
            if len(self._trace) + len(msg.data) > TRACE_TOTAL_MAX:
                raise ProtocolError("receiver trace exceeds its size limit")
            self._trace += msg.data
        elif isinstance(msg, SessionDone):
            return SessionFinished(msg, bytes(self._trace))
        elif isinstance(msg, Abort):
            raise ConnectionFailure(f"receiver aborted the session ({cause_name(msg.cause)}): {msg.message}")
        return None

    def _released(self, w: FileWant) -> Released:
        f = self.files.get(w.fino)
        if f is None or not f.gated:
            raise ProtocolError(f"FILE_WANT for file {w.fino}, which does not wait for one")
        if w.offer and not self.resume:
            raise ProtocolError(f"FILE_WANT offers kept ranges for file {w.fino} without --resume")
        check_offer(w.offer, f.entry.size, self.block_size)
        f.gated = False
        return Released(f, w.offer)

    def _verdict(self, r: FileResult) -> FileVerdict:
        """The digest verdict: the receiver's digest against the sender's, and the sender's
        own failure (a source that changed) over the receiver's success. A gated file ends
        unsent with a SKIPPED result or a failure."""
        f = self.files.get(r.fino)
        if f is None:
            raise ProtocolError(f"result for unknown or already reported file {r.fino}")
        if r.status == STATUS_SKIPPED and not f.gated:
            raise ProtocolError(f"file {r.fino} reported skipped after it was wanted", path=f.entry.name)
        if f.gated:
            del self.files[r.fino]
            self._unended.discard(r.fino)
            if r.status == STATUS_SKIPPED:
                return FileVerdict(f, True, skipped=True)
            if r.status == STATUS_OK:
                raise ProtocolError(f"success reported for file {r.fino} before it was wanted", path=f.entry.name)
            return FileVerdict(f, False, cause_name(r.cause), r.message)
        if r.status == STATUS_OK and not f.end_sent:
            raise ProtocolError(f"success reported for file {r.fino} before it was sent", path=f.entry.name)
        del self.files[r.fino]
        if r.status == STATUS_OK:
            if self.checksums and f.entry.kind != KIND_DIR and r.digest != f.digest:
                return FileVerdict(f, False, "integrity", "receiver's digest differs from the sender's")
            if f.local_error is not None:
                return FileVerdict(f, False, "I/O", f.local_error, at_source=True)
            return FileVerdict(f, True)
        if f.local_error is not None:
            return FileVerdict(f, False, cause_name(r.cause), f.local_error, at_source=True)
        return FileVerdict(f, False, cause_name(r.cause), r.message)

    def stream_closed(self) -> None:
        """TCP EOF on the metadata stream (while the session was not aborted)."""
        if self.state is not SessionState.DONE:
            raise ConnectionFailure("the receiver closed the metadata stream before the session ended")


def advances(batch: list[MetaItem]) -> bool:
    """Whether sending the batch is progress: not when it holds only our own keepalive (OP-15)."""
    return any(not isinstance(item, Keepalive) for item in batch)


def encode_batch(batch: list[MetaItem], inline_frame: Callable[[InlineBlock], bytes]) -> list[bytes]:
    """The batch's entries first, in as few FILE_LIST frames as fit, then the rest in order.

    Moving entries ahead keeps every entry before its file's DATA and FILE_END and keeps
    entries in walk order; it lets small files (entry, DATA, FILE_END each) share FILE_LIST
    frames instead of one FlatBuffer per file. `inline_frame` encodes a small file's DATA
    (the compress stage is the caller's)."""
    frames: list[bytes] = []
    entries: list[FileEntry] = []
    size = 0
    for item in batch:
        if isinstance(item, FileEntry):
            if len(entries) >= MAX_FILES_PER_LIST or size + len(item.name) + ENTRY_OVERHEAD > META_MAX_PLAINTEXT - LIST_SLACK:
                frames.append(encode_file_list(entries))
                entries, size = [], 0
            entries.append(item)
            size += len(item.name) + ENTRY_OVERHEAD
    if entries:
        frames.append(encode_file_list(entries))
    for item in batch:
        if isinstance(item, FileEnd):
            frames.append(encode_file_end(item))
        elif isinstance(item, FileSum):
            frames.append(encode_file_sum(item))
        elif isinstance(item, InlineBlock):
            frames.append(inline_frame(item))
        elif isinstance(item, Keepalive):
            frames.append(encode_keepalive())
    return frames
