"""Encode and decode the plaintext of every frame type, with validation.

Decoders treat their input as hostile: every length, count and index is bounded
before use, FlatBuffers are read through bounds-checked helpers, and any malformed
input raises ProtocolError (never IndexError, struct.error or a huge allocation).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flatbuffers

from ..errors import ProtocolError
from .fb import escp_generated as fb
from .wire import (
    ABORT_BODY,
    ACCEPT_BODY,
    EOS_BODY,
    FILE_END_BODY,
    FILE_RESULT_BODY,
    FILE_SUM_BODY,
    FILE_WANT_BODY,
    KEPT_RANGE,
    KIND_DIR,
    KIND_FILE,
    MAX_FILES_PER_LIST,
    MAX_KEPT_RANGES,
    MAX_MESSAGE,
    MAX_NAME,
    SESSION_END_BODY,
    STATUS_SKIPPED,
    T_ABORT,
    T_ACCEPT,
    T_EOS,
    T_FILE_END,
    T_FILE_LIST,
    T_FILE_RESULT,
    T_FILE_SUM,
    T_FILE_WANT,
    T_KEEPALIVE,
    T_SESSION_DONE,
    T_SESSION_END,
    T_TRACE_CHUNK,
    TRACE_CHUNK_MAX,
)

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
MAX_FILE_SIZE = 1 << 62


@dataclass(frozen=True, slots=True)
class FileEntry:
    fino: int
    name: bytes  # relative path, b"/"-separated
    kind: int = KIND_FILE
    mode: int = 0o644
    size: int = 0
    uid: int = 0
    gid: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True, slots=True)
class FileEnd:
    fino: int
    status: int
    blocks: int
    digest: bytes
    message: str = ""


@dataclass(frozen=True, slots=True)
class FileResult:
    fino: int
    status: int
    cause: int
    digest: bytes
    message: str = ""


@dataclass(frozen=True, slots=True)
class Eos:
    frames: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class SessionEnd:
    entries: int


@dataclass(frozen=True, slots=True)
class SessionDone:
    files_ok: int
    files_failed: int
    bytes_written: int
    trace_json: bytes


@dataclass(frozen=True, slots=True)
class Abort:
    cause: int
    message: str


@dataclass(frozen=True, slots=True)
class TraceChunk:
    data: bytes


@dataclass(frozen=True, slots=True)
class Keepalive:
    pass


@dataclass(frozen=True, slots=True)
class Accept:
    stream_index: int


@dataclass(frozen=True, slots=True)
class KeptRange:
    """Whole blocks from `offset` an earlier try left verified in the receiver's temp file,
    and their range digest (checksum.range_digest)."""

    offset: int
    length: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class FileWant:
    """Receiver -> sender in a gated session: the file is wanted, its data may follow;
    with --resume, `offer` lists the ranges the receiver holds already (§9.15)."""

    fino: int
    offer: tuple[KeptRange, ...] = ()


@dataclass(frozen=True, slots=True)
class FileSum:
    """Sender -> receiver with --skip-existing=digest: the source's content digest."""

    fino: int
    digest: bytes


Message = (FileEnd | FileResult | Eos | SessionEnd | SessionDone | Abort | Keepalive | Accept | TraceChunk
           | FileWant | FileSum | list[FileEntry])


def _text(b: bytes) -> str:
    return b[:MAX_MESSAGE].decode("utf-8", "replace")


def _msg_bytes(message: str) -> bytes:
    return message.encode("utf-8", "replace")[:MAX_MESSAGE]


# --- encoders ---------------------------------------------------------------------


def encode_file_list(entries: list[FileEntry]) -> bytes:
    if len(entries) > MAX_FILES_PER_LIST:
        raise ValueError("too many entries for one FILE_LIST frame")
    b = flatbuffers.Builder(64 + sum(len(e.name) + 64 for e in entries))
    offsets = []
    for e in entries:
        name = b.CreateByteVector(e.name)
        fb.FileStart(b)
        fb.FileAddFino(b, e.fino)
        fb.FileAddName(b, name)
        fb.FileAddKind(b, e.kind)
        fb.FileAddMode(b, e.mode)
        fb.FileAddSize(b, e.size)
        fb.FileAddUid(b, e.uid)
        fb.FileAddGid(b, e.gid)
        fb.FileAddAtimeNs(b, e.atime_ns)
        fb.FileAddMtimeNs(b, e.mtime_ns)
        offsets.append(fb.FileEnd(b))
    vec = fb_table_vector(b, fb.FileListStartFilesVector, offsets)
    fb.FileListStart(b)
    fb.FileListAddFiles(b, vec)
    b.Finish(fb.FileListEnd(b))
    return bytes([T_FILE_LIST]) + bytes(b.Output())


def encode_file_end(m: FileEnd) -> bytes:
    return FILE_END_BODY.pack(T_FILE_END, m.fino, m.status, m.blocks, m.digest) + _msg_bytes(m.message)


def encode_file_result(m: FileResult) -> bytes:
    return FILE_RESULT_BODY.pack(T_FILE_RESULT, m.fino, m.status, m.cause, m.digest) + _msg_bytes(m.message)


