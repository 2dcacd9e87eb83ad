"""Session set-up messages carried over the ssh pipe (pure codecs and validation).

Framing on the pipe: BOOT_HEADER (magic "ESCP", version, type, reserved, body length)
then a FlatBuffer body: SessionInit from the initiator, SessionReply from the server
(before it, SetupProgress messages while the server waits for a free port, §2.11, only
when the initiator said it reads them; when asked, a SessionReport at the end:
report.py). SessionInit says which data role and link role the server takes (version
1's only pairing, a receiving listener, is the default), and what a sending server
sends. The session key travels only here (ssh-encrypted stdin), never in argv or
environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flatbuffers

from ..errors import ProtocolError
from .fb import escp_generated as fb
from .flags import SessionFlags
from .messages import fb_bytes, fb_root, fb_table_vector
from .roles import DataRole, Link
from .wire import (
    BOOT_HEADER,
    BOOT_MAGIC,
    BOOT_MAX_BODY,
    BOOT_SESSION_INIT,
    BOOT_SESSION_REPLY,
    BOOT_SESSION_REPORT,
    BOOT_SETUP_PROGRESS,
    DEFAULT_REKEY_BYTES,
    FLAG_KNOWN,
    MAX_BLOCK,
    MAX_STREAMS,
    MIN_BLOCK,
    MIN_REKEY_BYTES,
    PROTOCOL_VERSION,
    SETUP_PROGRESS,
    STAGE_PORT_WAIT,
    TRACE_TOTAL_MAX,
)

MIN_IDLE_TIMEOUT = 5.0
MAX_IDLE_TIMEOUT = 3600.0
SETUP_MIN_S = 10.0  # the initiator's shortest wait for the SessionReply, whatever its --timeout
# an initiator older than SetupProgress waited min(its connect timeout, 30 s by default, and
# max(--timeout, SETUP_MIN_S)): a waiting server answers it SETUP_REPLY_MARGIN before that
OLD_SETUP_MAX_S = 30.0
SETUP_REPLY_MARGIN = 3.0
# a waiting server sends SetupProgress at least this often (§2.11): the initiator's proof it lives
PROGRESS_EVERY_S = 5.0


REPORT_MAX_BODY = TRACE_TOTAL_MAX + BOOT_MAX_BODY  # a SessionReport carries the server's trace
MAX_RATE_LIMIT = 1 << 40  # bytes/s per stream: far above any link, below any overflow

# the wire codes of the server's roles (SessionInit.server_role / server_link)
ROLE_CODES = {DataRole.RECEIVER: 0, DataRole.SENDER: 1}
LINK_CODES = {Link.LISTENER: 0, Link.CONNECTOR: 1}


def setup_timeout(idle_timeout: float) -> float:
    """How long an initiator waits for the SessionReply (§2.5): its idle deadline (--timeout),
    as for the rest of the session, but never below SETUP_MIN_S. A remote start is slow,
    not hung, on a node that starts many sessions at once (each interpreter's imports cost
    CPU time: 64 at once on 2 busy cores took over 30 s)."""
    return max(idle_timeout, SETUP_MIN_S)


@dataclass(frozen=True, slots=True)
class ListItem:
    """A --filelist item a sending server sends: its own path, and the name it lands under."""

    src: bytes
    dst: bytes


@dataclass(frozen=True)
class SessionInit:
    session_id: int
    key: bytes
    flags: int
    block_size: int
    streams: int
    port_start: int
    port_range: int
    dest_path: bytes
    top_level_count: int
    bind_address: str = ""
    rx_engine: str = "posix"
    rekey_bytes: int = DEFAULT_REKEY_BYTES
    compress_level: int = 3
    log_path: str = ""
    client_time_ns: int = 0
    idle_timeout_ms: int = 60_000
    server_role: DataRole = DataRole.RECEIVER  # what the server does with the data
    server_link: Link = Link.LISTENER  # whether the server listens or connects
    peer_address: str = ""  # a connecting server's peer (the listener it connects to)
    peer_port: int = 0
    sources: tuple[bytes, ...] = ()  # a sending server's sources (patterns it expands)
    filelist: tuple[ListItem, ...] = ()  # a sending server's --filelist items
    report: bool = False  # the server writes a SessionReport when the session ends
    tx_engine: str = ""  # a sending server's I/O engine ("" = posix)
    rate_limit: int = 0  # a sending server's pacing per stream, bytes/s (0 = none)
    setup_features: int = 0  # SETUP_* bits (an initiator sets SETUP_PROGRESS)
    version: int = PROTOCOL_VERSION

    def __repr__(self) -> str:  # never print the key
        return f"SessionInit(session_id={self.session_id:016x}, streams={self.streams}, block={self.block_size})"

    @property
    def session_flags(self) -> SessionFlags:
        """The flag bits as booleans (`flags` is their wire form)."""
        return SessionFlags.from_bits(self.flags)

    @property
    def receiver_idle_timeout(self) -> float:
        """The receiver's own deadline: the sender's wish, clamped so a peer can neither
        disable it nor make it uselessly short (HP-13)."""
        return min(max(self.idle_timeout_ms / 1000.0, MIN_IDLE_TIMEOUT), MAX_IDLE_TIMEOUT)

    @property
    def reads_progress(self) -> bool:
        """The initiator reads SetupProgress messages before the SessionReply."""
        return bool(self.setup_features & SETUP_PROGRESS)

    def port_wait(self, idle: float) -> float:
        """How long a server whose idle deadline is `idle` may wait for a free port (§2.11):
        that deadline, and for an initiator that does not read SetupProgress (one that
        predates it) short enough that the error reply beats the initiator's own set-up
        deadline, as far as its defaults let the server know it."""
        if self.reads_progress:
            return idle
        old_deadline = min(OLD_SETUP_MAX_S, max(self.idle_timeout_ms / 1000.0, SETUP_MIN_S))
        return max(0.0, min(idle, old_deadline - SETUP_REPLY_MARGIN))

    def validate(self) -> None:
        if self.version != PROTOCOL_VERSION:
            raise ProtocolError(f"protocol version {self.version} not supported (this is {PROTOCOL_VERSION})")
        if len(self.key) != 16:
            raise ProtocolError("session key must be 16 bytes")
        if self.flags & ~FLAG_KNOWN:
            raise ProtocolError(f"unknown session flags {self.flags & ~FLAG_KNOWN:#x}")
        if self.session_flags.skip_quick and self.session_flags.skip_digest:
            raise ProtocolError("both skip modes asked for")
        if not MIN_BLOCK <= self.block_size <= MAX_BLOCK:
            raise ProtocolError(f"block size {self.block_size} out of range")
        if not 1 <= self.streams <= MAX_STREAMS:
            raise ProtocolError(f"stream count {self.streams} out of range")
        if not 1 <= self.port_start <= 65535 or not 1 <= self.port_range <= 1000 \
                or self.port_start + self.port_range - 1 > 65535:
            raise ProtocolError("port range out of bounds")
        if not MIN_REKEY_BYTES <= self.rekey_bytes <= DEFAULT_REKEY_BYTES:
            raise ProtocolError("rekey limit out of bounds")
        if self.rx_engine not in ("posix", "dummy"):
            raise ProtocolError(f"unknown receiver engine {self.rx_engine!r}")
        if not 1 <= self.compress_level <= 22:
            raise ProtocolError("compression level out of bounds")
        if self.top_level_count < 0:
            raise ProtocolError("bad top-level count")
        if self.server_link is Link.CONNECTOR and (not self.peer_address or not 1 <= self.peer_port <= 65535):
            raise ProtocolError("a connecting server needs the peer's address and port")
        if self.tx_engine not in ("", "posix", "dummy"):
            raise ProtocolError(f"unknown sender engine {self.tx_engine!r}")
        if not 0 <= self.rate_limit <= MAX_RATE_LIMIT:
            raise ProtocolError("rate limit out of bounds")


@dataclass(frozen=True)
class SessionReply:
    address: str
    port: int
    error: str = ""
    error_cause: str = ""
    dest_is_dir: bool = False
    server_time_ns: int = 0
    idle_timeout_ms: int = 0  # the server's effective idle timeout; 0: not reported (older server)
    top_level_count: int = 0  # a sending server: top-level sources that exist after expansion
    top_dir: bool = False  # a sending server: exactly one, and it is a directory
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class SetupProgress:
    """The server's set-up is waiting, not hung (§2.11): for what, how long so far, how long at most."""

    stage: int
    waited_ms: int
    limit_ms: int
    detail: str = ""

    def describe(self) -> str:
        """One line for the user: what the server waits for, for how long so far and at most."""
        times = f"{self.waited_ms / 1000:.0f} s so far, at most {self.limit_ms / 1000:.0f} s"
        if self.stage == STAGE_PORT_WAIT:
            return f"every port in {self.detail} is busy; waiting for one ({times})"
        return f"set-up waiting (stage {self.stage}: {self.detail}; {times})"


