"""Block scheduler of the sender: the source walk in, (file, offset, length) jobs out.

The metadata thread drives the walk with `pump()`. Directories and small files (at
most `inline_max` bytes) are handled right there: a small file is read whole and its
entry, DATA block and FILE_END go out in order on the metadata stream, so thousands
of tiny files cost one thread per side and no cross-thread hand-offs. Big files are
opened, announced and queued (at most `max_ahead` at a time); every stream worker
pulls blocks from the head of that queue, so a big file is read by all streams at
once. A file is closed when its last block is done, which bounds open files. Its
FILE_END (digest, or why it failed at the source) is queued after its last block.

Gated (--skip-existing): a regular file is announced from its walk stat (with its content
digest first in the digest mode, `file_sum`) and held; `release` (the receiver's
FILE_WANT) lets the next pump send it as above, checked against the stat it was announced
with; `cancel` of a held file (skipped, or failed by the receiver) drops it unsent. At most
`max_held` files wait for an answer at a time. With --resume the release may come with the
receiver's kept ranges: each range the source still holds (its range digest re-read and
matched when the file is opened) is not sent, and its block digests join the file's.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import TransferIOError
from ..protocol.messages import FileEnd, FileEntry, FileSum, KeptRange
from ..protocol.sender_core import InlineBlock
from ..protocol.wire import KIND_DIR, KIND_FILE, NO_DIGEST, STATUS_FAILED, STATUS_OK
from .checksum import (
    FileDigest,
    block_digest,
    content_digest,
    fd_block_digests,
    fd_content_digest,
    range_digest,
)
from .directio import open_direct, wants_direct
from .reader import data_block_offsets, open_source, same_source
from .sources import SourceItem, SourceProblem

PUMP_SECONDS = 0.5  # longest stretch of the walk between two sends of the metadata thread
MAX_HELD = 4096  # gated files announced and waiting for the receiver's answer


@dataclass
class OpenFile:
    entry: FileEntry
    path: bytes
    fd: int
    st: os.stat_result | None
    offsets: list[int]
    digest: FileDigest
    next_index: int = 0
    outstanding: int = 0
    sent_blocks: int = 0
    error: TransferIOError | None = None
    cancelled: bool = False
    dfd: int = -1  # O_DIRECT fd of the same file, or -1
    direct_off: bool = False  # set by a worker when dfd refused a read
    closed: bool = False  # finished: its fds are closed and its FILE_END is queued
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dispatched_all(self) -> bool:
        return self.next_index >= len(self.offsets) or self.cancelled or self.error is not None


@dataclass(frozen=True, slots=True)
class BlockJob:
    file: OpenFile
    offset: int
    length: int


class BlockScheduler:
    def __init__(
        self,
        items: Iterator[SourceItem | SourceProblem],
        block_size: int,
        *,
        sparse: bool,
        dummy: bool,
        checksums: bool,
        announce: Callable[[FileEntry, bytes], None],
        file_end: Callable[[FileEnd], None],
        problem: Callable[[SourceProblem], None],
        preserve_ids: bool,
        inline: Callable[[InlineBlock], None] | None = None,
        inline_max: int = 0,
        max_ahead: int = 2,
        on_room: Callable[[], None] | None = None,
        direct: str = "never",
        content_digests: bool = False,
        gated: bool = False,
        file_sum: Callable[[FileSum], None] | None = None,
        max_held: int = MAX_HELD,
    ) -> None:
        self._items = items
        self.block_size = block_size
        self.sparse = sparse
        self.dummy = dummy
        self.checksums = checksums
        self._announce = announce
        self._file_end = file_end
        self._problem = problem
        self._inline = inline
        self.inline_max = inline_max if inline is not None else -1
        self.max_ahead = max_ahead
        self._on_room = on_room
        self.preserve_ids = preserve_ids
        self.direct = direct
        self.record_content = content_digests
        self.content: dict[int, bytes] = {}  # fino -> checksum.content_digest (for manifests)
        self.gated = gated
        self._file_sum = file_sum  # gated, digest mode: a held file's FILE_SUM
        self.max_held = max_held
        self._held: dict[int, tuple[SourceItem, FileEntry]] = {}  # announced, waiting for an answer
        self._released: deque[tuple[SourceItem, FileEntry, tuple[KeptRange, ...]]] = deque()  # wanted, not sent
        self._opening = 0  # released files taken off _released and not yet queued or finished
        self.kept: dict[int, int] = {}  # fino -> bytes of the receiver's kept ranges not sent again (--resume)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[OpenFile] = deque()  # big files with blocks still to hand out
        self._exhausted = False
        self.next_fino = 0
        self.files: dict[int, OpenFile] = {}

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    @property
    def done(self) -> bool:
        """The walk is over and every file it found was finished or dropped."""
        return self._exhausted and not self.files and not self._waiting

    @property
    def _waiting(self) -> bool:
        """Files are held, released or being opened: blocks may still come."""
        return bool(self._held or self._released or self._opening)

    @property
    def wants_more(self) -> bool:
        """True when pump() should run: workers need big files, and the walk is not over
        (and not too far ahead of the receiver's answers) or released files wait."""
        if len(self._queue) >= self.max_ahead:
            return False
        return bool(self._released) or (not self._exhausted and len(self._held) < self.max_held)

    # --- worker side -----------------------------------------------------------------
    def next_job(self, stop: threading.Event | None = None) -> BlockJob | None:
        """The next block of a big file; None once the walk is over and every block is out."""
        with self._ready:
            while True:
                job = self._take()
                if job is not None:
                    return job
                if (self._exhausted and not self._waiting) or (stop is not None and stop.is_set()):
                    return None
                self._ready.wait(0.5)

    def ready_job(self) -> BlockJob | None:
        """The next block if one is ready now, without waiting (None when none is: then
        next_job() tells a wait from the end). Lets a traced worker record only real waits."""
        with self._ready:
            return self._take()

    def _take(self) -> BlockJob | None:
        """With the lock held: hand out the next block of the first file that has one."""
        while self._queue and self._queue[0].dispatched_all:
            self._queue.popleft()
            self._ready.notify_all()
            if self._on_room is not None:
                self._on_room()  # the walker may queue the next big file
        if not self._queue:
            return None
        cur = self._queue[0]
        off = cur.offsets[cur.next_index]
        cur.next_index += 1
        cur.outstanding += 1
        return BlockJob(cur, off, min(self.block_size, cur.entry.size - off))

    # --- walker side (the metadata thread) ---------------------------------------------
    def pump(self, max_items: int = 256, max_seconds: float = PUMP_SECONDS) -> None:
        """Advance the walk by up to max_items sources, stopping early once a big file is
        queued or after max_seconds (a slow source must not hold back what is ready: the
        metadata thread sends it, which is the session's progress, between pumps)."""
        end = time.monotonic() + max_seconds
        for _ in range(max_items):
            if time.monotonic() > end:
                return
            if self._released:
                if self._send_released():
                    return
                continue
            if self._exhausted or len(self._held) >= self.max_held:
                return
            item = next(self._items, None)
            if item is None:
                with self._ready:
                    self._exhausted = True
                    self._ready.notify_all()
                return
            if isinstance(item, SourceProblem):
                self._problem(item)
            elif item.kind == KIND_DIR:
                self._announce(self._entry(item, item.st, 0), item.path)
            elif self.gated:
                self._hold(item)
            elif item.st.st_size <= self.inline_max:
                self._send_inline(item)
            else:
                opened = self._open(item)
                if opened is None:
                    continue
                if not opened.offsets:
                    self._finish(opened)
                    continue
                self._enqueue(opened)
                return

    def _enqueue(self, opened: OpenFile) -> None:
        with self._ready:
            self._queue.append(opened)
            self._ready.notify_all()

    # --- gated files ---------------------------------------------------------------------
    def _hold(self, item: SourceItem) -> None:
        """Announce a file from its walk stat and hold it for the receiver's answer (with
        its content digest first in the digest mode)."""
        content_sum = b""
        if self._file_sum is not None:
            try:
                content_sum = self._source_sum(item)
            except TransferIOError as exc:
                self._problem(SourceProblem(exc))
                return
        entry = self._entry(item, item.st, item.st.st_size)
        with self._ready:
            self._held[entry.fino] = (item, entry)
        self._announce(entry, item.path)
        if self._file_sum is not None:
            self._file_sum(FileSum(entry.fino, content_sum))

    def _source_sum(self, item: SourceItem) -> bytes:
        """The source's content digest (read whole, here), if it is still what the walk saw."""
        if self.dummy:
            return content_digest(item.st.st_size, self.block_size, {})
        fd, st = open_source(item.path)
        try:
            size, digest = fd_content_digest(fd, self.block_size)
            if size != st.st_size or not same_source(item.st, os.fstat(fd)):
                raise TransferIOError("source file changed during the transfer", path=item.path)
            return digest
        except OSError as exc:
            raise TransferIOError(f"read error: {exc.strerror}", path=item.path) from None
        finally:
            os.close(fd)

    def release(self, fino: int, offer: tuple[KeptRange, ...] = ()) -> None:
        """The receiver wants a held file (but for the kept ranges it offers, the ones that
        still match): the next pump sends it."""
        with self._ready:
            held = self._held.pop(fino, None)
            if held is not None:
                self._released.append((*held, offer))
        if held is not None and self._on_room is not None:
            self._on_room()

    def _send_released(self) -> bool:
        """Send the first released file: True when a big file was queued (pump stops there)."""
        with self._ready:
            item, entry, offer = self._released.popleft()
            self._opening += 1  # workers must not take the empty queue for the end meanwhile
        try:
            if entry.size <= self.inline_max:
                self._send_inline(item, entry)  # one block: sent again whole, whatever was offered
                return False
            opened = self._open(item, entry)
            if opened is not None and offer:
                self._keep_matching(opened, offer)
            if opened is None:
                return False
            if not opened.offsets:
                self._finish(opened)
                return False
            self._enqueue(opened)
            return True
        finally:
            with self._ready:
                self._opening -= 1
                self._ready.notify_all()

    def _keep_matching(self, f: OpenFile, offer: tuple[KeptRange, ...]) -> None:
        """Drop from f's blocks the offered ranges whose digest f's source still has (read
        here, whole); their block digests count in f's file digest as if sent."""
        if f.fd < 0:
            return  # the dummy engine has no content to compare: everything is sent
        kept: set[int] = set()
        for r in offer:
            try:
                blocks = fd_block_digests(f.fd, r.offset, r.length, self.block_size)
            except OSError:
                return  # a read error shows again when the blocks are sent
            if blocks is None or range_digest(blocks) != r.digest:
                continue
            for offset, length, d in blocks:
                f.digest.add(offset, length, d)
                kept.add(offset)
            self.kept[f.entry.fino] = self.kept.get(f.entry.fino, 0) + r.length
        f.offsets = [o for o in f.offsets if o not in kept]

    def _changed(self, entry: FileEntry, why: str) -> None:
        """A held file could not be sent as announced: its FILE_END says why."""
        self._file_end(FileEnd(entry.fino, STATUS_FAILED, 0, NO_DIGEST, why))

    # --- files ---------------------------------------------------------------------------
    def _send_inline(self, item: SourceItem, announced: FileEntry | None = None) -> None:
        """Read a small file whole; entry, block and FILE_END go out on the metadata stream
        (the entry only when it was not `announced` already)."""
        assert self._inline is not None
        data = b""
        error: TransferIOError | None = None
        if self.dummy:
            st = item.st
            data = bytes(st.st_size)
        else:
            try:
                fd, st = open_source(item.path)
            except TransferIOError as exc:
                if announced is not None:
                    self._changed(announced, exc.message)
                else:
                    self._problem(SourceProblem(exc))
                return
            try:
                if announced is not None and not same_source(item.st, st):
                    st = item.st
                    error = TransferIOError("source file changed during the transfer", path=item.path)
                elif st.st_size > self.inline_max:
                    # grew since the walk: fail this one file; never read it whole, never send
                    # a block larger than the block size (OP-17)
                    st = item.st
                    error = TransferIOError("source file changed during the transfer", path=item.path)
                else:  # one byte more than expected: growth after fstat shows as a length mismatch
                    data = os.pread(fd, st.st_size + 1, 0) if st.st_size else b""
                    if len(data) != st.st_size or not same_source(st, os.fstat(fd)):
                        error = TransferIOError("source file changed during the transfer", path=item.path)
            except OSError as exc:
                error = TransferIOError(f"read error: {exc.strerror}", path=item.path)
            finally:
                os.close(fd)
        entry = announced if announced is not None else self._entry(item, st, st.st_size)
        if announced is None:
            self._announce(entry, item.path)
        if error is not None:
            self._file_end(FileEnd(entry.fino, STATUS_FAILED, 0, NO_DIGEST, error.message))
            return
        if not data or (self.sparse and data.count(0) == len(data)):
            digest = FileDigest(entry.fino, entry.size).digest() if self.checksums else NO_DIGEST
            if self.record_content:
                self.content[entry.fino] = content_digest(entry.size, self.block_size, {})
            self._file_end(FileEnd(entry.fino, STATUS_OK, 0, digest))
            return
        block = block_digest(data, 0) if self.checksums else NO_DIGEST
        if self.record_content:
            self.content[entry.fino] = content_digest(entry.size, self.block_size, {0: block})
        self._inline(InlineBlock(entry.fino, data))
        digest = NO_DIGEST
        if self.checksums:
            fd_digest = FileDigest(entry.fino, entry.size)
            fd_digest.add(0, len(data), block)
            digest = fd_digest.digest()
        self._file_end(FileEnd(entry.fino, STATUS_OK, 1, digest))

    def _entry(self, item: SourceItem, st: os.stat_result, size: int) -> FileEntry:
        entry = FileEntry(
            fino=self.next_fino,
            name=item.name,
            kind=item.kind,
            mode=st.st_mode & 0o7777,
            size=size,
            uid=st.st_uid if self.preserve_ids else 0,
            gid=st.st_gid if self.preserve_ids else 0,
            atime_ns=st.st_atime_ns,
            mtime_ns=st.st_mtime_ns,
        )
        self.next_fino += 1
        return entry

    def _open(self, item: SourceItem, announced: FileEntry | None = None) -> OpenFile | None:
        """Open a big file (announce it, unless it was `announced` already)."""
        if self.dummy:
            fd, st = -1, item.st
        else:
            try:
                fd, st = open_source(item.path)
            except TransferIOError as exc:
                if announced is not None:
                    self._changed(announced, exc.message)
                else:
                    self._problem(SourceProblem(exc))
                return None
            if announced is not None and not same_source(item.st, st):
                os.close(fd)
                self._changed(announced, "source file changed during the transfer")
                return None
        size = st.st_size
        if self.sparse and fd >= 0:
            offsets = data_block_offsets(fd, size, self.block_size)
        else:
            offsets = list(range(0, size, self.block_size))
        entry = announced if announced is not None else self._entry(item, st, size)
        f = OpenFile(entry, item.path, fd, st if fd >= 0 else None, offsets, FileDigest(entry.fino, size))
        if fd >= 0 and offsets and wants_direct(self.direct, fd, size):
            f.dfd = open_direct(item.path, st)
        self.files[entry.fino] = f
        if announced is None:
            self._announce(entry, item.path)
        assert entry.kind == KIND_FILE
        return f

    def block_done(self, job: BlockJob, digest: bytes | None, error: TransferIOError | None = None) -> None:
        """A worker finished a job: digest None means the block was not sent (skipped)."""
        f = job.file
        with f.lock:
            if error is not None and f.error is None:
                f.error = error
            if digest is not None:
                f.sent_blocks += 1
                if self.checksums:
                    f.digest.add(job.offset, job.length, digest)
        with self._lock:
            f.outstanding -= 1
            last = f.outstanding == 0 and f.dispatched_all
        if last:
            self._finish(f)

    def cancel(self, fino: int) -> None:
        """The receiver failed or skipped this file: hand out no more of its blocks (a held
        file is dropped unsent)."""
        with self._ready:
            dropped = self._held.pop(fino, None) is not None
            if dropped:
                self._ready.notify_all()
        if dropped:
            if self._on_room is not None:
                self._on_room()  # the walk may go on, or the session end
            return
        f = self.files.get(fino)
        if f is not None:
            with self._lock:
                f.cancelled = True
                last = f.outstanding == 0
                self._ready.notify_all()
            if last and not f.closed:
                self._finish(f)

    def _finish(self, f: OpenFile) -> None:
        with f.lock:
            if f.closed:
                return
            if f.error is None and not f.cancelled and f.st is not None:
                try:
                    now = os.fstat(f.fd)
                    if now.st_nlink == 0:  # deleted, or its name now points at something else
                        f.error = TransferIOError("source file vanished during the transfer", path=f.path)
                    elif not same_source(f.st, now):
                        f.error = TransferIOError("source file changed during the transfer", path=f.path)
                except OSError as exc:
                    f.error = TransferIOError(f"cannot stat source: {exc.strerror}", path=f.path)
            if f.fd >= 0:
                os.close(f.fd)
            if f.dfd >= 0:
                os.close(f.dfd)
                f.dfd = -1
            f.fd = -1
            f.closed = True
        if f.error is not None or f.cancelled:
            msg = f.error.message if f.error is not None else "cancelled after a receiver error"
            self._file_end(FileEnd(f.entry.fino, STATUS_FAILED, f.sent_blocks, NO_DIGEST, msg))
        else:
            digest = f.digest.digest() if self.checksums else NO_DIGEST
            if self.record_content:
                self.content[f.entry.fino] = content_digest(f.entry.size, self.block_size, f.digest.block_digests())
            self._file_end(FileEnd(f.entry.fino, STATUS_OK, f.sent_blocks, digest))
        # only now may the session end be sent: its FILE_END is queued (or already out)
        self.files.pop(f.entry.fino, None)
