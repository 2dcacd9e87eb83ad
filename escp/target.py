"""Parsing of the destination argument: [user@]host:[path], [v6addr]:path, scp://."""

from __future__ import annotations

import os
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
