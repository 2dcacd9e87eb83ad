"""Which way a transfer goes, from where its sources and its destination are.

Every source is a local path or a RemoteTarget, and so is the destination:

    local sources  -> remote DEST        push (the local escp sends)
    remote sources -> local DEST         pull (the local escp receives)
    remote sources -> remote DEST        remote to remote (direct, or relayed with -3)
    local sources  -> local DEST         local (a local child receives)

Sources mixed between local and remote, or on two different hosts, are a usage error:
one transfer has one sending side. With --filelist the list names the sources; a remote
list is named by its host alone (`host:`), with no path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from .errors import UsageError, escape_name
from .target import RemoteTarget


class Direction(Enum):
    PUSH = "push"
    PULL = "pull"
    REMOTE = "remote to remote"
    LOCAL = "local"


@dataclass(frozen=True)
class Route:
    direction: Direction
    sources: list[bytes]  # paths on the sending side (local paths, or paths and patterns on source_host)
    dest_path: bytes
    source_host: RemoteTarget | None = None  # the remote sending side (its path is not used)
    dest_host: RemoteTarget | None = None  # the remote receiving side (its path is dest_path)


def endpoint(t: RemoteTarget) -> tuple[str | None, str, int | None]:
    return t.user, t.host, t.port


def describe(t: RemoteTarget) -> str:
    return escape_name(f"{t.user}@{t.host}" if t.user else t.host)


def plan_route(sources: Sequence[str | bytes | RemoteTarget], dest: RemoteTarget | str | bytes,
               filelist: bool = False) -> Route:
    """The route of a transfer; UsageError for sources that no single sending side holds."""
    remote = [s for s in sources if isinstance(s, RemoteTarget)]
    local = [os.fsencode(s) for s in sources if not isinstance(s, RemoteTarget)]
    dest_host = dest if isinstance(dest, RemoteTarget) else None
    dest_path = dest.path if isinstance(dest, RemoteTarget) else os.fsencode(dest)
    if not remote:
        return Route(Direction.PUSH if dest_host else Direction.LOCAL, local, dest_path, None, dest_host)
    if local:
        raise UsageError(f"sources mix local paths ({escape_name(local[0])}) and remote ones "
                         f"({describe(remote[0])}:...): copy from one side at a time")
    hosts = {endpoint(t) for t in remote}
    if len(hosts) > 1:
        names = sorted({describe(t) for t in remote})
        raise UsageError(f"sources on different hosts ({', '.join(names)}): copy from one host at a time")
    paths = [t.path for t in remote]
    if filelist:
        if any(paths):
            raise UsageError("with --filelist, name the source host alone (host:); the paths come from the list")
        paths = []
    direction = Direction.REMOTE if dest_host else Direction.PULL
    return Route(direction, paths, dest_path, remote[0], dest_host)