def frame(kind: int, body: bytes) -> bytes:
    return BOOT_HEADER.pack(BOOT_MAGIC, PROTOCOL_VERSION, kind, 0, len(body)) + body


def read_header(header: bytes, *expect: int) -> tuple[int, int]:
    """(type, body length) of a bootstrap header whose type is one of `expect`;
    ProtocolError when it is not ours."""
    magic, version, kind, _, length = BOOT_HEADER.unpack(header)
    if magic != BOOT_MAGIC:
        raise ProtocolError("not an escp bootstrap message")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"peer speaks protocol version {version}, this is {PROTOCOL_VERSION}")
    if kind not in expect:
        raise ProtocolError(f"unexpected bootstrap message type {kind}")
    if length > (REPORT_MAX_BODY if kind == BOOT_SESSION_REPORT else BOOT_MAX_BODY):
        raise ProtocolError(f"bootstrap body of {length} bytes is too large")
    return int(kind), int(length)


def parse_header(header: bytes, expect: int) -> int:
    """Body length from a bootstrap header of type `expect`; ProtocolError when it is not ours."""
    return read_header(header, expect)[1]


def _sources(b: flatbuffers.Builder, paths: tuple[bytes, ...]) -> int:
    tables = []
    for path in paths:
        vec = b.CreateByteVector(path)
        fb.SourceStart(b)
        fb.SourceAddPath(b, vec)
        tables.append(fb.SourceEnd(b))
    return fb_table_vector(b, fb.SessionInitStartSourcesVector, tables)


