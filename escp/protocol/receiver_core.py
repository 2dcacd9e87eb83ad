"""The receiver's sans-IO session core: every rule about what the sender may say and when.

Rule 1, as in h11: whatever decides whether the session may go on, and how each file
ends, lives here. The adapter (escp/net/receive.py) feeds in decoded frames and carries
out the actions that come back; it owns the sockets, threads, files and clock, this
module owns none of them. Not thread-safe: the adapter serialises calls with one lock.

Frames in: `check_file_list` / `add_file_list` (FILE_LIST, split so that the adapter can
make the list's directories in between), `receive_data` (a DATA header), `receive_eos`,
`receive` (FILE_END, FILE_SUM, SESSION_END, KEEPALIVE, ABORT), `stream_closed` (TCP EOF).
Local facts in: `block_stored`, `fail`, `published`, `retire`, `decide` (what the
destination holds under a gated file's name).
Actions out: SendResult, CompleteFile, DiscardFile, FinishSession, CheckExisting, SendWant
(see below).

Gated sessions (--skip-existing, §9.14): a regular file's data may only come after this
side's FILE_WANT. For each such file the core asks the adapter what the destination holds
(CheckExisting, once FILE_SUM is in with the digest mode), and `decide` compares it with
what the sender announced: the file is skipped (FILE_RESULT SKIPPED, nothing written) or
wanted (FILE_WANT). With --resume the FILE_WANT may offer ranges the adapter found
verified in a kept temp file (§9.15): the sender sends every block outside them, and
every block of an offered range it does not keep; whatever arrives, each block of the
grid must be either received or kept, or the file fails (nothing is spliced).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ..errors import ConnectionFailure, EscpError, IntegrityError, ProtocolError
from .bootstrap import SessionInit
from .data import DataHeader
from .messages import (
    Abort,
    FileEnd,
    FileEntry,
    FileResult,
    FileSum,
    FileWant,
    KeptRange,
    Message,
    SessionDone,
    SessionEnd,
)
from .request import RequestRule
from .roles import DataRole
from .states import (
    EVENT_OF,
    SENDS,
    SESSION_TRANSITIONS,
    Event,
    SessionState,
    StreamBook,
    StreamState,
    stream_name,
    transition,
)
from .wire import (
    DATA_FLAG_ZSTD,
    KIND_DIR,
    MAX_FILES,
    META_STREAM,
    NO_DIGEST,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    T_DATA,
    T_EOS,
    cause_code,
)

Parts = tuple[bytes, ...]  # a peer name mapped to destination components


@dataclass
class RxFile:
    """Receiver's state of one announced file."""

    entry: FileEntry
    parts: Parts
    nblocks_max: int
    seen: set[int] = field(default_factory=set)
    written: int = 0  # blocks fully written (or, for a failed file, dropped)
    end: FileEnd | None = None
    failed: bool = False  # the receiver failed it (its result is already queued)
    finished: bool = False  # its one FILE_RESULT is queued
    claimed: bool = False  # completion was handed to one thread
    sink: object = None  # adapter-owned (temp file, running digest)
    gated: bool = False  # a gated session's file not yet wanted: no DATA or FILE_END may come
    content_sum: bytes | None = None  # the sender's content digest (FILE_SUM), digest mode
    offered: dict[int, int] = field(default_factory=dict)  # --resume: block offset -> index of its offered range
    resent: set[int] = field(default_factory=set)  # offered ranges the sender sends again (a block came)
    offer: tuple[KeptRange, ...] = ()


@dataclass(frozen=True, slots=True)
class Existing:
    """What the destination holds under a gated file's final name: a regular file (never
    a symlink followed), its size, mtime and, when `ReceiverCore.digest_needed`, its
    content digest (checksum.content_digest with the session's block size)."""

    size: int
    mtime_ns: int
    digest: bytes | None = None


# --- actions: what the adapter must do next ------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendResult:
    """Queue this FILE_RESULT (the file's one result)."""

    file: RxFile
    result: FileResult
    cause: str  # the cause class by name ("" when ok)


@dataclass(frozen=True, slots=True)
class CompleteFile:
    """Every block the file's FILE_END counts is in: finish it (see `completion`), off the lock."""

    file: RxFile


@dataclass(frozen=True, slots=True)
class DiscardFile:
    """The file can never complete: drop its temp file (its failure result is already queued)."""

    file: RxFile


@dataclass(frozen=True, slots=True)
class FinishSession:
    """Everything is in: finish directories, then queue SESSION_DONE as the last frame."""

    done: SessionDone


