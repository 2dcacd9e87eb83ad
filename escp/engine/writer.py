"""Write stage: the receiver's destination tree, temp files, pwrite and publish.

The destination root is opened once (the operator-given path may be a symlink). Every
peer-derived component below it is opened with O_NOFOLLOW relative to its parent's
directory fd, so a planted symlink is never followed and nothing is written outside
the root. A file is written to `.NAME.escp-SESSION.part` (O_EXCL, mode 0600) in its
final directory and renamed over the final name only after all blocks arrived and the
digest matched; metadata is applied through the open fd; setuid/setgid bits are
stripped unless running as root with --preserve. With --sparse only non-zero pages are
written and the final size is set with ftruncate, so holes stay holes.
A temp file is flock()ed while its
session lives; temp files of killed sessions (unlocked, untouched for STALE_AGE s) are
removed by the next session that writes into the same directory (sweep_stale).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..errors import ProtocolError, TransferIOError, UsageError
from ..paths import split_peer_name
from . import faults, resume

DIR_FD_CACHE = 32
STALE_AGE = 10.0  # seconds a dead session's temp file must be untouched before a sweep removes it
TEMP_MODE = 0o600  # a temp file's mode until publish gives it its final one
EAGAIN_RETRIES = 100  # a regular file should never say EAGAIN; retry a little, then fail
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def io_error(exc: OSError, what: str, path: bytes) -> TransferIOError:
    cause = "no space left on device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
    return TransferIOError(f"{what}: {cause}", path=path)


@dataclass(frozen=True)
class DestinationPlan:
    root: bytes  # directory that receives the top-level names
    rename_from: bytes | None  # the single top-level name to replace ...
    rename_to: bytes | None  # ... by the destination's base name (scp rule)
    dest_is_dir: bool


def plan_destination(dest: bytes, top_level_count: int, top_is_dir: bool,
                     must_be_dir: bool = False) -> DestinationPlan:
    """Apply scp's destination rules; UsageError when they cannot be met.

    A destination that ends in a slash is a directory: when it does not exist it is created
    (its parent must exist), as rsync does, and the sources go inside it."""
    dest = dest or b"."
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"cannot access destination: {exc.strerror}", path=dest) from None
    if st is None and dest.endswith(b"/"):
        make_dest_dir(dest)
        return DestinationPlan(dest, None, None, True)
    if st is not None and stat.S_ISDIR(st.st_mode):
        return DestinationPlan(dest, None, None, True)
    if must_be_dir:
        raise UsageError("destination must be an existing directory (with --filelist)", path=dest)
    if top_level_count != 1:
        why = "is not a directory" if st is not None else "does not exist (several sources need a directory)"
        raise UsageError(f"destination {why}", path=dest)
    if st is not None and top_is_dir:
        raise UsageError("destination is not a directory", path=dest)
    parent, base = os.path.split(dest.rstrip(b"/") or dest)
    parent = parent or b"."
    if not base or base in (b".", b".."):
        raise UsageError("destination has no usable name", path=dest)
    try:
        if not stat.S_ISDIR(os.stat(parent).st_mode):
            raise UsageError("destination parent is not a directory", path=parent)
    except OSError as exc:
        raise UsageError(f"destination parent: {exc.strerror}", path=parent) from None
    return DestinationPlan(parent, b"", base, False)


def make_dest_dir(dest: bytes) -> None:
    """Create the directory a trailing slash asked for (one level, the umask applies)."""
    try:
        os.mkdir(dest)
    except FileExistsError:
        if not os.path.isdir(dest):
            raise UsageError("destination is not a directory", path=dest) from None
    except OSError as exc:
        why = "parent directory does not exist" if exc.errno == errno.ENOENT else exc.strerror
        raise UsageError(f"cannot create destination directory: {why}", path=dest) from None


class DestinationTree:
    """Holds the root fd and a small cache of directory fds below it; thread-safe."""

    def __init__(self, plan: DestinationPlan, session_id: int, umask: int, preserve: bool) -> None:
        self.plan = plan
        self.session_tag = f"{session_id:016x}".encode()
        self.umask = umask
        self.preserve = preserve
        self.is_root = os.geteuid() == 0
        try:
            self.root_fd = os.open(plan.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise UsageError(f"cannot open destination: {exc.strerror}", path=plan.root) from None
        self._rename_from = plan.rename_from
        self._dirs: OrderedDict[tuple[bytes, ...], int] = OrderedDict()
        self._lock = threading.RLock()  # held while any cached dir fd is in use
        # parts, mode, atime, mtime, (uid, gid) or None: applied by finish_dirs after the contents
        self.created_dirs: list[tuple[tuple[bytes, ...], int, int, int, tuple[int, int] | None]] = []
        self._swept: set[tuple[bytes, ...]] = set()

    # --- names -------------------------------------------------------------------
    def map_name(self, name: bytes) -> tuple[bytes, ...]:
        """Peer name -> destination components, after the containment check and scp rename."""
        parts = split_peer_name(name)
        if self.plan.rename_to is not None:
            if self._rename_from == b"":
                self._rename_from = parts[0]
            if parts[0] != self._rename_from:
                raise ProtocolError("name outside the single announced top-level item", path=name)
            parts = (self.plan.rename_to, *parts[1:])
        return parts

    def display(self, parts: tuple[bytes, ...]) -> bytes:
        return os.path.join(self.plan.root, *parts)

    def final_mode(self, mode: int, is_dir: bool) -> int:
        if self.preserve:
            keep = 0o7777 if self.is_root else 0o1777
            return mode & keep
        return mode & 0o777 & ~self.umask

    # --- directories -------------------------------------------------------------
    def dir_fd(self, parts: tuple[bytes, ...]) -> int:
        """fd of the directory root/parts, walked component by component with O_NOFOLLOW."""
        with self._lock:
            if not parts:
                return self.root_fd
            fd = self._dirs.get(parts)
            if fd is not None:
                self._dirs.move_to_end(parts)
                return fd
            parent = self.dir_fd(parts[:-1])
            try:
                fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise TransferIOError("path component is not a directory (symlinks are not followed)",
                                          path=self.display(parts)) from None
                raise io_error(exc, "cannot open directory", self.display(parts)) from None
            self._dirs[parts] = fd
            while len(self._dirs) > DIR_FD_CACHE:
                _, old = self._dirs.popitem(last=False)
                os.close(old)
            return fd

    def make_dir(self, parts: tuple[bytes, ...], mode: int, atime_ns: int, mtime_ns: int,
                 owner: tuple[int, int] | None = None) -> None:
        with self._lock:
            self._make_dir(parts, mode, atime_ns, mtime_ns, owner)

    def _make_dir(self, parts: tuple[bytes, ...], mode: int, atime_ns: int, mtime_ns: int,
                  owner: tuple[int, int] | None) -> None:
        parent = self.dir_fd(parts[:-1])
        try:
            if faults.ACTIVE:
                faults.inject("mkdir", self.display(parts))
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
            self.created_dirs.append((parts, mode, atime_ns, mtime_ns, owner))
        except FileExistsError:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise TransferIOError("exists and is not a directory", path=self.display(parts)) from None
            if self.preserve:
                self.created_dirs.append((parts, mode, atime_ns, mtime_ns, owner))
        except OSError as exc:
            raise io_error(exc, "cannot create directory", self.display(parts)) from None

    def finish_dirs(self) -> list[TransferIOError]:
        """Apply modes (and times with --preserve) to directories, deepest first."""
        errors: list[TransferIOError] = []
        with self._lock:
            self._finish_dirs(errors)
        return errors

    def _finish_dirs(self, errors: list[TransferIOError]) -> None:
        for parts, mode, atime_ns, mtime_ns, owner in sorted(self.created_dirs, key=lambda d: -len(d[0])):
            try:
                fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=self.dir_fd(parts[:-1]))
                try:
                    if owner is not None and self.preserve and self.is_root:
                        os.fchown(fd, *owner)
                    os.fchmod(fd, self.final_mode(mode, True))
                    if self.preserve:
                        os.utime(fd, ns=(atime_ns, mtime_ns))
                finally:
                    os.close(fd)
            except (OSError, TransferIOError) as exc:
                if isinstance(exc, OSError):
                    exc = io_error(exc, "cannot set directory attributes", self.display(parts))
                errors.append(exc)

    # --- files -------------------------------------------------------------------
    def temp_name(self, base: bytes) -> bytes:
        return b"." + base[:180] + b".escp-" + self.session_tag + b".part"

    def create_temp(self, parts: tuple[bytes, ...], resumable: bool = False) -> tuple[int, bytes]:
        """(file fd, temp name) of a new temp file for parts (`resumable`: under the stable
        name of --resume, engine/resume.py).

        The temp file is flock()ed for its whole life, which tells other sessions it is in
        use; the first temp file this session creates in a directory sweeps that directory
        of stale temp files left by sessions that were killed (see sweep_stale)."""
        tmp = resume.temp_name(parts[-1]) if resumable else self.temp_name(parts[-1])
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._lock:
            try:
                if faults.ACTIVE:
                    faults.inject("create", self.display(parts))
                parent = self.dir_fd(parts[:-1])
                # 0600 while partial: nobody else reads a file that is not verified yet; its final
                # mode is applied at publish, just before the rename
                fd = os.open(tmp, flags, TEMP_MODE, dir_fd=parent)
            except OSError as exc:
                raise io_error(exc, "cannot create file", self.display(parts)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass  # a filesystem without flock: the age rule alone protects the file
            if parts[:-1] not in self._swept:
                self._swept.add(parts[:-1])
                sweep_stale(parent, self.session_tag)
        return fd, tmp

    def open_existing(self, parts: tuple[bytes, ...]) -> int | None:
        """A read-only fd of the regular file at parts' final name, or None when there is
        none (missing, a symlink: never followed, not a regular file, a parent that is not
        a directory). The caller closes it."""
        try:
            with self._lock:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=self.dir_fd(parts[:-1]))
        except (OSError, TransferIOError):
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    # --- --resume: the kept temp file and its record -------------------------------------
    def open_kept(self, parts: tuple[bytes, ...]) -> tuple[int, bytes] | None:
        """(fd, name) of the resume temp file of parts, opened read-write (never through a
        symlink) and flock()ed as our own; None when there is none, it is not a regular
        file, or a live session holds it."""
        tmp = resume.temp_name(parts[-1])
        try:
            with self._lock:
                fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=self.dir_fd(parts[:-1]))
        except (OSError, TransferIOError):
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd, tmp

    def read_record(self, parts: tuple[bytes, ...]) -> bytes:
        """The resume record of parts (b"" when there is none or it cannot be read)."""
        try:
            with self._lock:
                fd = os.open(resume.record_name(parts[-1]), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=self.dir_fd(parts[:-1]))
        except (OSError, TransferIOError):
            return b""
        try:
            return os.pread(fd, resume.MAX_RECORD + 1, 0) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
        except OSError:
            return b""
        finally:
            os.close(fd)

    def write_record(self, parts: tuple[bytes, ...], data: bytes) -> None:
        """Replace the resume record of parts (written aside, then renamed over it)."""
        name = resume.record_name(parts[-1])
        aside = name + b".new"
        with self._lock:
            parent = self.dir_fd(parts[:-1])
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, TEMP_MODE,
                         dir_fd=parent)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.rename(aside, name, src_dir_fd=parent, dst_dir_fd=parent)

    def forget(self, parts: tuple[bytes, ...], kept_temp: bool) -> None:
        """Remove the resume record of parts (and, with `kept_temp`, its resume temp file)."""
        names = [resume.record_name(parts[-1])] + ([resume.temp_name(parts[-1])] if kept_temp else [])
        with self._lock:
            for name in names:
                try:
                    os.unlink(name, dir_fd=self.dir_fd(parts[:-1]))
                except (OSError, TransferIOError):
                    pass

    def publish(self, parts: tuple[bytes, ...], fd: int, tmp: bytes, size: int, mode: int,
                times: tuple[int, int] | None, uid_gid: tuple[int, int] | None, fsync: bool) -> None:
        """Give the temp file its size and metadata, then rename it over the final name."""
        path = self.display(parts)
        try:
            st = os.fstat(fd)
            if st.st_size != size:
                os.ftruncate(fd, size)
            if uid_gid is not None and self.is_root:
                os.fchown(fd, *uid_gid)
            final = self.final_mode(mode, False)
            if st.st_mode & 0o7777 != final:
                os.fchmod(fd, final)
            if times is not None:
                os.utime(fd, ns=times)
            if fsync:
                if faults.ACTIVE:
                    faults.inject("fsync", path)
                os.fsync(fd)
        except OSError as exc:
            raise io_error(exc, "cannot finish file", path) from None
        with self._lock:
            parent = self.dir_fd(parts[:-1])
            try:
                if faults.ACTIVE:
                    faults.inject("rename", path)
                os.rename(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
                if fsync:
                    os.fsync(parent)
            except IsADirectoryError:
                raise TransferIOError("destination exists and is a directory", path=path) from None
            except OSError as exc:
                raise io_error(exc, "cannot rename into place", path) from None

    def discard(self, parts: tuple[bytes, ...], tmp: bytes) -> None:
        with self._lock:
            try:
                os.unlink(tmp, dir_fd=self.dir_fd(parts[:-1]))
            except (OSError, TransferIOError):
                pass

    def close(self) -> None:
        with self._lock:
            for fd in self._dirs.values():
                os.close(fd)
            self._dirs.clear()
        os.close(self.root_fd)


_TEMP_RE = re.compile(rb"^\..*\.escp-[0-9a-f]{16}\.part$", re.DOTALL)


def sweep_stale(dir_fd: int, own_tag: bytes, min_age: float = STALE_AGE) -> int:
    """Remove temp files of dead sessions from one directory; returns how many went.

    A temp file is stale when it matches `.NAME.escp-<16 hex>.part`, is a regular file, is
    not this session's, nobody holds its flock (its writer is gone: locks die with their
    process) and it was not modified for min_age seconds. Never follows symlinks; errors
    are ignored (a sweep is housekeeping, never a reason to fail)."""
    removed = 0
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return 0
    now = time.time()  # wall-clock: not a deadline (compared with st_mtime)
    for name in names:
        bname = os.fsencode(name)
        if not _TEMP_RE.match(bname) or bname.endswith(b".escp-" + own_tag + b".part"):
            continue
        try:
            fd = os.open(bname, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live session holds it
            here = os.stat(bname, dir_fd=dir_fd, follow_symlinks=False)
            if (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(bname, dir_fd=dir_fd)
                removed += 1
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def pwrite_all(fd: int, data: memoryview, offset: int, name: bytes = b"") -> None:
    """Write all of data at offset, looping over short writes, EINTR and (boundedly) EAGAIN.

    `name` only serves the test fault hook (escp/engine/faults.py).
    """
    done = 0
    n_total = len(data)
    again = 0
    while done < n_total:
        try:
            if faults.ACTIVE and faults.inject("write", name) == faults.SHORT:
                done += os.pwrite(fd, data[done : done + max(1, (n_total - done) // 2)], offset + done)
                continue
            done += os.pwrite(fd, data[done:], offset + done)
        except InterruptedError:
            continue
        except BlockingIOError:
            again += 1
            if again > EAGAIN_RETRIES:
                raise
            time.sleep(min(0.0005 * again, 0.01))


SPARSE_PAGE = 4096
_ZERO_PAGE = bytes(SPARSE_PAGE)


def nonzero_runs(data: memoryview | bytes, offset: int) -> list[tuple[int, int]]:
    """(start, end) ranges of data (relative) covering every file page that is not all zero.

    Pages are aligned to the file (multiples of SPARSE_PAGE from offset 0), so writing only
    these ranges allocates no filesystem block the source did not need.
    """
    raw = data if isinstance(data, bytes) else data.tobytes()
    n = len(raw)
    runs: list[tuple[int, int]] = []
    start = -1
    pos = 0
    first = SPARSE_PAGE - offset % SPARSE_PAGE
    while pos < n:
        end = min(n, pos + (first if pos == 0 else SPARSE_PAGE))
        zero = raw[pos:end] == _ZERO_PAGE[: end - pos]
        if zero and start >= 0:
            runs.append((start, pos))
            start = -1
        elif not zero and start < 0:
            start = pos
        pos = end
    if start >= 0:
        runs.append((start, n))
    return runs


def pwrite_sparse(fd: int, data: memoryview, offset: int) -> None:
    """Write only the non-zero pages of data: all-zero pages stay holes (--sparse)."""
    for start, end in nonzero_runs(data, offset):
        pwrite_all(fd, data[start:end], offset + start)