def _filelist(b: flatbuffers.Builder, items: tuple[ListItem, ...]) -> int:
    tables = []
    for item in items:
        src, dst = b.CreateByteVector(item.src), b.CreateByteVector(item.dst)
        fb.ListItemStart(b)
        fb.ListItemAddSrc(b, src)
        fb.ListItemAddDst(b, dst)
        tables.append(fb.ListItemEnd(b))
    return fb_table_vector(b, fb.SessionInitStartFilelistVector, tables)


def encode_init(s: SessionInit) -> bytes:
    size = len(s.dest_path) + sum(len(p) + 16 for p in s.sources) + sum(len(i.src) + len(i.dst) + 24 for i in s.filelist)
    b = flatbuffers.Builder(256 + size)
    key = b.CreateByteVector(s.key)
    dest = b.CreateByteVector(s.dest_path)
    bind = b.CreateString(s.bind_address)
    eng = b.CreateString(s.rx_engine)
    log = b.CreateString(s.log_path)
    peer = b.CreateString(s.peer_address)
    tx_eng = b.CreateString(s.tx_engine)
    sources = _sources(b, s.sources)
    filelist = _filelist(b, s.filelist)
    fb.SessionInitStart(b)
    fb.SessionInitAddVersion(b, s.version)
    fb.SessionInitAddSessionId(b, s.session_id)
    fb.SessionInitAddKey(b, key)
    fb.SessionInitAddFlags(b, s.flags)
    fb.SessionInitAddBlockSize(b, s.block_size)
    fb.SessionInitAddStreams(b, s.streams)
    fb.SessionInitAddPortStart(b, s.port_start)
    fb.SessionInitAddPortRange(b, s.port_range)
    fb.SessionInitAddBindAddress(b, bind)
    fb.SessionInitAddDestPath(b, dest)
    fb.SessionInitAddTopLevelCount(b, s.top_level_count)
    fb.SessionInitAddRxEngine(b, eng)
    fb.SessionInitAddRekeyBytes(b, s.rekey_bytes)
    fb.SessionInitAddCompressLevel(b, s.compress_level)
    fb.SessionInitAddLogPath(b, log)
    fb.SessionInitAddClientTimeNs(b, s.client_time_ns)
    fb.SessionInitAddIdleTimeoutMs(b, s.idle_timeout_ms)
    fb.SessionInitAddServerRole(b, ROLE_CODES[s.server_role])
    fb.SessionInitAddServerLink(b, LINK_CODES[s.server_link])
    fb.SessionInitAddPeerAddress(b, peer)
    fb.SessionInitAddPeerPort(b, s.peer_port)
    fb.SessionInitAddSources(b, sources)
    fb.SessionInitAddFilelist(b, filelist)
    fb.SessionInitAddReport(b, s.report)
    fb.SessionInitAddTxEngine(b, tx_eng)
    fb.SessionInitAddRateLimit(b, s.rate_limit)
    fb.SessionInitAddSetupFeatures(b, s.setup_features)
    b.Finish(fb.SessionInitEnd(b))
    return frame(BOOT_SESSION_INIT, bytes(b.Output()))


