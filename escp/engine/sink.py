"""The receiver's files: where received blocks go, and how a finished file is published.

A FileStore stands for the destination of one session. With the posix engine it wraps
the DestinationTree (writer.py: containment, temp files, rename into place); with the
dummy engine it has no tree and writes nothing, but peer names are still checked
(OP-19) and digests still computed. Each regular file being received has one Sink: its
temp file, its running file digest, and a lock that lets one pwrite at a time reach
the file (see Sink.wlock).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from ..errors import TransferIOError
from ..paths import split_peer_name
from ..protocol.bootstrap import SessionInit
from ..protocol.messages import FileEntry
from . import faults
from .checksum import FileDigest
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


class FileStore:
    def __init__(self, tree: DestinationTree | None, *, sparse: bool, preserve: bool, fsync: bool) -> None:
        self.tree = tree  # None: the dummy engine
        self.sparse = sparse
        self.preserve = preserve
        self.fsync = fsync

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
        return cls(tree, sparse=flags.sparse, preserve=flags.preserve, fsync=flags.fsync)

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

    # --- files -----------------------------------------------------------------------------------
    def open(self, parts: Parts, entry: FileEntry) -> Sink:
        """A new sink for a file (its temp file); TransferIOError when it cannot be made."""
        digest = FileDigest(entry.fino, entry.size)
        if self.tree is None:
            return Sink(NO_FD, b"", digest, entry.name)
        fd, tmp = self.tree.create_temp(parts)
        return Sink(fd, tmp, digest, self.tree.display(parts))

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

    def discard(self, parts: Parts, sink: Sink) -> None:
        """Close and remove a sink's temp file (once: a closed sink is left alone)."""
        if sink.fd == NO_FD:
            return
        os.close(sink.fd)
        sink.fd = NO_FD
        if self.tree is not None:
            self.tree.discard(parts, sink.tmp)

    def close(self) -> None:
        if self.tree is not None:
            self.tree.close()
