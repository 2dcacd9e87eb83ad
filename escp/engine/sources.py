"""Source enumeration: turn the command line's SRC arguments into file-list items.

scp rules: a file is sent under its base name; a directory needs -r and is sent as a
tree under its base name. Symlink policy (the Globus model): a symlink named on the
command line is followed; symlinks met inside a -r tree are skipped with a warning,
never followed and never recreated. FIFOs, sockets and devices are skipped with a
warning and never opened. Trees are walked with an explicit stack (no recursion
limit), in sorted order, lazily, so a huge tree starts sending at once.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import TransferIOError
from ..protocol.request import ROOT_NAME, is_pattern
from ..protocol.wire import KIND_DIR, KIND_FILE
from ..target import expand_home


@dataclass(frozen=True, slots=True)
class SourceItem:
    kind: int
    name: bytes  # relative name sent to the receiver
    path: bytes  # local path
    st: os.stat_result


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """A source that is not sent; `error` says why. `warning` problems do not fail the run."""

    error: TransferIOError
    warning: bool = False


def _base_name(path: bytes) -> bytes:
    base = os.path.basename(os.path.normpath(os.path.abspath(path)))
    return base or ROOT_NAME


def special_kind(st: os.stat_result) -> str | None:
    mode = st.st_mode
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return None


def expand_sources(paths: list[bytes]) -> list[bytes]:
    """A sending server's sources as the initiator typed them, expanded here and never by a
    shell: a leading ~ or ~user is that home directory (target.expand_home), the empty path is "." (the home directory,
    as for scp), and a path holding * ? or [ is a glob whose sorted matches replace it (a
    glob that matches nothing stays as typed, and fails as a missing source)."""
    out: list[bytes] = []
    for path in paths:
        path = expand_home(path) or b"."
        matches = sorted(glob.glob(path)) if is_pattern(path) else []
        out.extend(matches or [path])
    return out


def top_level_kinds(sources: list[bytes]) -> list[int | None]:
    """Kind of each top-level source following symlinks; None when it cannot be stat'ed."""
    kinds: list[int | None] = []
    for src in sources:
        try:
            st = os.stat(src)
        except OSError:
            kinds.append(None)
            continue
        kinds.append(KIND_DIR if stat.S_ISDIR(st.st_mode) else KIND_FILE)
    return kinds


def top_level_shape(sources: list[bytes]) -> tuple[int, bool]:
    """What the receiver's scp destination rules need (§9.6): how many top-level sources
    exist (the number given when none does), and whether the only one is a directory."""
    kinds = top_level_kinds(sources)
    return sum(1 for k in kinds if k is not None) or len(kinds), len(kinds) == 1 and kinds[0] == KIND_DIR


def iter_sources(sources: list[bytes], recursive: bool) -> Iterator[SourceItem | SourceProblem]:
    seen_real: set[bytes] = set()
    seen_names: set[bytes] = set()
    for src in sources:
        try:
            st = os.stat(src)  # top-level arguments are followed
        except OSError as exc:
            yield SourceProblem(TransferIOError(f"cannot access source: {exc.strerror}", path=src))
            continue
        real = os.path.realpath(src)
        if real in seen_real:
            continue  # the same source named twice is sent once
        seen_real.add(real)
        name = _base_name(src)
        if name in seen_names:
            yield SourceProblem(TransferIOError("another source has the same name; skipped", path=src))
            continue
        seen_names.add(name)
        if stat.S_ISDIR(st.st_mode):
            if not recursive:
                yield SourceProblem(TransferIOError("is a directory (use -r)", path=src))
                continue
            yield from walk_tree(src, name, st)
        elif stat.S_ISREG(st.st_mode):
            yield SourceItem(KIND_FILE, name, src, st)
        else:
            kind = special_kind(st) or "special file"
            yield SourceProblem(TransferIOError(f"is a {kind}; skipped", path=src), warning=True)


def walk_tree(root: bytes, root_name: bytes, root_st: os.stat_result) -> Iterator[SourceItem | SourceProblem]:
    yield SourceItem(KIND_DIR, root_name, root, root_st)
    stack: list[tuple[bytes, bytes]] = [(root, root_name)]
    while stack:
        path, name = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield SourceProblem(TransferIOError(f"cannot list directory: {exc.strerror}", path=path))
            continue
        subdirs: list[tuple[bytes, bytes]] = []
        for entry in entries:
            epath = os.fsencode(entry.path)
            ename = name + b"/" + os.fsencode(entry.name)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                yield SourceProblem(TransferIOError(f"cannot stat: {exc.strerror}", path=epath))
                continue
            if stat.S_ISLNK(st.st_mode):
                yield SourceProblem(TransferIOError("symbolic link inside a tree; not followed", path=epath), True)
            elif stat.S_ISDIR(st.st_mode):
                yield SourceItem(KIND_DIR, ename, epath, st)
                subdirs.append((epath, ename))
            elif stat.S_ISREG(st.st_mode):
                yield SourceItem(KIND_FILE, ename, epath, st)
            else:
                kind = special_kind(st) or "special file"
                yield SourceProblem(TransferIOError(f"is a {kind}; skipped", path=epath), warning=True)
        stack.extend(reversed(subdirs))