def fb_text(v: bytes | None) -> str:
    return (v or b"").decode("utf-8", "replace")[:1024]


def _code(table: dict[Any, int], code: int, what: str) -> Any:
    for value, c in table.items():
        if c == code:
            return value
    raise ProtocolError(f"unknown {what} {code}")


def fb_tables(root: object, name: str, body: bytes) -> list[Any]:
    """The tables of the vector field `name` (a FlatBuffers accessor pair `name` and
    `nameLength`), its length bounded by the body before any is read."""
    n = getattr(root, f"{name}Length")()
    if n < 0 or n * 4 > len(body):
        raise ProtocolError(f"{name} vector claims {n} entries")
    get = getattr(root, name)
    return [get(i) for i in range(n)]


def decode_init(body: bytes) -> SessionInit:
    try:
        r = fb_root(fb.SessionInit, body)
        s = SessionInit(
            version=r.Version(),  # type: ignore[attr-defined]
            session_id=r.SessionId(),  # type: ignore[attr-defined]
            key=fb_bytes(r, 8, body),
            flags=r.Flags(),  # type: ignore[attr-defined]
            block_size=r.BlockSize(),  # type: ignore[attr-defined]
            streams=r.Streams(),  # type: ignore[attr-defined]
            port_start=r.PortStart(),  # type: ignore[attr-defined]
            port_range=r.PortRange(),  # type: ignore[attr-defined]
            bind_address=fb_text(r.BindAddress()),  # type: ignore[attr-defined]
            dest_path=fb_bytes(r, 22, body),
            top_level_count=r.TopLevelCount(),  # type: ignore[attr-defined]
            rx_engine=fb_text(r.RxEngine()),  # type: ignore[attr-defined]
            rekey_bytes=r.RekeyBytes(),  # type: ignore[attr-defined]
            compress_level=r.CompressLevel(),  # type: ignore[attr-defined]
            log_path=fb_text(r.LogPath()),  # type: ignore[attr-defined]
            client_time_ns=r.ClientTimeNs(),  # type: ignore[attr-defined]
            idle_timeout_ms=r.IdleTimeoutMs(),  # type: ignore[attr-defined]
            server_role=_code(ROLE_CODES, r.ServerRole(), "server data role"),  # type: ignore[attr-defined]
            server_link=_code(LINK_CODES, r.ServerLink(), "server link role"),  # type: ignore[attr-defined]
            peer_address=fb_text(r.PeerAddress()),  # type: ignore[attr-defined]
            peer_port=r.PeerPort(),  # type: ignore[attr-defined]
            sources=tuple(fb_bytes(t, 4, body) for t in fb_tables(r, "Sources", body)),
            filelist=tuple(ListItem(fb_bytes(t, 4, body), fb_bytes(t, 6, body)) for t in fb_tables(r, "Filelist", body)),
            report=bool(r.Report()),  # type: ignore[attr-defined]
            tx_engine=fb_text(r.TxEngine()),  # type: ignore[attr-defined]
            rate_limit=r.RateLimit(),  # type: ignore[attr-defined]
            setup_features=r.SetupFeatures(),  # type: ignore[attr-defined]
        )
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"malformed SessionInit ({type(exc).__name__})") from None
    s.validate()
    return s


