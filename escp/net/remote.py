"""Remote to remote: `escp hostA:src... hostB:dst`, directly from A to B (the default) or
through this host (`-3`, relay.py), docs/protocol.md §2.9 and §2.10.

Directly, the initiator runs no data session. It starts both servers over their own ssh
channels and hands each what it needs, in this order:

1. A (sender, listener) gets a SessionInit with the sources; it expands them, binds its
   port and replies with its address and port and the shape of its top level.
2. B (receiver, connector) gets a SessionInit with the same session key and id, the
   destination, A's top-level count and kind (scp's destination rules, §9.6) and A's
   address and port as its peer; it plans its destination, replies, and opens the streams
   to A. A needs no credentials for B, nor B for A: the key reached both over ssh.
3. Both run the session between themselves; each writes a SessionReport when it ends. The
   user's result is A's report (every file's verdict, the sources it could not send), the
   error the first failing side's; the trace is A's and B's.

The first side to fail (an error in its report, or an exit without one) ends the other:
its ssh channel is closed, which aborts it. A side that outlives its peer by more than the
peer's idle deadline allows is ended the same way.

Through this host, A is a sending server as in a pull and B a receiving server as in a
push; the Relay joins the two sessions frame by frame.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..config import TransferConfig
from ..errors import EXIT_USAGE, ConnectionFailure, EscpError
from ..logsetup import set_session
from ..protocol.bootstrap import SETUP_MIN_S, SessionInit, SessionReply, setup_timeout
from ..protocol.handshake import StreamSecrets
from ..protocol.report import SessionReport
from ..protocol.roles import DataRole, Link
from ..protocol.sender_core import FileVerdict
from ..protocol.wire import KIND_DIR
from ..results import Report, TransferResult
from .control import KEEPALIVE_GRACE, wait_readable
from .initiator import (
    REPORT_FAILED_S,
    add_report,
    exchange,
    receiver_view,
    remote_name,
    request_rule,
    sending_server,
    session_init,
    watch_child,
)
from .relay import Relay
from .spawn import ServerProcess
from .streams import connect_streams

log = logging.getLogger("escp")

REPORT_STALL = 30.0  # a report that has started may pause this long between chunks
FAILED_PEER_S = 5.0  # after one side failed: how long the other may take to report its own end
POLL = 0.2


def remote_error(role: DataRole, host: str, report: SessionReport | None, proc: ServerProcess) -> EscpError:
    """The error of a server that failed: its own line from the report, else its stderr."""
    if report is None:
        errs = proc.remote_errors()
        return EscpError(f"{role.value} on {host} ended without a report" + (f": {errs}" if errs else ""))
    text = report.error.removeprefix("escp: ")
    prefix = f"{report.error_cause} error: "
    err = EscpError(f"{role.value} on {host}: {text.removeprefix(prefix)}")
    err.cause = report.error_cause or "error"
    if err.cause == "usage":
        err.exit_code = EXIT_USAGE
    return err


def collect_reports(procs: list[ServerProcess], grace: float) -> tuple[list[SessionReport | None], list[int]]:
    """Wait for each server's report (or its end without one), in the order they come."""
    reports: list[SessionReport | None] = [None] * len(procs)
    order: list[int] = []
    pending = set(range(len(procs)))
    deadline: float | None = None
    while pending:
        for i in sorted(pending):
            proc = procs[i]
            assert proc.proc.stdout is not None
            if not wait_readable(proc.proc.stdout.fileno(), 0) and proc.proc.poll() is None:
                continue
            reports[i] = proc.read_report(REPORT_STALL)
            pending.discard(i)
            order.append(i)
            failed = reports[i] is None or bool(reports[i].error)  # type: ignore[union-attr]
            if failed:
                for j in pending:
                    procs[j].close_stdin()  # the peer cannot finish without this side: end it now
            deadline = time.monotonic() + (FAILED_PEER_S if failed else grace)
        if pending and deadline is not None and time.monotonic() > deadline:
            for j in sorted(pending):
                procs[j].close_stdin()
                reports[j] = procs[j].read_report(FAILED_PEER_S)
                order.append(j)
            break
        if pending:
            time.sleep(POLL)
    return reports, order


@dataclass(frozen=True)
class TwoServers:
    """Both servers set up: A first (it expands its sources), then B (told A's account)."""

    init_a: SessionInit
    reply_a: SessionReply
    init_b: SessionInit
    reply_b: SessionReply
    offset: int  # B's clock + offset = A's clock (receiver + offset = sender), for the trace


def set_up(cfg: TransferConfig, traced: bool, sources: list[bytes], procs: tuple[ServerProcess, ServerProcess],
           for_b: Callable[[SessionInit, SessionReply], SessionInit]) -> TwoServers:
    """A's SessionInit out and its reply in, then B's (made by `for_b` from A's); EscpError
    when either refuses or fails."""
    init_a = sending_server(cfg, traced, sources)
    set_session(init_a.session_id)
    reply_a, offset_a = exchange(procs[0], init_a, cfg)
    init_b = for_b(init_a, reply_a)
    reply_b, offset_b = exchange(procs[1], init_b, cfg)
    return TwoServers(init_a, reply_a, init_b, reply_b, offset_b - offset_a)


