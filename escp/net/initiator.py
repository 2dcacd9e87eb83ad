"""The initiator: the escp that starts the other one (over ssh, or as a local child) and
writes SessionInit, whatever data role it plays (docs/protocol.md §1.1).

`push` sends local sources: the initiator is the sender and the connector, its server the
receiver and the listener (protocol version 1's pairing). `pull` fetches remote ones: the
initiator is the receiver and the connector, its server the sender and the listener; the
local receiver holds the remote to what was asked for (request.py) and takes the scp
destination rules from the server's account of its sources (SessionReply). Both watch the
child: its exit before the session's end ends the session.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..config import TransferConfig
from ..engine.sink import FileStore
from ..engine.sources import top_level_shape
from ..errors import ConnectionFailure, EscpError, escape_name
from ..logsetup import set_session
from ..protocol.bootstrap import (
    SETUP_MIN_S,
    ListItem,
    SessionInit,
    SessionReply,
    SetupProgress,
    setup_timeout,
)
from ..protocol.flags import SessionFlags
from ..protocol.handshake import StreamSecrets
from ..protocol.messages import FileResult
from ..protocol.receiver_core import RxFile
from ..protocol.report import SessionReport
from ..protocol.request import RequestRule
from ..protocol.roles import DataRole
from ..protocol.wire import KIND_DIR, SETUP_PROGRESS, STATUS_OK, STATUS_SKIPPED
from ..results import Report, TransferResult
from ..trace import Tracer
from .control import SessionControl
from .receive import ReceiveSession
from .send import SendOptions, SendSession
from .spawn import ServerProcess
from .streams import connect_streams

log = logging.getLogger("escp")

EXIT_GRACE = 0.5  # the child exited: how long the session may still end normally
CHILD_POLL = 0.2
REPORT_FAILED_S = 2.0  # after a failed session: how long the server's report may take to come


def session_init(cfg: TransferConfig, traced: bool, top_level_count: int = 0, top_dir: bool = False,
                 dest_path: bytes = b"", **roles: Any) -> SessionInit:
    """The session's parameters, as the initiator decides them (§2.3); `roles`: the
    server's data and link roles and what they need (sources, peer, report...)."""
    flags = SessionFlags(
        compress=cfg.compress, sparse=cfg.sparse, preserve=cfg.preserve, no_checksum=not cfg.checksum,
        no_direct=cfg.direct == "never", trace=traced, verbose=cfg.verbose, recursive=cfg.recursive,
        fsync=cfg.fsync, top_dir=top_dir, trace_events=traced and bool(cfg.trace_path),
        dest_dir=cfg.filelist is not None, skip_quick=cfg.skip_existing == "quick",
        skip_digest=cfg.skip_existing == "digest", resume=cfg.resume,
    )
    return SessionInit(
        session_id=secrets.randbits(64), key=secrets.token_bytes(16), flags=flags.to_bits(),
        block_size=cfg.block_size, streams=cfg.streams, port_start=cfg.port_start,
        port_range=cfg.port_range, dest_path=dest_path, top_level_count=top_level_count,
        bind_address=cfg.bind_address, rx_engine=cfg.rx_engine, rekey_bytes=cfg.rekey_bytes,
        compress_level=cfg.compress_level, log_path=cfg.log_path or "",
        client_time_ns=time.monotonic_ns(), idle_timeout_ms=int(cfg.idle_timeout * 1000),
        setup_features=SETUP_PROGRESS, **roles,
    )


def sending_server(cfg: TransferConfig, traced: bool, sources: list[bytes]) -> SessionInit:
    """SessionInit for a server that sends `sources` (remote paths or patterns) and listens."""
    items = tuple(ListItem(e.src, e.dst) for e in cfg.filelist or ())
    return session_init(cfg, traced, server_role=DataRole.SENDER, sources=tuple(sources), filelist=items,
                        report=True, tx_engine=cfg.tx_engine, rate_limit=cfg.limit_bytes_per_s)


def receiver_view(init: SessionInit, dest_path: bytes, reply: SessionReply) -> SessionInit:
    """The session as its receiver sees it when the sender is a server: the destination and
    the sender's account of its top level (SessionReply) fill in what SessionInit leaves
    empty for a sending server (§9.6)."""
    flags = replace(init.session_flags, top_dir=reply.top_dir and not init.session_flags.dest_dir)
    return replace(init, dest_path=dest_path, top_level_count=reply.top_level_count, flags=flags.to_bits(),
                   idle_timeout_ms=reply.idle_timeout_ms or init.idle_timeout_ms)


