"""Sans-IO protocol state: the legal transitions, and the receiver's and sender's
per-file bookkeeping. No sockets, threads or clocks here; adapters in escp/net feed
events in and act on what comes out (callers serialise access with their own lock).

Stream lifecycle (both sides, per connection):
    HANDSHAKE --accept--> OPEN --data/message--> OPEN --eos--> CLOSED
Session (receiver's view of the metadata stream):
    OPEN --file_list/file_end/keepalive--> OPEN --session_end--> ENDING --done--> DONE
Anything else is a ProtocolError; ABORT from either side moves to ABORTED.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ProtocolError
from .messages import FileEnd, FileEntry, FileResult
from .wire import KIND_DIR, MAX_FILES, STATUS_OK

# (state, event) -> next state; one table for streams and one for the session
STREAM_TRANSITIONS: dict[tuple[str, str], str] = {
    ("HANDSHAKE", "accept"): "OPEN",
    ("OPEN", "data"): "OPEN",
    ("OPEN", "eos"): "CLOSED",
}
SESSION_TRANSITIONS: dict[tuple[str, str], str] = {
    ("OPEN", "file_list"): "OPEN",
    ("OPEN", "file_end"): "OPEN",
    ("OPEN", "keepalive"): "OPEN",
    ("OPEN", "session_end"): "ENDING",
    ("ENDING", "keepalive"): "ENDING",
    ("ENDING", "done"): "DONE",
    ("OPEN", "abort"): "ABORTED",
    ("ENDING", "abort"): "ABORTED",
}


def transition(table: dict[tuple[str, str], str], state: str, event: str) -> str:
    try:
        return table[(state, event)]
    except KeyError:
        raise ProtocolError(f"unexpected {event} in state {state}") from None


@dataclass
class RxFile:
    """Receiver's state of one announced file."""

    entry: FileEntry
    parts: tuple[bytes, ...]
    nblocks_max: int
    seen: set[int] = field(default_factory=set)
    written: int = 0  # blocks fully written
    end: FileEnd | None = None
    failed: bool = False  # the receiver failed it (its result is already sent)
    finished: bool = False  # its one FILE_RESULT is sent
    claimed: bool = False  # completion was handed to one thread
    sink: object = None  # adapter-owned (temp fd, digest ...)


