"""Checksum manifests: --checksum-file on the sender, `escp --verify-manifest` to check a tree.

Format (text, one file per line, UTF-8 safe):
    # escp-manifest v1 blocksize=<bytes>
    <32 hex digits> <size> <name>
The digest is checksum.content_digest: BLAKE2b-128 over the size, the block size and
every block's (offset, length, XXH3-128 seeded with the offset), zero blocks included,
so it can be recomputed by re-reading the file with the same block size. <name> is the
file's path relative to the directory that received the top-level names (DEST when it
was an existing directory, else DEST's parent, DEST's base name being the first
component), percent-encoded (RFC 3986 style, '/' kept) so that any
byte string, newlines included, fits on one line. Lines are written as the receiver
confirms each file, so only files that arrived verified are listed.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import quote_from_bytes, unquote_to_bytes

from ..errors import EscpError, UsageError
from ..paths import split_peer_name
from .checksum import fd_content_digest

HEADER_RE = re.compile(r"^# escp-manifest v1 blocksize=(\d+)$")
LINE_RE = re.compile(r"^([0-9a-f]{32}) (\d+) (\S+)$")
MAX_LINE = 16384


@dataclass(frozen=True)
class ManifestLine:
    digest: str
    size: int
    name: bytes


class ManifestWriter:
    """Appends one line per verified file; thread-safe."""

    def __init__(self, path: str, block_size: int) -> None:
        try:
            self._fh: TextIO = open(path, "w", encoding="ascii")
        except OSError as exc:
            raise UsageError(f"cannot write --checksum-file {path}: {exc.strerror}") from None
        self._lock = threading.Lock()
        self._fh.write(f"# escp-manifest v1 blocksize={block_size}\n")

    def add(self, name: bytes, size: int, digest: bytes) -> None:
        with self._lock:
            self._fh.write(f"{digest.hex()} {size} {quote_from_bytes(name, safe='/')}\n")

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def read_manifest(path: str) -> tuple[int, list[ManifestLine]]:
    """(block size, lines); UsageError naming the line when the manifest is malformed."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read manifest {path}: {exc.strerror}") from None
    if not lines or not (m := HEADER_RE.match(lines[0])):
        raise UsageError(f"{path}: not an escp manifest (first line must be '# escp-manifest v1 blocksize=N')")
    block_size = int(m.group(1))
    if not 1 <= block_size <= 1 << 30:
        raise UsageError(f"{path}: block size {block_size} out of range")
    out = []
    for n, line in enumerate(lines[1:], 2):
        if not line or line.startswith("#"):
            continue
        lm = LINE_RE.match(line[:MAX_LINE])
        if not lm:
            raise UsageError(f"{path}: line {n} is malformed")
        out.append(ManifestLine(lm.group(1), int(lm.group(2)), unquote_to_bytes(lm.group(3))))
    return block_size, out


def file_content_digest(path: bytes, block_size: int) -> tuple[int, bytes]:
    """(size, content digest) of a local file, read block by block."""
    with open(path, "rb", buffering=0) as fh:
        return fd_content_digest(fh.fileno(), block_size)


def verify_tree(manifest: str, root: str) -> Iterator[tuple[bool, str]]:
    """(ok, line) per manifest entry: 'OK name' or 'FAILED name: reason'."""
    block_size, lines = read_manifest(manifest)
    broot = os.fsencode(root)
    for entry in lines:
        shown = quote_from_bytes(entry.name, safe="/")
        try:
            split_peer_name(entry.name)
        except EscpError as exc:
            yield False, f"FAILED {shown}: {exc.message}"
            continue
        path = os.path.join(broot, entry.name)
        try:
            size, digest = file_content_digest(path, block_size)
        except OSError as exc:
            yield False, f"FAILED {shown}: {exc.strerror}"
            continue
        if size != entry.size:
            yield False, f"FAILED {shown}: size {size}, manifest says {entry.size}"
        elif digest.hex() != entry.digest:
            yield False, f"FAILED {shown}: content differs"
        else:
            yield True, f"OK {shown}"
