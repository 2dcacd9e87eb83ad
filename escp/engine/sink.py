"""The receiver's files: where received blocks go, and how a finished file is published.

A FileStore stands for the destination of one session. With the posix engine it wraps
the DestinationTree (writer.py: containment, temp files, rename into place); with the
dummy engine it has no tree and writes nothing, but peer names are still checked
(OP-19) and digests still computed. Each regular file being received has one Sink: its
temp file, its running file digest, and a lock that lets one pwrite at a time reach
the file (see Sink.wlock). With --resume the temp file has a stable name and a resume
record next to it (engine/resume.py): `resume_offer` takes over what an earlier session
verified, `note_written` keeps the record up to date, `keep` leaves both behind for the
next run instead of removing them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ProtocolError, TransferIOError
from ..paths import split_peer_name
from ..protocol.bootstrap import SessionInit
from ..protocol.messages import FileEntry, KeptRange, check_offer
from ..protocol.receiver_core import Existing
from . import faults, resume
from .checksum import FileDigest, fd_block_digests, fd_content_digest, range_digest
from .writer import DestinationPlan, DestinationTree, plan_destination, pwrite_all, pwrite_sparse

NO_FD = -1  # a Sink without an open file (dummy engine, or closed)
Parts = tuple[bytes, ...]


@dataclass
class Sink:
    fd: int
    tmp: bytes  # the temp file's name in its directory
    digest: FileDigest
    display: bytes  # the final path, for messages
    # one pwrite at a time per file: the kernel serialises writes to one inode anyway
    # (ext4, xfs), and waiting here sleeps where the inode lock would spin on the CPU the
    # other stages need (measured: rwsem_spin_on_owner ~10% of CPU with 2 streams on 2 cores)
    wlock: threading.Lock = field(default_factory=threading.Lock)
    since_record: int = 0  # --resume: blocks written since the last resume record


class FileStore:
    def __init__(self, tree: DestinationTree | None, *, sparse: bool, preserve: bool, fsync: bool,
                 resumable: bool = False, block_size: int = 0) -> None:
        self.tree = tree  # None: the dummy engine
        self.sparse = sparse
        self.preserve = preserve
        self.fsync = fsync
        self.resumable = resumable and tree is not None  # --resume
        self.block_size = block_size
        self._record_lock = threading.Lock()

    @classmethod
    def for_session(cls, init: SessionInit) -> FileStore:
        """The session's destination, planned by scp's rules (UsageError when they cannot be
        met); nothing is planned for the dummy engine."""
        flags = init.session_flags
        tree = None
        if init.rx_engine != "dummy":
            umask = os.umask(0o022)
            os.umask(umask)
            plan = plan_destination(init.dest_path, init.top_level_count, flags.top_dir, flags.dest_dir)
            tree = DestinationTree(plan, init.session_id, umask, flags.preserve)
        return cls(tree, sparse=flags.sparse, preserve=flags.preserve, fsync=flags.fsync, resumable=flags.resume,
                   block_size=init.block_size)

    @property
    def plan(self) -> DestinationPlan | None:
        return self.tree.plan if self.tree is not None else None

    # --- names ---------------------------------------------------------------------------
    def map_name(self, name: bytes) -> Parts:
        """A peer name as destination components (containment checked, scp rename applied)."""
        return self.tree.map_name(name) if self.tree is not None else split_peer_name(name)

    def display(self, parts: Parts, fallback: bytes) -> bytes:
        return self.tree.display(parts) if self.tree is not None else fallback

    # --- directories ---------------------------------------------------------------------------
    def make_dir(self, parts: Parts, entry: FileEntry) -> None:
        if self.tree is not None:
            self.tree.make_dir(parts, entry.mode, entry.atime_ns, entry.mtime_ns,
                               (entry.uid, entry.gid) if self.preserve else None)

    def finish_dirs(self) -> list[TransferIOError]:
        return self.tree.finish_dirs() if self.tree is not None else []

    # --- what is there already (--skip-existing) -----------------------------------------------
    def existing(self, parts: Parts, block_size: int, digest_needed: Callable[[int], bool]) -> Existing | None:
        """The regular file at parts' final name (symlinks never followed), with its content
        digest when `digest_needed(size)`; None when there is none or it cannot be read."""
        if self.tree is None:
            return None
        fd = self.tree.open_existing(parts)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            digest = None
            if digest_needed(st.st_size):
                size, digest = fd_content_digest(fd, block_size)
                if size != st.st_size:
                    return None  # it changed while it was read
            return Existing(st.st_size, st.st_mtime_ns, digest)
        except OSError:
            return None
        finally:
            os.close(fd)

    # --- files -----------------------------------------------------------------------------------
    def open(self, parts: Parts, entry: FileEntry) -> Sink:
        """A new sink for a file (its temp file); TransferIOError when it cannot be made."""
        digest = FileDigest(entry.fino, entry.size)
        if self.tree is None:
            return Sink(NO_FD, b"", digest, entry.name)
        fd, tmp = self.tree.create_temp(parts, self.resumable)
        return Sink(fd, tmp, digest, self.tree.display(parts))

    # --- --resume ------------------------------------------------------------------------------
    def resume_offer(self, parts: Parts, entry: FileEntry,
                     tick: Callable[[], None] | None = None) -> tuple[Sink, tuple[KeptRange, ...]] | None:
        """Take over what an earlier session left for this file: its sink (the kept temp
        file, with the block digests of the kept ranges already in its file digest) and the
        ranges to offer. Only when the record is intact and belongs to this file (name,
        block size, the source's size and mtime) and every range of the temp file still has
        the digest the record says; otherwise both are removed and None returned: the file
        starts from zero (FT-16). The kept ranges are read whole here."""
        if self.tree is None:
            return None
        record = resume.decode(self.tree.read_record(parts))
        opened = self.tree.open_kept(parts)
        if opened is None:
            if record is not None:
                self.tree.forget(parts, kept_temp=False)  # a record without its temp file
            return None
        fd, tmp = opened
        digest = FileDigest(entry.fino, entry.size)
        if record is not None and self._consistent(record, parts, entry, fd, digest, tick):
            return Sink(fd, tmp, digest, self.tree.display(parts)), record.ranges
        os.close(fd)
        self.tree.forget(parts, kept_temp=True)
        return None

    def _consistent(self, record: resume.ResumeRecord, parts: Parts, entry: FileEntry, fd: int, digest: FileDigest,
                    tick: Callable[[], None] | None) -> bool:
        """The record is this file's, and the temp file still holds what it says (the
        digests of its ranges go into `digest`)."""
        bs = self.block_size
        if (record.block_size, record.size, record.mtime_ns, record.name) != (bs, entry.size, entry.mtime_ns,
                                                                               parts[-1]) or not record.ranges:
            return False
        try:
            check_offer(record.ranges, entry.size, bs)
        except ProtocolError:
            return False
        for kept in record.ranges:
            try:
                blocks = fd_block_digests(fd, kept.offset, kept.length, bs, tick)
            except OSError:
                return False
            if blocks is None or range_digest(blocks) != kept.digest:
                return False
            for offset, length, d in blocks:
                digest.add(offset, length, d)
        return True

    def note_written(self, parts: Parts, sink: Sink, entry: FileEntry) -> None:
        """--resume: a block of the file is written; now and then its record is renewed."""
        if not self.resumable:
            return
        with self._record_lock:
            sink.since_record += 1
            if resume.due(sink.digest.blocks, sink.since_record):
                self._save(parts, sink, entry)

    def _save(self, parts: Parts, sink: Sink, entry: FileEntry) -> None:
        """Write the record of what sink's temp file holds (best effort: without it the next
        run starts the file from zero)."""
        assert self.tree is not None
        sink.since_record = 0
        ranges = resume.runs(sink.digest.block_digests(), entry.size, self.block_size)
        record = resume.ResumeRecord(self.block_size, entry.size, entry.mtime_ns, parts[-1], ranges)
        try:
            self.tree.write_record(parts, resume.encode(record))
        except (OSError, TransferIOError):
            pass

    def keep(self, parts: Parts, sink: Sink, entry: FileEntry) -> None:
        """--resume, the session ends with the file unfinished: record it and leave the temp
        file for the next run (a file with no block written leaves nothing)."""
        if sink.fd == NO_FD:
            return
        if not self.resumable or not sink.digest.blocks:
            self.discard(parts, sink)
            return
        with sink.wlock, self._record_lock:  # no write of a stream is half done (or starts) on this fd
            self._save(parts, sink, entry)
            os.close(sink.fd)
            sink.fd = NO_FD

    def write(self, sink: Sink, data: memoryview, offset: int) -> None:
        """Write one block at its offset (OSError on failure)."""
        if sink.fd == NO_FD:
            return
        with sink.wlock:
            if self.sparse:
                pwrite_sparse(sink.fd, data, offset)
            else:
                pwrite_all(sink.fd, data, offset, sink.display if faults.ACTIVE else b"")

    def publish(self, parts: Parts, sink: Sink, entry: FileEntry) -> None:
        """Size, metadata, rename over the final name (TransferIOError on failure)."""
        if self.tree is None or sink.fd == NO_FD:
            return
        times = (entry.atime_ns, entry.mtime_ns) if self.preserve else None
        owner = (entry.uid, entry.gid) if self.preserve else None
        self.tree.publish(parts, sink.fd, sink.tmp, entry.size, entry.mode, times, owner, self.fsync)
        os.close(sink.fd)
        sink.fd = NO_FD
        if self.resumable:
            self.tree.forget(parts, kept_temp=False)

    def discard(self, parts: Parts, sink: Sink) -> None:
        """Close and remove a sink's temp file (once: a closed sink is left alone)."""
        if sink.fd == NO_FD:
            return
        os.close(sink.fd)
        sink.fd = NO_FD
        if self.tree is not None:
            self.tree.discard(parts, sink.tmp)
            if self.resumable:
                self.tree.forget(parts, kept_temp=False)

    def close(self) -> None:
        if self.tree is not None:
            self.tree.close()