def encode_reply(s: SessionReply) -> bytes:
    b = flatbuffers.Builder(256)
    addr = b.CreateString(s.address)
    err = b.CreateString(s.error[:2000])
    cause = b.CreateString(s.error_cause)
    fb.SessionReplyStart(b)
    fb.SessionReplyAddVersion(b, s.version)
    fb.SessionReplyAddAddress(b, addr)
    fb.SessionReplyAddPort(b, s.port)
    fb.SessionReplyAddError(b, err)
    fb.SessionReplyAddErrorCause(b, cause)
    fb.SessionReplyAddDestIsDir(b, s.dest_is_dir)
    fb.SessionReplyAddServerTimeNs(b, s.server_time_ns)
    fb.SessionReplyAddIdleTimeoutMs(b, s.idle_timeout_ms)
    fb.SessionReplyAddTopLevelCount(b, s.top_level_count)
    fb.SessionReplyAddTopDir(b, s.top_dir)
    b.Finish(fb.SessionReplyEnd(b))
    return frame(BOOT_SESSION_REPLY, bytes(b.Output()))


def decode_reply(body: bytes) -> SessionReply:
    try:
        r = fb_root(fb.SessionReply, body)
        return SessionReply(
            version=r.Version(),  # type: ignore[attr-defined]
            address=fb_text(r.Address()),  # type: ignore[attr-defined]
            port=r.Port(),  # type: ignore[attr-defined]
            error=fb_text(r.Error()),  # type: ignore[attr-defined]
            error_cause=fb_text(r.ErrorCause()),  # type: ignore[attr-defined]
            dest_is_dir=bool(r.DestIsDir()),  # type: ignore[attr-defined]
            server_time_ns=r.ServerTimeNs(),  # type: ignore[attr-defined]
            idle_timeout_ms=r.IdleTimeoutMs(),  # type: ignore[attr-defined]
            top_level_count=r.TopLevelCount(),  # type: ignore[attr-defined]
            top_dir=bool(r.TopDir()),  # type: ignore[attr-defined]
        )
    except Exception as exc:
        raise ProtocolError(f"malformed SessionReply ({type(exc).__name__})") from None


def encode_progress(s: SetupProgress) -> bytes:
    b = flatbuffers.Builder(128)
    detail = b.CreateString(s.detail[:1024])
    fb.SetupProgressStart(b)
    fb.SetupProgressAddStage(b, s.stage)
    fb.SetupProgressAddWaitedMs(b, s.waited_ms)
    fb.SetupProgressAddLimitMs(b, s.limit_ms)
    fb.SetupProgressAddDetail(b, detail)
    b.Finish(fb.SetupProgressEnd(b))
    return frame(BOOT_SETUP_PROGRESS, bytes(b.Output()))


def decode_progress(body: bytes) -> SetupProgress:
    try:
        r = fb_root(fb.SetupProgress, body)
        return SetupProgress(
            stage=r.Stage(),  # type: ignore[attr-defined]
            waited_ms=r.WaitedMs(),  # type: ignore[attr-defined]
            limit_ms=r.LimitMs(),  # type: ignore[attr-defined]
            detail=fb_text(r.Detail()),  # type: ignore[attr-defined]
        )
    except Exception as exc:
        raise ProtocolError(f"malformed SetupProgress ({type(exc).__name__})") from None