@dataclass(frozen=True, slots=True)
class CheckExisting:
    """Look at the destination under a gated file's name and tell `decide` what is there."""

    file: RxFile


@dataclass(frozen=True, slots=True)
class SendWant:
    """Queue FILE_WANT: the gated file is wanted, its data may come."""

    file: RxFile
    want: FileWant


RxAction = SendResult | CompleteFile | DiscardFile | FinishSession | CheckExisting | SendWant


class Completion(Enum):
    """How a complete file ends."""

    DISCARD = "discard"  # the receiver failed it earlier: drop the temp file, no second result
    REJECT = "reject"  # the sender failed it at the source: drop it, report that (verdict)
    VERIFY = "verify"  # compare digests (verdict), then publish


def unannounced(fino: int) -> ProtocolError:
    return ProtocolError(f"data for file {fino}, which was never announced")


# what `receive` takes: the sender's metadata frames that have no entry point of their own
_RECEIVED = SENDS[DataRole.SENDER] - {Event.FILE_LIST, Event.DATA, Event.EOS}


class ReceiverCore:
    """Validates everything the sender says about files, blocks and streams."""

    def __init__(self, init: SessionInit, request: RequestRule | None = None) -> None:
        flags = init.session_flags
        self.request = request  # a pulling receiver: what it asked for (request.py)
        self.block_size = init.block_size
        self.sparse = flags.sparse
        self.checksums = flags.checksum
        self.top_level_count = init.top_level_count
        self.check_top_level = not flags.dest_dir  # with --filelist the count is not known at set-up
        self.data_flags = DATA_FLAG_ZSTD if flags.compress else 0
        self.gated = flags.gated
        self.skips = flags.skip_quick or flags.skip_digest
        self.skip_digest = flags.skip_digest
        self.resume = flags.resume
        self.state = SessionState.OPEN
        self.streams = StreamBook(init.streams)
        self.files: dict[int, RxFile] = {}  # regular files not yet retired
        self.names: set[Parts] = set()
        self.top_names: set[bytes] = set()
        self.next_fino = 0
        self.files_ok = 0
        self.files_failed = 0
        self.files_skipped = 0  # gated files the destination already had, and their bytes
        self.bytes_skipped = 0
        self.bytes_written = 0
        self.files_announced = 0  # regular files, and their bytes, for a progress display
        self.bytes_announced = 0

    def _pass(self, event: Event) -> None:
        self.state = transition(SESSION_TRANSITIONS, self.state, event)

    # --- streams ---------------------------------------------------------------------------
    def claim_stream(self, index: int) -> bool:
        """True once per valid stream index: the connection may become that stream."""
        return self.streams.claim(index)

    def check_data_stream_frame(self, index: int, ftype: int) -> None:
        """A data stream carries DATA and EOS only."""
        if ftype not in (T_DATA, T_EOS):
            raise ProtocolError(f"unexpected frame type {ftype} on {stream_name(index)}")

    def receive_eos(self, index: int, frames: int, nbytes: int) -> list[RxAction]:
        """A data stream's EOS: its counts must match what arrived on it (§6.2)."""
        self._pass(Event.EOS)
        if self.streams.end(index) != (frames, nbytes):
            raise IntegrityError(f"{stream_name(index)}: end-of-stream counts differ from what arrived")
        return self.poll()

    def stream_closed(self, index: int) -> None:
        """TCP EOF on a stream (while the session was not aborted): a truncation unless the
        stream's end passed (EOS on a data stream, SESSION_DONE on the metadata stream)."""
        if index == META_STREAM:
            if self.state is not SessionState.DONE:
                raise IntegrityError("metadata stream closed without the session end (truncated)")
        elif self.streams.state(index) is not StreamState.CLOSED:
            raise IntegrityError(f"{stream_name(index)} closed without an end-of-stream frame (truncated)")

    # --- FILE_LIST -----------------------------------------------------------------------------
    def _check_entry(self, entry: FileEntry, parts: Parts, fino: int, batch: set[Parts]) -> None:
        if entry.fino != fino or entry.fino >= MAX_FILES:
            raise ProtocolError(f"file number {entry.fino} out of sequence (expected {fino})")
        if parts in self.names or parts in batch:
            raise ProtocolError("the same name was announced twice", path=b"/".join(parts))

    def check_file_list(self, items: list[tuple[FileEntry, Parts]]) -> None:
        """Every check of a FILE_LIST, before any of it is registered or acted on (its
        directories made), so a refused list leaves nothing behind (OP-18)."""
        self._pass(Event.FILE_LIST)
        batch: set[Parts] = set()
        for i, (entry, parts) in enumerate(items):
            self._check_entry(entry, parts, self.next_fino + i, batch)
            batch.add(parts)
            if self.request is not None:
                self.request.check(entry)
        if not self.check_top_level:
            return
        for entry, parts in items:  # unrequested top-level names: CVE-2019-6111 class
            if parts[0] in self.top_names:
                continue
            if len(self.top_names) >= max(1, self.top_level_count):
                raise ProtocolError(f"more top-level names than the {self.top_level_count} announced "
                                    "at set-up (unrequested file)", path=entry.name)
            self.top_names.add(parts[0])

    def add_entry(self, entry: FileEntry, parts: Parts) -> RxFile:
        self._check_entry(entry, parts, self.next_fino, set())
        self.next_fino += 1
        self.names.add(parts)
        nblocks = 0 if entry.kind == KIND_DIR else -(-entry.size // self.block_size)
        f = RxFile(entry, parts, nblocks, gated=self.gated and entry.kind != KIND_DIR)
        if entry.kind != KIND_DIR:
            self.files[entry.fino] = f
            self.files_announced += 1
            self.bytes_announced += entry.size
        return f

    def add_file_list(self, items: list[tuple[FileEntry, Parts]],
                      dir_errors: list[EscpError | None]) -> list[RxAction]:
        """Register a checked FILE_LIST; a directory's one result goes out at once (made, or
        `dir_errors[i]` says why not); a file that comes with an error (its directory could
        not be made) fails at once."""
        out: list[RxAction] = []
        for (entry, parts), error in zip(items, dir_errors, strict=True):
            f = self.add_entry(entry, parts)
            if entry.kind == KIND_DIR:
                r = self._result(f, STATUS_OK, "", NO_DIGEST, "") if error is None else \
                    self._result(f, STATUS_FAILED, error.cause, NO_DIGEST, error.message)
            else:
                r = self.fail(f, error) if error is not None else None
                if f.gated and error is not None:
                    self.files.pop(entry.fino, None)  # over before it was wanted: no FILE_END comes
                elif f.gated and not self.skip_digest:
                    out.append(CheckExisting(f))
            if r is not None:
                out.append(r)
        return out

    # --- DATA --------------------------------------------------------------------------------
    def lookup(self, fino: int) -> RxFile | None:
        """The file a frame refers to; None when it is not announced (yet)."""
        if fino >= self.next_fino:
            return None
        f = self.files.get(fino)
        if f is None:
            raise ProtocolError(f"frame for file {fino}, which is a directory or already finished")
        return f

    def receive_data(self, index: int, hdr: DataHeader, payload_len: int) -> RxFile | None:
        """Check a DATA frame before anything is written (§7.2). None: its file is not
        announced yet (a data stream may overtake the FILE_LIST): the adapter waits for the
        next announcement and calls again, within its deadline."""
        self._pass(Event.DATA)
        if hdr.flags & ~self.data_flags:
            raise ProtocolError(f"data flags {hdr.flags:#x} not allowed in this session")
        f = self.lookup(hdr.fino)
        if f is None:
            # on the metadata stream the entry would have come first; after SESSION_END none can
            if index == META_STREAM or self.state is not SessionState.OPEN:
                raise unannounced(hdr.fino)
            return None
        if f.gated:
            raise ProtocolError("data before the receiver wanted the file", path=f.entry.name)
        self.check_block(f, hdr.offset, hdr.raw_len)
        kept = f.offered.get(hdr.offset)
        if kept is not None:
            f.resent.add(kept)  # the sender did not keep this range: all of it comes again
        if not hdr.compressed and payload_len != hdr.raw_len:
            raise ProtocolError(f"data frame carries {payload_len} bytes, declares {hdr.raw_len}")
        if index != META_STREAM:
            self.streams.data(index, hdr.raw_len)
        return f

    def check_block(self, f: RxFile, offset: int, length: int) -> None:
        """Bounds of a DATA frame, checked before anything is written."""
        size, bs = f.entry.size, self.block_size
        if offset < 0 or offset % bs or offset >= size:
            raise ProtocolError(f"block offset {offset} invalid for size {size}", path=f.entry.name)
        if length != min(bs, size - offset):
            raise ProtocolError(f"block at {offset} has length {length}", path=f.entry.name)
        if f.end is not None and len(f.seen) >= f.end.blocks:
            raise ProtocolError(f"block at {offset} beyond the block count of FILE_END", path=f.entry.name)
        if offset in f.seen:
            raise ProtocolError(f"block at offset {offset} sent twice", path=f.entry.name)
        f.seen.add(offset)

    def block_stored(self, f: RxFile, nbytes: int) -> list[RxAction]:
        """A block of f was written (or, for a failed file, dropped)."""
        f.written += 1
        self.bytes_written += nbytes
        return [CompleteFile(f)] if self._claim(f) else []

    def _claim(self, f: RxFile) -> bool:
        """True exactly once: FILE_END is in and every block it counts was written or dropped."""
        if f.claimed or f.end is None or not f.written == len(f.seen) == f.end.blocks:
            return False
        f.claimed = True
        return True

    # --- other metadata frames -----------------------------------------------------------------
    def receive(self, msg: Message) -> list[RxAction]:
        """FILE_END, SESSION_END, KEEPALIVE or ABORT from the metadata stream."""
        event = EVENT_OF.get(type(msg))
        if event not in _RECEIVED:
            raise ProtocolError(f"unexpected {type(msg).__name__} on the metadata stream")
        self._pass(event)
        if isinstance(msg, FileEnd):
            return self._file_end(msg)
        if isinstance(msg, FileSum):
            return self._file_sum(msg)
        if isinstance(msg, SessionEnd):
            if msg.entries != self.next_fino:
                raise ProtocolError(f"SESSION_END counts {msg.entries} entries, {self.next_fino} were announced")
            return self.poll()
        if isinstance(msg, Abort):
            raise ConnectionFailure(f"sender aborted: {msg.message}")
        return []

    def _file_end(self, end: FileEnd) -> list[RxAction]:
        f = self.files.get(end.fino) if end.fino < self.next_fino else None
        if f is None or f.end is not None:
            raise ProtocolError(f"FILE_END for unknown or finished file {end.fino}")
        if f.gated:
            raise ProtocolError("FILE_END before the receiver wanted the file", path=f.entry.name)
        exact = not self.sparse and not f.offered  # a resumed file's count is checked at its end (`kept_gap`)
        if end.blocks > f.nblocks_max or (exact and end.status == STATUS_OK and end.blocks != f.nblocks_max):
            raise ProtocolError(f"FILE_END declares {end.blocks} blocks, file has {f.nblocks_max}", path=f.entry.name)
        if end.blocks < len(f.seen):
            raise ProtocolError("more blocks received than FILE_END declares", path=f.entry.name)
        f.end = end
        return [CompleteFile(f)] if self._claim(f) else []

    # --- gated files (--skip-existing) --------------------------------------------------------
    def _file_sum(self, msg: FileSum) -> list[RxAction]:
        f = self.files.get(msg.fino) if msg.fino < self.next_fino else None
        if not self.skip_digest or f is None or not f.gated or f.content_sum is not None:
            raise ProtocolError(f"FILE_SUM for file {msg.fino}, which does not await one")
        f.content_sum = msg.digest
        return [CheckExisting(f)]

    def digest_needed(self, f: RxFile, size: int) -> bool:
        """Whether `decide` needs the content digest of a destination file of this size."""
        return self.skip_digest and size == f.entry.size

    def matches(self, f: RxFile, have: Existing | None) -> bool:
        """Whether the destination's `have` (None: no regular file) is the file the sender
        announced: quick, the same size and mtime; digest, the same size and content digest.
        Never without --skip-existing."""
        e = f.entry
        if not self.skips or have is None or have.size != e.size:
            return False
        if self.skip_digest:
            return f.content_sum is not None and have.digest == f.content_sum
        return have.mtime_ns == e.mtime_ns

    def decide(self, f: RxFile, have: Existing | None, offer: tuple[KeptRange, ...] = ()) -> list[RxAction]:
        """The destination holds `have` under f's name: skip f when it `matches`, else want
        it (offering the kept ranges of `offer`, --resume). Once per gated file."""
        if not f.gated or f.finished:
            raise ProtocolError("a decision for a file that is not waiting for one", path=f.entry.name)
        return self.skip(f) if self.matches(f, have) else self.want(f, offer if self.resume else ())

    def want(self, f: RxFile, offer: tuple[KeptRange, ...] = ()) -> list[RxAction]:
        """f's data may come now (FILE_WANT goes out), but for the kept ranges of `offer`
        that the sender finds unchanged (--resume)."""
        f.gated = False
        f.offer = offer
        bs = self.block_size
        for i, kept in enumerate(offer):
            for offset in range(kept.offset, kept.offset + kept.length, bs):
                f.offered[offset] = i
        return [SendWant(f, FileWant(f.entry.fino, offer))]

    def kept_bytes(self, f: RxFile) -> int:
        """The bytes of f's offered ranges the sender kept (sent nothing of)."""
        return sum(k.length for i, k in enumerate(f.offer) if i not in f.resent)

    def kept_gap(self, f: RxFile) -> str:
        """"" when every block of f's grid was received or lies in a kept range; else why
        not (a resumed file is never published with a hole, nor with part of a range)."""
        if not f.offered:
            return ""
        kept = sum(1 for offset, i in f.offered.items() if i not in f.resent)
        resent_missing = sum(1 for offset, i in f.offered.items() if i in f.resent and offset not in f.seen)
        if resent_missing or kept + len(f.seen) != f.nblocks_max:
            return "resumed file incomplete: the kept and the received blocks do not cover it"
        return ""

    def skip(self, f: RxFile) -> list[RxAction]:
        """f is already at the destination: its one result says so, and it is over."""
        f.gated = False
        self.files_skipped += 1
        self.bytes_skipped += f.entry.size
        f.finished = f.claimed = True
        self.files.pop(f.entry.fino, None)
        result = FileResult(f.entry.fino, STATUS_SKIPPED, 0, NO_DIGEST, "")
        return [SendResult(f, result, ""), *self.poll()]

    # --- how files end -------------------------------------------------------------------------
    def completion(self, f: RxFile) -> Completion:
        assert f.end is not None, "completion of a file without FILE_END"
        if f.failed:
            return Completion.DISCARD
        return Completion.VERIFY if f.end.status == STATUS_OK else Completion.REJECT

    def verdict(self, f: RxFile, digest: bytes) -> SendResult | None:
        """The result of a complete file that must not be published: it failed at the source,
        or the receiver's digest differs from the sender's. None: publish it."""
        end = f.end
        assert end is not None
        if end.status != STATUS_OK:
            return self._result(f, STATUS_FAILED, "I/O", NO_DIGEST, end.message or "failed at the source")
        gap = self.kept_gap(f)
        if gap:
            return self._result(f, STATUS_FAILED, "integrity", digest, gap)
        if self.checksums and digest != end.digest:
            return self._result(f, STATUS_FAILED, "integrity", digest, "checksum mismatch: received data differs")
        return None

    def published(self, f: RxFile, digest: bytes, error: EscpError | None = None) -> SendResult | None:
        """f is in place under its final name, or publishing it failed with `error`."""
        if error is not None:
            return self._result(f, STATUS_FAILED, error.cause, digest, error.message)
        return self._result(f, STATUS_OK, "", digest, "")

    def fail(self, f: RxFile, err: EscpError) -> SendResult | None:
        """The receiver fails f now (§9.11): its result goes out at once; later blocks are
        still checked and counted but not written. None when f has already failed."""
        if f.failed:
            return None
        f.failed = True
        return self._result(f, STATUS_FAILED, err.cause, NO_DIGEST, err.message)

    def _result(self, f: RxFile, status: int, cause: str, digest: bytes, message: str) -> SendResult | None:
        """f's one FILE_RESULT; None when it already went."""
        if f.finished:
            return None
        f.finished = True
        if status == STATUS_OK:
            self.files_ok += 1
        else:
            self.files_failed += 1
        return SendResult(f, FileResult(f.entry.fino, status, cause_code(cause), digest, message), cause)

    def retire(self, f: RxFile) -> list[RxAction]:
        """f is finished and cleaned up: forget it."""
        self.files.pop(f.entry.fino, None)
        return self.poll()

    def poll(self) -> list[RxAction]:
        """Once every data stream sent its EOS no block can arrive any more: a file still
        missing blocks (or, after SESSION_END, still without its FILE_END) fails now instead
        of waiting for the idle deadline (HP-7, HP-10). Then, when everything is in, the
        session ends (SESSION_DONE, §9.7)."""
        if not self.streams.all_ended:
            return []
        actions: list[RxAction] = []
        for f in list(self.files.values()):
            if f.claimed:
                continue
            if f.end is not None and len(f.seen) < f.end.blocks:
                err: EscpError = IntegrityError(f"{f.end.blocks - len(f.seen)} of {f.end.blocks} blocks never arrived")
            elif f.end is None and self.state is SessionState.ENDING:
                err = ProtocolError("the sender ended the session without ending this file")
            else:
                continue
            result = self.fail(f, err)
            if result is not None:
                actions.append(result)
            f.claimed = True
            actions.append(DiscardFile(f))
            self.files.pop(f.entry.fino, None)
        if self.state is SessionState.ENDING and not self.files:
            self._pass(Event.SESSION_DONE)
            actions.append(FinishSession(SessionDone(self.files_ok, self.files_failed, self.bytes_written, b"")))
        return actions
