"""Read stage: open sources safely and read blocks into reused buffers.

Sources are opened O_NONBLOCK (a FIFO swapped in after the stat can never hang us)
and must be regular files by fstat. Blocks are read with os.preadv straight into the
caller's preallocated frame buffer; a short read means the source shrank. With
--sparse, SEEK_DATA/SEEK_HOLE finds the blocks that hold data so holes are never read.
With the posix engine and O_DIRECT available, aligned parts are read through a second
O_DIRECT fd (engine/directio.py). The dummy engine reads nothing (the buffer keeps its zero pattern) to measure the
network alone.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import TransferIOError
from . import faults
from .directio import direct_span, pread_direct

SEQUENTIAL_HINT_MIN = 8 << 20


class SourceChanged(TransferIOError):
    pass


def open_source(path: bytes) -> tuple[int, os.stat_result]:
    """Open a regular file for reading; TransferIOError with a clear cause otherwise."""
    try:
        if faults.ACTIVE:
            faults.inject("open", path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise TransferIOError(f"cannot open source: {exc.strerror}", path=path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TransferIOError("not a regular file (skipped)", path=path)
        # O_NONBLOCK has no effect on regular files; it only kept a swapped-in FIFO from blocking
        if st.st_size >= SEQUENTIAL_HINT_MIN:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def read_block(fd: int, buf: memoryview, offset: int, length: int, path: bytes, dfd: int = -1) -> bool:
    """Fill buf[:length] from the file at offset; SourceChanged if the file is shorter.

    With an O_DIRECT fd (dfd), the aligned leading part is read through it and the rest
    through fd. Returns False when dfd refused the read (EINVAL): stop using it.
    """
    got = 0
    direct_ok = True
    if dfd >= 0 and not faults.ACTIVE:  # the test fault hook sees every read through fd
        span = direct_span(offset, length)
        if span:
            try:
                k = pread_direct(dfd, buf[:span], offset)
            except OSError as exc:
                raise TransferIOError(f"read error: {exc.strerror}", path=path) from None
            if k < 0:
                direct_ok = False
            else:
                got = k
    while got < length:
        try:
            if faults.ACTIVE and faults.inject("read", path) == faults.SHORT:
                n = os.preadv(fd, [buf[got : got + max(1, (length - got) // 2)]], offset + got)
            else:
                n = os.preadv(fd, [buf[got:length]], offset + got)
        except InterruptedError:
            continue
        except OSError as exc:
            raise TransferIOError(f"read error: {exc.strerror}", path=path) from None
        if n == 0:
            raise SourceChanged("source file shrank during the transfer", path=path)
        got += n
    return direct_ok


def data_block_offsets(fd: int, size: int, block: int) -> list[int]:
    """Offsets (multiples of block) of the blocks that contain data, via SEEK_DATA/SEEK_HOLE."""
    offsets: list[int] = []
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                break
            return list(range(0, size, block))  # filesystem without SEEK_DATA: read everything
        if data >= size:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        first = data - data % block
        start = max(first, offsets[-1] + block if offsets else 0)
        offsets.extend(range(start, hole, block))
        pos = hole
    return offsets


def same_source(before: os.stat_result, after: os.stat_result) -> bool:
    """True when nothing about the file changed while it was read: size, mtime, ctime (any
    write or metadata change, even with a restored mtime), inode, and link count (a source
    unlinked during the transfer has vanished)."""
    def key(st: os.stat_result) -> tuple[int, ...]:
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_nlink)

    return key(before) == key(after)
