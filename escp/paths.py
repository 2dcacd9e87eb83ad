"""The one containment check for peer-supplied names, and local path helpers.

Every name a peer sends goes through `split_peer_name` before it is used: it must be a
relative path of non-empty components, none of them `.` or `..`, with no NUL byte and
no component longer than NAME_MAX. The receiver then opens each component relative
to a held directory fd with O_NOFOLLOW, so a symlink planted on the way is never
followed (see engine/writer.py). `is_within` compares component-wise, so `/t/dest2`
is not inside `/t/dest`.
"""

from __future__ import annotations

import os

from .errors import ProtocolError

NAME_MAX = 255


def split_peer_name(name: bytes) -> tuple[bytes, ...]:
    """Components of a peer-supplied relative name, or ProtocolError naming the defect."""
    if not name:
        raise ProtocolError("empty file name from peer")
    if b"\0" in name:
        raise ProtocolError("file name from peer contains NUL", path=name)
    if name.startswith(b"/"):
        raise ProtocolError("absolute file name from peer refused", path=name)
    parts = tuple(name.split(b"/"))
    for part in parts:
        if part in (b"", b".", b".."):
            raise ProtocolError("file name from peer has an empty, '.' or '..' component", path=name)
        if len(part) > NAME_MAX:
            raise ProtocolError("file name component longer than 255 bytes", path=name)
    return parts


def is_within(root: str | bytes, path: str | bytes) -> bool:
    """True when `path` is `root` or lies below it, compared by whole components."""
    r = os.path.abspath(os.fsencode(root))
    p = os.path.abspath(os.fsencode(path))
    if r == p:
        return True
    rparts = [c for c in r.split(b"/") if c]
    pparts = [c for c in p.split(b"/") if c]
    return len(pparts) > len(rparts) and pparts[: len(rparts)] == rparts


def check_local_overlap(sources: list[bytes], dest: bytes, recursive: bool) -> None:
    """--local only: refuse a copy of a file onto itself (also via a symlink, `..` or a
    hard link) and a copy of a directory into itself, before anything is sent.

    UsageError naming the source; sources that cannot be stat'ed are left to the sender.
    """
    import stat as st_mod

    from .errors import UsageError

    dest = dest or b"."
    try:
        dst = os.stat(dest)
    except OSError:
        dst = None
    dest_is_dir = dst is not None and st_mod.S_ISDIR(dst.st_mode)
    for src in sources:
        try:
            s = os.stat(src)
        except OSError:
            continue
        if dest_is_dir:
            base = os.path.basename(os.path.normpath(os.path.abspath(src)))
            target = os.path.join(dest, base)
            where = dest
        else:
            target = dest
            where = os.path.dirname(os.path.abspath(dest))
        try:
            t = os.stat(target)
        except OSError:
            t = None
        if t is not None and os.path.samestat(s, t):
            raise UsageError("source and destination are the same file", path=src)
        if st_mod.S_ISDIR(s.st_mode) and recursive and is_within(os.path.realpath(src), os.path.realpath(where)):
            raise UsageError("cannot copy a directory into itself", path=src)