class ReceiverCore:
    """Validates everything the sender says about files and blocks."""

    def __init__(self, block_size: int, sparse: bool) -> None:
        self.block_size = block_size
        self.sparse = sparse
        self.state = "OPEN"
        self.files: dict[int, RxFile] = {}
        self.names: set[tuple[bytes, ...]] = set()
        self.next_fino = 0
        self.announced = 0
        self.results_sent = 0
        self.session_end_entries: int | None = None

    def event(self, name: str) -> None:
        self.state = transition(SESSION_TRANSITIONS, self.state, name)

    def _check_entry(self, entry: FileEntry, parts: tuple[bytes, ...], fino: int,
                     batch: set[tuple[bytes, ...]]) -> None:
        if entry.fino != fino or entry.fino >= MAX_FILES:
            raise ProtocolError(f"file number {entry.fino} out of sequence (expected {fino})")
        if parts in self.names or parts in batch:
            raise ProtocolError("the same name was announced twice", path=b"/".join(parts))

    def check_entries(self, items: list[tuple[FileEntry, tuple[bytes, ...]]]) -> None:
        """add_entry's checks for a whole FILE_LIST before any of it is registered or acted
        on (its directories made), so a refused list leaves nothing behind."""
        batch: set[tuple[bytes, ...]] = set()
        for i, (entry, parts) in enumerate(items):
            self._check_entry(entry, parts, self.next_fino + i, batch)
            batch.add(parts)

    def add_entry(self, entry: FileEntry, parts: tuple[bytes, ...]) -> RxFile:
        self._check_entry(entry, parts, self.next_fino, set())
        self.next_fino += 1
        self.announced += 1
        self.names.add(parts)
        size = entry.size
        nblocks = 0 if entry.kind == KIND_DIR else -(-size // self.block_size)
        f = RxFile(entry, parts, nblocks)
        if entry.kind != KIND_DIR:
            self.files[entry.fino] = f
        return f

    def lookup(self, fino: int) -> RxFile | None:
        """The file a frame refers to; None when it is not announced (yet)."""
        if fino >= self.next_fino:
            return None
        f = self.files.get(fino)
        if f is None:
            raise ProtocolError(f"frame for file {fino}, which is a directory or already finished")
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

    def block_written(self, f: RxFile) -> bool:
        """Count a written (or, for a failed file, dropped) block; True when f is ready to finish."""
        f.written += 1
        return self.claim(f)

    def claim(self, f: RxFile) -> bool:
        """True exactly once: FILE_END is in and every block it counts was written or dropped."""
        if f.claimed or f.end is None or not f.written == len(f.seen) == f.end.blocks:
            return False
        f.claimed = True
        return True

    def file_end(self, end: FileEnd) -> RxFile:
        f = self.files.get(end.fino) if end.fino < self.next_fino else None
        if f is None or f.end is not None:
            raise ProtocolError(f"FILE_END for unknown or finished file {end.fino}")
        if end.blocks > f.nblocks_max or (not self.sparse and end.status == STATUS_OK and end.blocks != f.nblocks_max):
            raise ProtocolError(f"FILE_END declares {end.blocks} blocks, file has {f.nblocks_max}", path=f.entry.name)
        if end.blocks < len(f.seen):
            raise ProtocolError("more blocks received than FILE_END declares", path=f.entry.name)
        f.end = end
        return f

    def result_sent(self, f: RxFile) -> bool:
        """Record that f's one FILE_RESULT goes out now; False when it already went."""
        if f.finished:
            return False
        f.finished = True
        self.results_sent += 1
        return True

    def retire(self, f: RxFile) -> None:
        """f is finished and cleaned up; forget it."""
        self.files.pop(f.entry.fino, None)

    def session_end(self, entries: int) -> None:
        self.event("session_end")
        if entries != self.announced:
            raise ProtocolError(f"SESSION_END counts {entries} entries, {self.announced} were announced")
        self.session_end_entries = entries

    @property
    def all_done(self) -> bool:
        return self.state == "ENDING" and not self.files


@dataclass
class TxFile:
    """Sender's state of one announced file (the data-path part lives in the scheduler)."""

    entry: FileEntry
    path: bytes
    end_sent: bool = False
    digest: bytes = b""
    local_error: str | None = None
    result: FileResult | None = None


class SenderCore:
    """Validates what the receiver reports about files."""

    def __init__(self) -> None:
        self.files: dict[int, TxFile] = {}
        self.pending = 0  # announced regular files without a result
        self.ok = 0
        self.failed: list[tuple[TxFile, str, str]] = []  # file, cause, message

    def announce(self, f: TxFile) -> None:
        self.files[f.entry.fino] = f
        self.pending += 1

    def end_sent(self, fino: int, digest: bytes, local_error: str | None) -> None:
        f = self.files[fino]
        f.end_sent, f.digest, f.local_error = True, digest, local_error

    def on_result(self, r: FileResult) -> tuple[TxFile, bool]:
        """Record a FILE_RESULT; returns (file, success). ProtocolError for impossible results."""
        f = self.files.get(r.fino)
        if f is None or f.result is not None:
            raise ProtocolError(f"result for unknown or already reported file {r.fino}")
        if r.status == STATUS_OK and not f.end_sent:
            raise ProtocolError(f"success reported for file {r.fino} before it was sent", path=f.entry.name)
        f.result = r
        self.pending -= 1
        return f, r.status == STATUS_OK

    def close_file(self, f: TxFile) -> None:
        self.files.pop(f.entry.fino, None)