def encode_file_want(m: FileWant) -> bytes:
    if len(m.offer) > MAX_KEPT_RANGES:
        raise ValueError("too many kept ranges for one FILE_WANT")
    return FILE_WANT_BODY.pack(T_FILE_WANT, m.fino) + b"".join(
        KEPT_RANGE.pack(r.offset, r.length, r.digest) for r in m.offer)


def encode_file_sum(m: FileSum) -> bytes:
    return FILE_SUM_BODY.pack(T_FILE_SUM, m.fino, m.digest)


def encode_eos(m: Eos) -> bytes:
    return EOS_BODY.pack(T_EOS, m.frames, m.nbytes)


def encode_accept(m: Accept) -> bytes:
    return ACCEPT_BODY.pack(T_ACCEPT, m.stream_index)


def encode_session_end(m: SessionEnd) -> bytes:
    return SESSION_END_BODY.pack(T_SESSION_END, m.entries)


def encode_keepalive() -> bytes:
    return bytes([T_KEEPALIVE])


def encode_trace_chunk(m: TraceChunk) -> bytes:
    if len(m.data) > TRACE_CHUNK_MAX:
        raise ValueError("trace chunk too large")
    return bytes([T_TRACE_CHUNK]) + m.data


def encode_trace_chunks(blob: bytes) -> list[bytes]:
    """A trace (JSON) cut into TRACE_CHUNK frames; none for an empty one."""
    return [encode_trace_chunk(TraceChunk(blob[i : i + TRACE_CHUNK_MAX])) for i in range(0, len(blob), TRACE_CHUNK_MAX)]


def encode_abort(m: Abort) -> bytes:
    return ABORT_BODY.pack(T_ABORT, m.cause) + _msg_bytes(m.message)


def encode_session_done(m: SessionDone) -> bytes:
    b = flatbuffers.Builder(128 + len(m.trace_json))
    tj = b.CreateByteVector(m.trace_json)
    fb.SessionSummaryStart(b)
    fb.SessionSummaryAddFilesOk(b, m.files_ok)
    fb.SessionSummaryAddFilesFailed(b, m.files_failed)
    fb.SessionSummaryAddBytesWritten(b, m.bytes_written)
    fb.SessionSummaryAddTraceJson(b, tj)
    b.Finish(fb.SessionSummaryEnd(b))
    return bytes([T_SESSION_DONE]) + bytes(b.Output())


# --- FlatBuffers helpers ------------------------------------------------------------


def fb_table_vector(b: flatbuffers.Builder, start: Callable[[flatbuffers.Builder, int], Any],
                    tables: list[int]) -> int:
    """A vector of tables already built (`start` is the schema's StartXVector)."""
    start(b, len(tables))
    for off in reversed(tables):
        b.PrependUOffsetTRelative(off)
    return int(b.EndVector())



def fb_bytes(tab: object, slot: int, buf: bytes) -> bytes:
    """The [ubyte] vector at vtable slot `slot` of a table, bounds-checked, as bytes."""
    t = tab._tab  # type: ignore[attr-defined]
    o = t.Offset(slot)
    if o == 0:
        return b""
    start = t.Vector(o)
    n = t.VectorLen(o)
    if start < 0 or n < 0 or start + n > len(buf):
        raise ProtocolError("FlatBuffer vector out of bounds")
    return bytes(buf[start : start + n])


def fb_root(cls: type, buf: bytes) -> object:
    if len(buf) < 8:
        raise ProtocolError("FlatBuffer too short")
    (root,) = struct.unpack_from("<I", buf, 0)
    if root + 4 > len(buf):
        raise ProtocolError("FlatBuffer root out of bounds")
    return cls.GetRootAs(buf, 0)  # type: ignore[attr-defined]


def decode_file_list(body: bytes) -> list[FileEntry]:
    try:
        root = fb_root(fb.FileList, body)
        n = root.FilesLength()  # type: ignore[attr-defined]
        if n < 0 or n > MAX_FILES_PER_LIST or n * 4 > len(body):
            raise ProtocolError(f"file list claims {n} entries")
        out = []
        for i in range(n):
            f = root.Files(i)  # type: ignore[attr-defined]
            entry = FileEntry(
                fino=f.Fino(),
                name=fb_bytes(f, 6, body),
                kind=f.Kind(),
                mode=f.Mode(),
                size=f.Size(),
                uid=f.Uid(),
                gid=f.Gid(),
                atime_ns=f.AtimeNs(),
                mtime_ns=f.MtimeNs(),
            )
            validate_entry(entry)
            out.append(entry)
        return out
    except ProtocolError:
        raise
    except Exception as exc:  # malformed buffers raise anything from struct/IndexError
        raise ProtocolError(f"malformed file list ({type(exc).__name__})") from None