def request_rule(cfg: TransferConfig, sources: list[bytes], reply: SessionReply) -> RequestRule:
    """What the user asked for, from the command line only (request.py)."""
    if cfg.filelist is not None:
        return RequestRule.for_filelist([(e.src, e.dst) for e in cfg.filelist], cfg.recursive)
    single_file = reply.top_level_count == 1 and not reply.top_dir
    return RequestRule.for_sources(sources, cfg.recursive, single_top_file=single_file)


class SetupWaits:
    """A server's SetupProgress messages: each one is said (-v shows it: the server is
    waiting for a free port, not hung) and counted."""

    def __init__(self, server: DataRole) -> None:
        self.server = server
        self.count = 0

    def __call__(self, progress: SetupProgress) -> None:
        self.count += 1
        log.info("%s: %s", self.server.value, escape_name(progress.describe()))  # its words: a peer's


def exchange(proc: ServerProcess, init: SessionInit, cfg: TransferConfig) -> tuple[SessionReply, int]:
    """SessionInit out, SessionReply in; with our clock minus the server's, estimated over
    the exchange (0: not reported), for merging the traces. The set-up (ssh login, remote
    start) is bounded: a hung ssh ends; a server waiting for a free port says so, which
    extends the deadline, boundedly (§2.11)."""
    waits = SetupWaits(init.server_role)
    t0 = time.monotonic_ns()
    reply = proc.exchange(init, setup_timeout(cfg.idle_timeout), waits)
    t1 = time.monotonic_ns()
    if not reply.server_time_ns:
        return reply, 0
    # a server that waited for a port replied at the end of the exchange, not halfway
    return reply, (t1 if waits.count else (t0 + t1) // 2) - reply.server_time_ns


def watch_child(proc: ServerProcess, ctl: SessionControl) -> None:
    """The server's process (or the ssh that carries it) exited before the session ended."""
    while not ctl.done.is_set() and not ctl.aborted.is_set():
        if proc.proc.poll() is not None and not ctl.done.wait(EXIT_GRACE):
            errs = proc.remote_errors()
            what = f"ssh channel closed ({proc.role.value} exited)"
            raise ConnectionFailure(f"{what}: {errs}" if errs else what)
        ctl.done.wait(CHILD_POLL)


def push(cfg: TransferConfig, sources: list[bytes], dest_path: bytes, proc: ServerProcess, tracer: Tracer,
         on_session: Callable[[SendSession], None] | None = None, where: bytes = b"") -> TransferResult:
    """Send `sources` to `dest_path` on the server `proc` runs; never raises for transfer
    failures (they are in the result). `where` prefixes destination paths in error lines
    (`host:` for a remote server)."""
    count, top_dir = top_level_shape(sources) if cfg.filelist is None else (0, False)
    init = session_init(cfg, tracer.enabled, count, top_dir, dest_path=dest_path)
    session = SendSession(init, SendOptions.of(cfg, sources), tracer)
    if on_session is not None:
        on_session(session)  # e.g. a progress display reading session.bytes_sent
    start = time.monotonic()
    try:
        set_session(init.session_id)
        log.debug("session %016x: push, %d streams, block %d, flags %#x", init.session_id, init.streams,
                  init.block_size, init.flags)
        reply, session.result.clock_offset_ns = exchange(proc, init, cfg)
        # scp rule: without a destination directory the single top-level item lands under DEST's name
        rename = None if reply.dest_is_dir else os.path.basename(dest_path.rstrip(b"/")) or None
        root = dest_path if reply.dest_is_dir else os.path.dirname(dest_path.rstrip(b"/"))
        session.start(rename, reply.idle_timeout_ms / 1000, dest_root=where + root)
        address, port = cfg.connect_to or (reply.address, reply.port)
        connect_streams(address, port, StreamSecrets.of(init), DataRole.SENDER, cfg.connect_timeout, session,
                        proc.explain)
        session.ctl.guard(lambda: watch_child(proc, session.ctl), "tx-ssh-watch")
        session.ctl.wait()
    except EscpError as exc:
        session.ctl.abort(exc)
    return session.finish(time.monotonic() - start)


def remote_name(host: str, path: bytes | None, fallback: bytes) -> bytes:
    """A remote file as the user names it: host:path."""
    return host.encode() + b":" + (path if path is not None else fallback)


def add_report(report: Report, host: str, remote: SessionReport | None, role: DataRole, sent_too: bool) -> None:
    """A server's report in the user's result: the sources it could not send (and, with
    `sent_too`, the files that failed once sent), named host:path; its trace as `role`'s."""
    if remote is None:
        return
    for p in remote.problems:
        path = remote_name(host, p.path, b"")
        if p.sent:
            if sent_too:
                report.file_done(path, b"", 0, False, False, p.cause, p.message)
            continue  # otherwise the local side reported it itself
        err = EscpError(p.message, path=path)
        err.cause = p.cause
        report.source_problem(err, p.warning)
    if remote.problems_dropped:
        log.warning("%s: %d more problems not listed", host, remote.problems_dropped)
    if remote.trace_json:
        try:
            trace = json.loads(remote.trace_json)
        except ValueError:
            log.warning("%s sent an unreadable trace; ignored", host)
            return
        report.result.traces[role.value] = trace


def pull(cfg: TransferConfig, sources: list[bytes], dest_path: bytes, proc: ServerProcess, host: str,
         tracer: Tracer, on_session: Callable[[ReceiveSession], None] | None = None) -> TransferResult:
    """Fetch `sources` (paths or patterns on `host`) into the local `dest_path`; never raises
    for transfer failures (they are in the result)."""
    init = sending_server(cfg, tracer.enabled, sources)
    report = Report(cfg.quiet)
    result = report.result
    start = time.monotonic()
    set_session(init.session_id)
    log.debug("session %016x: pull, %d streams, block %d, flags %#x", init.session_id, init.streams,
              init.block_size, init.flags)
    try:
        reply, offset = exchange(proc, init, cfg)
        result.clock_offset_ns = -offset  # receiver + offset = sender
        rx_init = receiver_view(init, dest_path, reply)
        store = FileStore.for_session(rx_init)
    except EscpError as exc:
        result.error = exc
        return result
    request = request_rule(cfg, sources, reply)

    def on_result(f: RxFile, r: FileResult, cause: str) -> None:
        at_source = f.end is not None and f.end.status != STATUS_OK  # the remote failed it: name the remote file
        name = remote_name(host, request.remote_path(f.entry.name), f.entry.name) if at_source \
            else store.display(f.parts, f.entry.name)
        skipped = r.status == STATUS_SKIPPED
        resumed = session.core.kept_bytes(f) if r.status == STATUS_OK else 0
        report.file_done(name, b"/".join(f.parts), f.entry.size, f.entry.kind == KIND_DIR,
                         r.status == STATUS_OK or skipped, cause, r.message, skipped=skipped, resumed=resumed)

    session = ReceiveSession(rx_init, store, cfg.idle_timeout, tracer, cfg.cpus, request=request,
                             trace_to_peer=False, on_result=on_result)
    if on_session is not None:
        on_session(session)
    ctl = session.ctl
    try:
        session.start()
        address, port = cfg.connect_to or (reply.address, reply.port)
        connect_streams(address, port, StreamSecrets.of(init), DataRole.RECEIVER, cfg.connect_timeout, session,
                        proc.explain)
        ctl.guard(lambda: watch_child(proc, ctl), "rx-ssh-watch")
        ctl.wait()
    except EscpError as exc:
        ctl.abort(exc)
    except BaseException:  # e.g. ^C: no temp file may stay behind in the local destination
        ctl.abort(ConnectionFailure("interrupted"))
        raise
    finally:
        session.cleanup()
    done = ctl.done.is_set()
    remote = proc.read_report(max(cfg.idle_timeout, SETUP_MIN_S) if done else REPORT_FAILED_S)
    if done and remote is None:
        log.warning("the sender's report did not arrive: problems it saw with its sources are not shown")
    add_report(report, host, remote, DataRole.SENDER, sent_too=False)
    result.seconds = time.monotonic() - start
    result.bytes_sent = session.bytes_received
    if ctl.error is not None and not done:
        result.error = ctl.error
    return result
