"""Direct I/O support (the posix engine): page-aligned frame buffers and O_DIRECT reads.

A stream worker's frame buffer is one anonymous mmap (page-aligned by construction):
the block's data starts on a page boundary and the frame header sits right before it,
so header + data stay contiguous for encryption and the data can be read with
O_DIRECT without a copy. O_DIRECT is an optimisation only: it is tried per file
(EINVAL from open, e.g. on tmpfs, means "not supported"), used only for whole,
aligned pieces, and the tail of a file that is not a multiple of DIRECT_ALIGN is read
through the ordinary page-cache fd. Any EINVAL at read time disables it for the file.
"""

from __future__ import annotations

import errno
import mmap
import os

DIRECT_ALIGN = 4096  # offset, length and buffer alignment used for O_DIRECT
O_DIRECT = getattr(os, "O_DIRECT", 0)


class FrameBuffer:
    """`plain` = header + data (contiguous); `data` starts on a page boundary."""

    def __init__(self, header_len: int, block_size: int) -> None:
        if header_len > mmap.PAGESIZE:
            raise ValueError("header longer than a page")
        size = mmap.PAGESIZE + block_size + DIRECT_ALIGN
        self._map = mmap.mmap(-1, size)
        view = memoryview(self._map)
        start = mmap.PAGESIZE - header_len
        self.plain = view[start : mmap.PAGESIZE + block_size]
        self.data = view[mmap.PAGESIZE : mmap.PAGESIZE + block_size]
        self.header_len = header_len

    def release(self) -> None:
        self.plain.release()
        self.data.release()
        self._map.close()


def open_direct(path: bytes, like: os.stat_result) -> int:
    """A second, O_DIRECT fd of the same file; -1 when O_DIRECT is unavailable."""
    if not O_DIRECT:
        return -1
    try:
        fd = os.open(path, os.O_RDONLY | O_DIRECT | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return -1  # EINVAL: the filesystem refuses O_DIRECT; anything else: the page-cache fd decides
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (like.st_dev, like.st_ino):
            os.close(fd)  # swapped under us: use only the verified fd
            return -1
    except OSError:
        os.close(fd)
        return -1
    return fd


# the page-cache probe of `auto`: this many bytes at a few places of the file
PROBE_LEN = 4096
PROBE_POINTS = 4


def wants_direct(mode: str, fd: int, size: int) -> bool:
    """Whether to read this file with O_DIRECT: mode `always`, `never`, or `auto`.

    `auto` reads through the page cache when the file is already there (every probe at
    PROBE_POINTS evenly spaced offsets succeeds with RWF_NOWAIT, which refuses to wait for
    the device) and with O_DIRECT otherwise: hot files are copied at memory speed, cold
    big files do not push everything else out of the cache. Small files (< 1 MiB) and
    kernels without RWF_NOWAIT use the page cache."""
    if mode == "always":
        return True
    if mode != "auto" or size < (1 << 20):
        return False
    nowait = getattr(os, "RWF_NOWAIT", 0)
    if not nowait:
        return False
    view = memoryview(bytearray(PROBE_LEN))
    step = size // PROBE_POINTS
    for k in range(PROBE_POINTS):
        try:
            got = os.preadv(fd, [view], min(k * step, size - PROBE_LEN), nowait)
        except BlockingIOError:
            return True  # not cached: the device would be read
        except OSError:
            return False  # RWF_NOWAIT unsupported here (EOPNOTSUPP, EINVAL): stay with the page cache
        if got <= 0:
            return False
    return False


def direct_span(offset: int, length: int) -> int:
    """How many leading bytes of a piece at offset may be read with O_DIRECT."""
    if offset % DIRECT_ALIGN:
        return 0
    return length - length % DIRECT_ALIGN


def pread_direct(dfd: int, buf: memoryview, offset: int) -> int:
    """Read buf (aligned length) at offset through the O_DIRECT fd; bytes read, or -1 for EINVAL."""
    got = 0
    n = len(buf)
    while got < n:
        try:
            k = os.preadv(dfd, [buf[got:]], offset + got)
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return -1
            raise
        if k == 0:
            break
        got += k
        if got % DIRECT_ALIGN:
            break  # short read at end of file: let the caller finish with the page-cache fd
    return got
