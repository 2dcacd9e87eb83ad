"""Block scheduler of the sender: files in, (file, offset, length) jobs out.

All stream workers pull from one scheduler, so a big file is read by every stream at
once and small files spread over the streams. The scheduler opens a file when it
first hands out one of its blocks and closes it when its last block is done, so open
files stay bounded by the number of streams. Each new file's list entry is queued for
the metadata stream before any of its blocks is handed out; its FILE_END is queued
after its last block, with the file digest (or the reason it failed at the source).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import TransferIOError
from ..protocol.messages import FileEnd, FileEntry
from ..protocol.wire import KIND_DIR, KIND_FILE, STATUS_FAILED, STATUS_OK
from .checksum import NO_DIGEST, FileDigest
from .reader import data_block_offsets, open_source, same_source
from .sources import SourceItem, SourceProblem


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
    ) -> None:
        self._items = items
        self.block_size = block_size
        self.sparse = sparse
        self.dummy = dummy
        self.checksums = checksums
        self._announce = announce
        self._file_end = file_end
        self._problem = problem
        self.preserve_ids = preserve_ids
        self._lock = threading.Lock()
        self._current: OpenFile | None = None
        self._exhausted = False
        self.next_fino = 0
        self.files: dict[int, OpenFile] = {}

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def next_job(self) -> BlockJob | None:
        with self._lock:
            while True:
                cur = self._current
                if cur is not None and not cur.dispatched_all:
                    off = cur.offsets[cur.next_index]
                    cur.next_index += 1
                    cur.outstanding += 1
                    return BlockJob(cur, off, min(self.block_size, cur.entry.size - off))
                if self._exhausted:
                    return None
                self._advance()

    def _advance(self) -> None:
        """With the lock held: open and announce the next source."""
        self._current = None
        for item in self._items:
            if isinstance(item, SourceProblem):
                self._problem(item)
                continue
            if item.kind == KIND_DIR:
                self._announce(self._entry(item, item.st, 0), item.path)
                continue
            opened = self._open(item)
            if opened is None:
                continue
            self._current = opened
            if not opened.offsets:
                self._finish(opened)
            return
        self._exhausted = True

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

    def _open(self, item: SourceItem) -> OpenFile | None:
        if self.dummy:
            fd, st = -1, item.st
        else:
            try:
                fd, st = open_source(item.path)
            except TransferIOError as exc:
                self._problem(SourceProblem(exc))
                return None
        size = st.st_size
        if self.sparse and fd >= 0:
            offsets = data_block_offsets(fd, size, self.block_size)
        else:
            offsets = list(range(0, size, self.block_size))
        entry = self._entry(item, st, size)
        f = OpenFile(entry, item.path, fd, st if fd >= 0 else None, offsets, FileDigest(entry.fino, size))
        self.files[entry.fino] = f
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
        """The receiver failed this file: hand out no more of its blocks."""
        f = self.files.get(fino)
        if f is not None:
            with self._lock:
                f.cancelled = True
                last = f.outstanding == 0
            if last and f.fd != -2:
                self._finish(f)

    def _finish(self, f: OpenFile) -> None:
        with f.lock:
            if f.fd == -2:  # already finished
                return
            if f.error is None and not f.cancelled and f.st is not None:
                try:
                    now = os.fstat(f.fd)
                    if not same_source(f.st, now):
                        f.error = TransferIOError("source file changed during the transfer", path=f.path)
                    elif now.st_nlink == 0:  # deleted, or its name now points at something else
                        f.error = TransferIOError("source file vanished during the transfer", path=f.path)
                except OSError as exc:
                    f.error = TransferIOError(f"cannot stat source: {exc.strerror}", path=f.path)
            if f.fd >= 0:
                os.close(f.fd)
            f.fd = -2
        self.files.pop(f.entry.fino, None)
        if f.error is not None or f.cancelled:
            msg = f.error.message if f.error is not None else "cancelled after a receiver error"
            self._file_end(FileEnd(f.entry.fino, STATUS_FAILED, f.sent_blocks, NO_DIGEST, msg))
        else:
            digest = f.digest.digest() if self.checksums else NO_DIGEST
            self._file_end(FileEnd(f.entry.fino, STATUS_OK, f.sent_blocks, digest))