def remote_to_remote(cfg: TransferConfig, sources: list[bytes], dest_path: bytes, proc_a: ServerProcess,
                     proc_b: ServerProcess, names: tuple[str, str], traced: bool) -> TransferResult:
    """Copy `sources` on A (proc_a) to `dest_path` on B (proc_b); never raises for transfer failures."""
    def connecting_receiver(init_a: SessionInit, reply_a: SessionReply) -> SessionInit:
        address, port = cfg.connect_to or (reply_a.address, reply_a.port)
        return replace(receiver_view(init_a, dest_path, reply_a), server_role=DataRole.RECEIVER,
                       server_link=Link.CONNECTOR, peer_address=address, peer_port=port, sources=(), filelist=(),
                       tx_engine="", rate_limit=0)

    report = Report(cfg.quiet)
    result = report.result
    start = time.monotonic()
    try:
        setup = set_up(cfg, traced, sources, (proc_a, proc_b), connecting_receiver)
    except EscpError as exc:
        result.error = exc
        return result
    grace = KEEPALIVE_GRACE * cfg.idle_timeout + setup_timeout(cfg.idle_timeout)
    (rep_a, rep_b), order = collect_reports([proc_a, proc_b], grace)
    for i in order:
        rep = (rep_a, rep_b)[i]
        if rep is None or rep.error:
            role = (DataRole.SENDER, DataRole.RECEIVER)[i]
            result.error = remote_error(role, names[i], rep, (proc_a, proc_b)[i])
            break
    add_report(report, names[0], rep_a, DataRole.SENDER, sent_too=True)
    add_report(report, names[1], rep_b, DataRole.RECEIVER, sent_too=False)
    if rep_a is not None:
        result.files_ok = rep_a.files_ok
        result.files_failed = max(result.files_failed, rep_a.files_failed)
        result.bytes_payload = result.bytes_sent = rep_a.nbytes
        result.files_skipped, result.bytes_skipped = rep_a.files_skipped, rep_a.bytes_skipped
        result.files_resumed, result.bytes_resumed = rep_a.files_resumed, rep_a.bytes_resumed
    result.clock_offset_ns = setup.offset
    result.seconds = time.monotonic() - start
    return result


def relay(cfg: TransferConfig, sources: list[bytes], dest_path: bytes, proc_a: ServerProcess,
          proc_b: ServerProcess, names: tuple[str, str], traced: bool,
          on_session: Callable[[Relay], None] | None = None) -> TransferResult:
    """Copy `sources` on A to `dest_path` on B through this host; never raises for transfer failures."""

    def listening_receiver(_init_a: SessionInit, reply_a: SessionReply) -> SessionInit:
        return session_init(cfg, traced, reply_a.top_level_count, reply_a.top_dir, dest_path=dest_path)

    report = Report(cfg.quiet)
    result = report.result
    start = time.monotonic()
    try:
        setup = set_up(cfg, traced, sources, (proc_a, proc_b), listening_receiver)
    except EscpError as exc:
        result.error = exc
        return result
    init_a, reply_a, init_b, reply_b = setup.init_a, setup.reply_a, setup.init_b, setup.reply_b
    request = request_rule(cfg, sources, reply_a)

    def verdict(v: FileVerdict) -> None:
        e = v.file.entry
        path = remote_name(names[0], request.remote_path(e.name), e.name)
        report.file_done(path, e.name, e.size, e.kind == KIND_DIR, v.ok, v.cause, v.message, skipped=v.skipped,
                         resumed=r.kept.pop(e.fino, 0) if v.ok else 0)

    r = Relay(receiver_view(init_a, dest_path, reply_a), init_b, request, cfg.idle_timeout,
              reply_b.idle_timeout_ms / 1000, verdict)
    if on_session is not None:
        on_session(r)
    ctl = r.ctl
    try:
        ctl.guard(r.writer.run, "relay-a-writer")
        connect_streams(reply_b.address, reply_b.port, StreamSecrets.of(init_b), DataRole.SENDER,
                        cfg.connect_timeout, r.facing_b, proc_b.explain)
        connect_streams(reply_a.address, reply_a.port, StreamSecrets.of(init_a), DataRole.RECEIVER,
                        cfg.connect_timeout, r.facing_a, proc_a.explain)
        for proc in (proc_a, proc_b):
            ctl.guard(lambda proc=proc: watch_child(proc, ctl), "relay-ssh-watch")  # type: ignore[misc]
        ctl.wait()
    except EscpError as exc:
        ctl.abort(exc)
    except BaseException:  # e.g. ^C: both servers hear of it (ABORT) before their channels close
        ctl.abort(ConnectionFailure("interrupted"))
        raise
    done = ctl.done.is_set()
    remote = proc_a.read_report(max(cfg.idle_timeout, SETUP_MIN_S) if done else REPORT_FAILED_S)
    add_report(report, names[0], remote, DataRole.SENDER, sent_too=False)
    if r.b_trace:
        try:
            result.traces[DataRole.RECEIVER.value] = json.loads(r.b_trace)
        except ValueError:
            log.warning("%s sent an unreadable trace; ignored", names[1])
    result.clock_offset_ns = setup.offset
    result.seconds = time.monotonic() - start
    result.bytes_sent = r.bytes_sent
    if ctl.error is not None and not done:
        result.error = ctl.error
    return result
