"""The initiator: the escp that starts the other one (over ssh, or as a local child) and
writes SessionInit, whatever data role it plays.

Today's one pairing (protocol version 1): the initiator pushes. It is the sender and
the connector; the server it started is the receiver and the listener. `push` runs that
session: it builds SessionInit from the TransferConfig, exchanges it for the server's
SessionReply over the child's pipes, connects the streams, runs a SendSession, and
watches the child: its exit before the session's end ends the session.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable

from ..config import TransferConfig
from ..engine.sources import top_level_kinds
from ..errors import ConnectionFailure, EscpError, escape_name
from ..logsetup import set_session
from ..protocol.bootstrap import SessionInit, SetupProgress, setup_timeout
from ..protocol.flags import SessionFlags
from ..protocol.handshake import StreamSecrets
from ..protocol.wire import KIND_DIR, SETUP_PROGRESS
from ..results import TransferResult
from ..trace import Tracer
from .control import SessionControl
from .send import ROLE, SendOptions, SendSession
from .spawn import ServerProcess
from .streams import connect_streams

log = logging.getLogger("escp")

EXIT_GRACE = 0.5  # the child exited: how long the session may still end normally
CHILD_POLL = 0.2


def session_init(cfg: TransferConfig, sources: list[bytes], dest_path: bytes, traced: bool) -> SessionInit:
    """The session's parameters, as the initiator decides them (§2.3)."""
    kinds = top_level_kinds(sources)
    flags = SessionFlags(
        compress=cfg.compress, sparse=cfg.sparse, preserve=cfg.preserve, no_checksum=not cfg.checksum,
        no_direct=cfg.direct == "never", trace=traced, verbose=cfg.verbose, recursive=cfg.recursive,
        fsync=cfg.fsync, top_dir=len(kinds) == 1 and kinds[0] == KIND_DIR,
        trace_events=traced and bool(cfg.trace_path), dest_dir=cfg.filelist is not None,
    )
    return SessionInit(
        session_id=secrets.randbits(64), key=secrets.token_bytes(16), flags=flags.to_bits(),
        block_size=cfg.block_size, streams=cfg.streams, port_start=cfg.port_start,
        port_range=cfg.port_range, dest_path=dest_path,
        top_level_count=sum(1 for k in kinds if k is not None) or len(kinds),
        bind_address=cfg.bind_address, rx_engine=cfg.rx_engine, rekey_bytes=cfg.rekey_bytes,
        compress_level=cfg.compress_level, log_path=cfg.log_path or "",
        client_time_ns=time.monotonic_ns(), idle_timeout_ms=int(cfg.idle_timeout * 1000),
        setup_features=SETUP_PROGRESS,
    )


class SetupWaits:
    """The server's SetupProgress messages: each one is said (-v shows it: the server is
    waiting for a free port, not hung) and counted."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, progress: SetupProgress) -> None:
        self.count += 1
        log.info("%s: %s", ROLE.peer.value, escape_name(progress.describe()))  # its words: a peer's


def watch_child(proc: ServerProcess, ctl: SessionControl) -> None:
    """The server's process (or the ssh that carries it) exited before the session ended."""
    while not ctl.done.is_set() and not ctl.aborted.is_set():
        if proc.proc.poll() is not None and not ctl.done.wait(EXIT_GRACE):
            errs = proc.remote_errors()
            what = f"ssh channel closed ({ROLE.peer.value} exited)"
            raise ConnectionFailure(f"{what}: {errs}" if errs else what)
        ctl.done.wait(CHILD_POLL)


def push(cfg: TransferConfig, sources: list[bytes], dest_path: bytes, proc: ServerProcess, tracer: Tracer,
         on_session: Callable[[SendSession], None] | None = None) -> TransferResult:
    """Send `sources` to `dest_path` on the server `proc` runs; never raises for transfer
    failures (they are in the result)."""
    init = session_init(cfg, sources, dest_path, tracer.enabled)
    session = SendSession(init, SendOptions.of(cfg, sources), tracer)
    if on_session is not None:
        on_session(session)  # e.g. a progress display reading session.bytes_sent
    start = time.monotonic()
    try:
        set_session(init.session_id)
        log.debug("session %016x: %d streams, block %d, flags %#x", init.session_id, init.streams,
                  init.block_size, init.flags)
        t0 = time.monotonic_ns()
        # the set-up (ssh login, remote start) is bounded: a hung ssh ends; a server waiting
        # for a free port says so, which extends the deadline, boundedly (§2.8)
        waits = SetupWaits()
        reply = proc.exchange(init, setup_timeout(cfg.idle_timeout), waits)
        t1 = time.monotonic_ns()
        if reply.server_time_ns:  # a server that waited for a port replied at the end, not halfway
            session.result.clock_offset_ns = (t1 if waits.count else (t0 + t1) // 2) - reply.server_time_ns
        # scp rule: without a destination directory the single top-level item lands under DEST's name
        rename = None if reply.dest_is_dir else os.path.basename(dest_path.rstrip(b"/")) or None
        session.start(rename, reply.idle_timeout_ms / 1000)
        address, port = cfg.connect_to or (reply.address, reply.port)
        connect_streams(address, port, StreamSecrets.of(init), ROLE, cfg.connect_timeout, session, proc.explain)
        session.ctl.guard(lambda: watch_child(proc, session.ctl), "tx-ssh-watch")
        session.ctl.wait()
    except EscpError as exc:
        session.ctl.abort(exc)
    return session.finish(time.monotonic() - start)
