"""What a pulling receiver asked for, and the rule that holds the remote sender to it
(sans-IO; docs/protocol.md §9.13, the scp CVE-2019-6111 class).

In a pull the local escp is the receiver and the remote one the sender: whatever the
remote announces is checked against the request, computed locally from the command
line, never from anything the remote says:

* every name must lie under a requested source: its first component is a requested
  source's top-level name (the base name the sender gives it, §9.1), or matches the last
  component of a requested pattern (fnmatch, a leading dot only matched by a leading
  dot, as the remote's glob does). A source whose name only the remote knows (`.`, `..`,
  `~`, the empty path: the remote's home) allows one top-level name of the remote's
  choice; with --filelist the names are the list's destination names (§9.1);
* without -r no directory may arrive (except, with --filelist, a missing parent of a
  listed name); with -r, names below a top-level item need that item to have been
  announced as a directory, and when the remote said at set-up that its single source is
  a file, a top-level directory is refused.

The remote's top-level count and kind (SessionReply) only narrow this further (the
receiver core's count rule); they never widen it. Names are checked for containment
first (paths.split_peer_name), so this rule sees only well-formed relative names.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, field

from ..errors import ProtocolError
from .messages import FileEntry
from .wire import KIND_DIR

_MAGIC = re.compile(rb"[*?[]")
ROOT_NAME = b"root"  # the name a sender gives the source "/" (engine/sources.py)


def is_pattern(path: bytes) -> bool:
    """A remote source holding * ? or [ is a pattern, expanded by the remote escp."""
    return _MAGIC.search(path) is not None


def top_name(path: bytes) -> bytes | None:
    """The top-level name a sender announces for the source `path` (its base name after
    normalising), or None when only the remote can know it (its home, `.`, `..`)."""
    if not path or (path.startswith(b"~") and b"/" not in path.rstrip(b"/")):
        return None
    norm = posixpath.normpath(path)
    base = posixpath.basename(norm)
    if path.startswith(b"/"):
        return base or ROOT_NAME
    return None if base in (b"", b".", b"..") else base


def source_parent(path: bytes) -> bytes | None:
    """The remote directory holding the source's top-level item, to name remote files in
    messages; None when a pattern or the remote's home hides it."""
    if top_name(path) is None:
        return None
    parent = posixpath.dirname(posixpath.normpath(path))
    return None if is_pattern(parent) else parent


@dataclass(frozen=True)
class Wanted:
    """One requested source: the top-level name it gives (a literal, a pattern, or None
    for a name only the remote knows), and where it lives on the remote."""

    name: bytes | None
    pattern: bool
    parent: bytes | None

    def matches(self, top: bytes) -> bool:
        if self.name is None:
            return False
        if not self.pattern:
            return top == self.name
        if top.startswith(b".") and not self.name.startswith(b"."):
            return False  # a glob's * never matches a hidden name
        return fnmatch.fnmatchcase(top, self.name)


@dataclass
class RequestRule:
    """Holds a remote sender to what was requested (check each announced entry)."""

    wanted: tuple[Wanted, ...] = ()
    listed: dict[tuple[bytes, ...], bytes] = field(default_factory=dict)  # --filelist: dst parts -> src
    recursive: bool = False
    single_top_file: bool = False  # the remote said its one source is a file
    tops: dict[bytes, int] = field(default_factory=dict)  # top-level name -> kind, as announced
    top_source: dict[bytes, Wanted] = field(default_factory=dict)
    free: int = 0  # top-level names of the remote's choice still allowed
    dirs: set[tuple[bytes, ...]] = field(default_factory=set)  # directories announced (--filelist)
    parents: set[tuple[bytes, ...]] = field(default_factory=set)  # proper prefixes of listed names

    @classmethod
    def for_sources(cls, paths: list[bytes], recursive: bool, single_top_file: bool = False) -> RequestRule:
        wanted = []
        for path in paths:
            pattern = is_pattern(path)
            name = top_name(path)
            wanted.append(Wanted(name, pattern and name is not None and is_pattern(name), source_parent(path)))
        return cls(tuple(wanted), recursive=recursive, single_top_file=single_top_file,
                   free=sum(1 for w in wanted if w.name is None))

    @classmethod
    def for_filelist(cls, items: list[tuple[bytes, bytes]], recursive: bool) -> RequestRule:
        """`items`: (remote source, destination name) pairs, names already checked locally."""
        listed = {tuple(dst.split(b"/")): src for src, dst in items}
        parents = {parts[:i] for parts in listed for i in range(1, len(parts))}
        return cls(listed=listed, recursive=recursive, parents=parents)

    def check(self, entry: FileEntry) -> None:
        """ProtocolError unless the entry lies under a requested source."""
        parts = tuple(entry.name.split(b"/"))
        is_dir = entry.kind == KIND_DIR
        if self.listed or not self.wanted:
            self._check_listed(entry, parts, is_dir)
        else:
            self._check_top(entry, parts, is_dir)

    def _refuse(self, entry: FileEntry, why: str) -> ProtocolError:
        return ProtocolError(f"not requested: {why}", path=entry.name)

    def _check_top(self, entry: FileEntry, parts: tuple[bytes, ...], is_dir: bool) -> None:
        top = parts[0]
        if len(parts) > 1:
            if not self.recursive or self.tops.get(top) != KIND_DIR:
                raise self._refuse(entry, "a name below something that is not a requested directory")
            return
        if is_dir and not self.recursive:
            raise self._refuse(entry, "a directory, without -r")
        if is_dir and self.single_top_file:
            raise self._refuse(entry, "a directory where the sender announced a file")
        if top not in self.top_source:
            w = next((w for w in self.wanted if w.matches(top)), None)
            if w is None:
                if self.free <= 0:
                    raise self._refuse(entry, "a top-level name outside the requested sources")
                self.free -= 1
                w = Wanted(None, False, None)
            self.top_source[top] = w
        self.tops[top] = entry.kind

    def _check_listed(self, entry: FileEntry, parts: tuple[bytes, ...], is_dir: bool) -> None:
        if parts in self.listed:
            if is_dir and not self.recursive:
                raise self._refuse(entry, "a directory, without -r")
        elif parts in self.parents:
            if not is_dir:
                raise self._refuse(entry, "a file where a listed name needs a directory")
        elif not (self.recursive and any(parts[:i] in self.listed and parts[:i] in self.dirs
                                         for i in range(1, len(parts)))):
            raise self._refuse(entry, "a name outside the list")
        if is_dir:
            self.dirs.add(parts)

    def remote_path(self, name: bytes) -> bytes | None:
        """The remote path of an announced name, when the request tells it."""
        parts = tuple(name.split(b"/"))
        for i in range(len(parts), 0, -1):
            src = self.listed.get(parts[:i])
            if src is not None:
                return b"/".join((src, *parts[i:]))
        w = self.top_source.get(parts[0])
        if w is None or w.parent is None:
            return None
        return posixpath.join(w.parent, name)