def check_offer(offer: tuple[KeptRange, ...], size: int, block_size: int) -> None:
    """A receiver's kept ranges must be runs of whole blocks of the grid, in offset order,
    apart, inside the file (the last one may end at the file's end); ProtocolError if not."""
    end = 0
    for r in offer:
        if r.offset < end or r.offset % block_size or r.length <= 0 or r.offset + r.length > size \
                or (r.length % block_size and r.offset + r.length != size):
            raise ProtocolError(f"kept range {r.offset}+{r.length} invalid for size {size}")
        end = r.offset + r.length


def validate_entry(e: FileEntry) -> None:
    if e.kind not in (KIND_FILE, KIND_DIR):
        raise ProtocolError(f"file {e.fino}: unknown kind {e.kind}")
    if not 0 < len(e.name) <= MAX_NAME:
        raise ProtocolError(f"file {e.fino}: name length {len(e.name)} out of bounds")
    if e.size > MAX_FILE_SIZE or (e.kind == KIND_DIR and e.size != 0):
        raise ProtocolError(f"file {e.fino}: size {e.size} out of bounds")
    if e.mode > 0o7777:
        raise ProtocolError(f"file {e.fino}: mode {e.mode:o} out of bounds")
    for t in (e.atime_ns, e.mtime_ns):
        if not I64_MIN < t < I64_MAX or math.isnan(t):
            raise ProtocolError(f"file {e.fino}: time out of bounds")


def decode_session_done(body: bytes) -> SessionDone:
    try:
        root = fb_root(fb.SessionSummary, body)
        return SessionDone(
            files_ok=root.FilesOk(),  # type: ignore[attr-defined]
            files_failed=root.FilesFailed(),  # type: ignore[attr-defined]
            bytes_written=root.BytesWritten(),  # type: ignore[attr-defined]
            trace_json=fb_bytes(root, 10, body),
        )
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"malformed session summary ({type(exc).__name__})") from None


def _unpack(st: struct.Struct, plain: bytes, what: str) -> tuple:
    if len(plain) < st.size:
        raise ProtocolError(f"{what} frame too short ({len(plain)} bytes)")
    return st.unpack_from(plain)


def decode_message(plain: bytes) -> Message:
    """Decode any non-DATA frame plaintext."""
    if not plain:
        raise ProtocolError("empty frame")
    t = plain[0]
    if t == T_FILE_LIST:
        return decode_file_list(plain[1:])
    if t == T_FILE_END:
        _, fino, status, blocks, digest = _unpack(FILE_END_BODY, plain, "FILE_END")
        if status > 1:
            raise ProtocolError(f"FILE_END status {status} unknown")
        return FileEnd(fino, status, blocks, digest, _text(plain[FILE_END_BODY.size :]))
    if t == T_FILE_RESULT:
        _, fino, status, cause, digest = _unpack(FILE_RESULT_BODY, plain, "FILE_RESULT")
        if status > STATUS_SKIPPED:
            raise ProtocolError(f"FILE_RESULT status {status} unknown")
        return FileResult(fino, status, cause, digest, _text(plain[FILE_RESULT_BODY.size :]))
    if t == T_EOS:
        if len(plain) != EOS_BODY.size:
            raise ProtocolError("EOS frame has wrong size")
        _, frames, nbytes = EOS_BODY.unpack(plain)
        return Eos(frames, nbytes)
    if t == T_ACCEPT:
        if len(plain) != ACCEPT_BODY.size:
            raise ProtocolError("ACCEPT frame has wrong size")
        return Accept(ACCEPT_BODY.unpack(plain)[1])
    if t == T_SESSION_END:
        if len(plain) != SESSION_END_BODY.size:
            raise ProtocolError("SESSION_END frame has wrong size")
        return SessionEnd(SESSION_END_BODY.unpack(plain)[1])
    if t == T_SESSION_DONE:
        return decode_session_done(plain[1:])
    if t == T_KEEPALIVE:
        if len(plain) != 1:
            raise ProtocolError("KEEPALIVE frame has a body")
        return Keepalive()
    if t == T_TRACE_CHUNK:
        if len(plain) - 1 > TRACE_CHUNK_MAX:
            raise ProtocolError("trace chunk too large")
        return TraceChunk(bytes(plain[1:]))
    if t == T_FILE_WANT:
        n, rest = divmod(len(plain) - FILE_WANT_BODY.size, KEPT_RANGE.size)
        if n < 0 or rest or n > MAX_KEPT_RANGES:
            raise ProtocolError("FILE_WANT frame has wrong size")
        fino = FILE_WANT_BODY.unpack_from(plain)[1]
        offer = tuple(KeptRange(*KEPT_RANGE.unpack_from(plain, FILE_WANT_BODY.size + i * KEPT_RANGE.size))
                      for i in range(n))
        return FileWant(fino, offer)
    if t == T_FILE_SUM:
        if len(plain) != FILE_SUM_BODY.size:
            raise ProtocolError("FILE_SUM frame has wrong size")
        _, fino, digest = FILE_SUM_BODY.unpack(plain)
        return FileSum(fino, digest)
    if t == T_ABORT:
        _, cause = _unpack(ABORT_BODY, plain, "ABORT")
        return Abort(cause, _text(plain[ABORT_BODY.size :]))
    raise ProtocolError(f"unknown frame type {t}")
