"""--filelist: read a list of sources (and optional destination names) into SourceItems.

Two documented forms (docs/usage.md):
  plain: one local path per line (bytes, any encoding). Empty lines and lines whose
         first character is '#' are skipped. A relative path keeps its structure under
         the destination (`a/b/c.txt` -> DEST/a/b/c.txt); an absolute path, or one that
         climbs out with `..`, is sent under its base name (the scp rule).
  YAML:  a sequence whose items are `SRC` (as a plain line) or `[SRC, DST]` pairs, DST
         being the relative name under the destination. Chosen when the first
         significant line starts with `- ` (or is `-`) or the text starts with `---`.
A missing parent of a relative name is announced as a directory before it (with the
source directory's metadata when there is one), so the receiver never has to invent
one. Every name passes the same containment check the receiver applies
(paths.split_peer_name); names are unique within a transfer (duplicates are skipped
with a message). Directories need -r, as on the command line.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import EscpError, TransferIOError, UsageError
from ..paths import split_peer_name
from ..protocol.wire import KIND_DIR, KIND_FILE
from ..yamldoc import safe_load
from .sources import SourceItem, SourceProblem, special_kind, walk_tree

MAX_LIST_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class ListEntry:
    src: bytes  # local path
    dst: bytes  # relative name under the destination


def read_list_file(path: str, stdin: BinaryIO | None = None) -> bytes:
    """The raw text of a list file; '-' reads standard input."""
    try:
        if path == "-":
            data = (stdin or sys.stdin.buffer).read(MAX_LIST_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_LIST_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read --filelist {path}: {exc.strerror}") from None
    if len(data) > MAX_LIST_BYTES:
        raise UsageError(f"--filelist {path} is larger than 1 GiB")
    return bytes(data)


def default_name(src: bytes) -> bytes:
    """Destination name for a source given without DST."""
    norm = os.path.normpath(src)
    if os.path.isabs(norm) or norm == b".." or norm.startswith(b"../"):
        base = os.path.basename(os.path.normpath(os.path.abspath(src)))
        return base or b"root"
    return norm


def check_name(dst: bytes, where: str) -> bytes:
    name = dst.rstrip(b"/")
    try:
        split_peer_name(name)
    except EscpError as exc:
        raise UsageError(f"{where}: destination name refused: {exc.message}") from None
    return name


def is_yaml(text: bytes) -> bool:
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(b"#"):
            continue
        return s == b"---" or s == b"-" or s.startswith(b"- ")
    return False


def parse_plain(text: bytes) -> list[ListEntry]:
    out = []
    for n, line in enumerate(text.split(b"\n"), 1):
        line = line.removesuffix(b"\r")
        if not line or line.startswith(b"#"):
            continue
        if b"\0" in line:
            raise UsageError(f"--filelist line {n}: contains a NUL byte")
        out.append(ListEntry(line, check_name(default_name(line), f"--filelist line {n}")))
    return out


def parse_yaml(text: bytes) -> list[ListEntry]:
    doc = safe_load(text, lambda line: "--filelist is not valid YAML" + (f" at line {line}" if line else ""))
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise UsageError("--filelist YAML must be a sequence of SRC or [SRC, DST] items")
    out = []
    for n, item in enumerate(doc, 1):
        where = f"--filelist item {n}"
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            src = os.fsencode(str(item))
            dst = default_name(src)
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) and x for x in item):
            src, dst = os.fsencode(item[0]), os.fsencode(item[1])
        else:
            raise UsageError(f"{where}: expected SRC or [SRC, DST], got {item!r:.80}")
        if not src:
            raise UsageError(f"{where}: empty source path")
        out.append(ListEntry(src, check_name(dst, where)))
    return out


def parse_filelist(text: bytes) -> list[ListEntry]:
    """Parse either form; UsageError (exit 2) on any malformed entry."""
    return parse_yaml(text) if is_yaml(text) else parse_plain(text)


def _dir_stat(path: bytes | None) -> os.stat_result:
    """Metadata for an implicit parent directory: the source's when it is a directory."""
    if path is not None:
        try:
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                return st
        except OSError:
            pass
    now = time.time_ns()  # wall-clock: not a deadline (times of a synthesized directory entry)
    s, ns = divmod(now, 10**9)
    del ns
    return os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 0, os.getuid(), os.getgid(), 0, s, s, s,
                           s, s, s, now, now, now))


def iter_filelist(entries: list[ListEntry], recursive: bool) -> Iterator[SourceItem | SourceProblem]:
    """Sources of a list, with implicit parent directories, each name sent at most once."""
    dirs: set[bytes] = set()
    files: dict[bytes, bytes] = {}  # name -> real path of its source

    def claim(name: bytes, path: bytes) -> SourceProblem | None:
        real = os.path.realpath(path)
        if name in dirs or name in files:
            same = files.get(name) == real
            msg = "listed twice; sent once" if same else "destination name already used by another entry; skipped"
            return SourceProblem(TransferIOError(msg, path=path), warning=same)
        files[name] = real
        return None

    for e in entries:
        try:
            st = os.stat(e.src)
        except OSError as exc:
            yield SourceProblem(TransferIOError(f"cannot access source: {exc.strerror}", path=e.src))
            continue
        parts = e.dst.split(b"/")
        mirrored = e.dst == default_name(e.src)  # relative source: its parents exist locally too
        clash = False
        for i in range(1, len(parts)):  # implicit parents, outermost first
            pname = b"/".join(parts[:i])
            if pname in files:
                clash = True
                break
            if pname not in dirs:
                dirs.add(pname)
                yield SourceItem(KIND_DIR, pname, pname if mirrored else e.src, _dir_stat(pname if mirrored else None))
        if clash:
            yield SourceProblem(TransferIOError("a parent of its destination name is a file; skipped", path=e.src))
            continue
        if stat.S_ISDIR(st.st_mode):
            if not recursive:
                yield SourceProblem(TransferIOError("is a directory (use -r)", path=e.src))
                continue
            if e.dst in files:
                yield SourceProblem(TransferIOError("destination name already used by a file; skipped", path=e.src))
                continue
            for item in walk_tree(e.src, e.dst, st):
                if isinstance(item, SourceItem):
                    if item.kind == KIND_DIR:
                        if item.name in dirs:
                            continue  # directories merge
                        if item.name in files:
                            yield SourceProblem(TransferIOError("destination name already used by a file; skipped",
                                                                path=item.path))
                            continue
                        dirs.add(item.name)
                    elif (problem := claim(item.name, item.path)) is not None:
                        yield problem
                        continue
                yield item
        elif stat.S_ISREG(st.st_mode):
            if (problem := claim(e.dst, e.src)) is not None:
                yield problem
                continue
            yield SourceItem(KIND_FILE, e.dst, e.src, st)
        else:
            yield SourceProblem(TransferIOError(f"is a {special_kind(st) or 'special file'}; skipped", path=e.src),
                                warning=True)
