"""Remote paths: parsing [user@]host:[path], [v6addr]:path and scp:// arguments, and scp's
rules for the path part, the same for a source or a destination, in any direction.

- `host:` and `host:rel` are relative to the remote home directory: the path travels as
  typed, in SessionInit (never through a shell), and the remote escp resolves it in its
  working directory, which ssh makes the home directory.
- `~`, `~/rest`, `~user` and `~user/rest` are expanded by the side that owns the path
  (expand_home, with pwd lookups there), never by a shell; a local path that starts with
  `~` (the local shell left it alone, so it is a name) travels as `./~...` (keep_literal).
- A trailing slash on a destination means a directory (escp/engine/writer.py creates it
  when it does not exist, as rsync does).
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import UsageError, escape_name


@dataclass(frozen=True)
class RemoteTarget:
    user: str | None
    host: str
    port: int | None
    path: bytes


def _split_user(hostpart: str) -> tuple[str | None, str]:
    if "@" in hostpart:
        user, host = hostpart.rsplit("@", 1)
        return user, host
    return None, hostpart


def parse_target(text: str) -> RemoteTarget:
    if text.startswith("scp://"):
        u = urlsplit(text)
        if not u.hostname:
            raise UsageError(f"invalid scp:// destination {escape_name(text)!r}")
        try:
            port = u.port
        except ValueError:
            raise UsageError(f"invalid port in {escape_name(text)!r}") from None
        path = unquote(u.path)[1:] if u.path else ""
        host = u.hostname if ":" not in (u.hostname or "") else f"[{u.hostname}]"
        return RemoteTarget(unquote(u.username) if u.username else None, host, port, os.fsencode(path))
    if text.startswith("[") or ("@[" in text):
        close = text.find("]:")
        if close < 0:
            raise UsageError(f"invalid IPv6 destination {escape_name(text)!r} (expected [addr]:path)")
        hostpart = text[: close + 1]
        user, host = _split_user(hostpart)
        return RemoteTarget(user, host, None, os.fsencode(text[close + 2 :]))
    colon = text.find(":")
    slash = text.find("/")
    if colon <= 0 or (0 <= slash < colon):
        raise UsageError(f"destination {escape_name(text)!r} is not host:path (use --local for a local copy)")
    user, host = _split_user(text[:colon])
    return RemoteTarget(user, host, None, os.fsencode(text[colon + 1 :]))


def is_remote(text: str) -> bool:
    """Whether a command-line argument names a remote path, by scp's rule: scp://..., a
    [v6addr]:path, or a colon before any slash (so ./a:b and /x/a:b are local)."""
    if text.startswith("scp://") or text.startswith("[") or "@[" in text:
        return True
    colon = text.find(":")
    slash = text.find("/")
    return colon > 0 and not 0 <= slash < colon


def expand_home(path: bytes) -> bytes:
    """`~[user][/rest]` -> that user's home directory (this process's user for a bare `~`), from
    the password database of the host this runs on; any other path is returned unchanged."""
    if not path.startswith(b"~"):
        return path
    head, sep, rest = path.partition(b"/")
    user = head[1:]
    try:
        entry = pwd.getpwnam(os.fsdecode(user)) if user else pwd.getpwuid(os.getuid())
    except KeyError:
        if user:
            raise UsageError(f"no such user {escape_name(user)!r}", path=path) from None
        home = os.environ.get("HOME", "")
        if not home:
            raise UsageError("no home directory for this user", path=path) from None
    else:
        home = entry.pw_dir
    return os.fsencode(home).rstrip(b"/") + b"/" + rest if sep else os.fsencode(home)


def keep_literal(path: bytes) -> bytes:
    """A local path handed to a process that applies expand_home (a local server): a leading
    `~` is part of a file name here, so it travels as `./~...`."""
    return b"./" + path if path.startswith(b"~") else path
