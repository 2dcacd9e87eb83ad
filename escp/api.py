"""The public API: escp.transfer() runs one push transfer and returns its result."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .config import TransferConfig
from .errors import ConnectionFailure, EscpError
from .net.spawn import ReceiverProcess, local_argv, ssh_argv
from .results import TransferResult
from .target import RemoteTarget
from .trace import NULL_TRACER, Tracer

if TYPE_CHECKING:
    from .net.sender import SenderSession


def transfer(
    sources: Sequence[str | bytes],
    dest: RemoteTarget | str | bytes,
    config: TransferConfig | None = None,
    *,
    tracer: Tracer = NULL_TRACER,
    on_session: Callable[[SenderSession], None] | None = None,
) -> TransferResult:
    """Copy sources to dest. A RemoteTarget goes over ssh; a plain path uses a local receiver.

    Never raises for transfer failures: they are in result.error / result.failures.
    The receiver is started before the sender's own modules are imported, so that the two
    processes' start-up (imports: ~0.2 s each here) overlaps.
    """
    cfg = config or TransferConfig()
    if tracer is NULL_TRACER and (cfg.trace_path or cfg.stats):
        from .trace.recorder import RecordingTracer

        tracer = RecordingTracer("sender")
    srcs = [os.fsencode(s) for s in sources]
    if isinstance(dest, RemoteTarget):
        ssh = cfg.ssh
        if dest.port is not None and ssh.port is None:
            from dataclasses import replace

            ssh = replace(ssh, port=dest.port)
        argv = ssh_argv(ssh, dest.user, dest.host)
        dest_path = dest.path
    else:
        argv = local_argv()
        dest_path = os.fsencode(dest)
    if not isinstance(dest, RemoteTarget):
        from .errors import UsageError
        from .paths import check_local_overlap

        try:
            check_local_overlap(srcs, dest_path, cfg.recursive)
        except UsageError as exc:
            return _failed(exc)
    try:
        proc = ReceiverProcess(argv)
    except Exception as exc:  # noqa: BLE001 - surfaced as the result's error
        return _failed(exc if isinstance(exc, EscpError) else ConnectionFailure(str(exc)))
    from .net.sender import SenderSession  # while the receiver starts

    result = TransferResult()
    try:
        session = SenderSession(cfg, srcs, dest_path, proc, tracer)
    except EscpError as exc:
        result.error = exc
        proc.finish(timeout=3)
        return result
    if on_session is not None:
        on_session(session)  # e.g. a progress display reading session.bytes_sent
    try:
        result = session.run()
    finally:
        proc.finish(timeout=10 if result.error is None else 3)
    if tracer.enabled:
        finish_trace(cfg, tracer, result)
    return result


def _failed(error: EscpError) -> TransferResult:
    result = TransferResult()
    result.error = error
    return result


def finish_trace(cfg: TransferConfig, tracer: Tracer, result: TransferResult) -> None:
    """Summary and verdict from both sides' traces; the Chrome trace file when asked."""
    import logging

    from .trace.recorder import RecordingTracer, TraceDataError
    from .trace.summary import summarize

    if not isinstance(tracer, RecordingTracer):
        return
    receiver = None
    if result.receiver_trace is not None:
        try:
            receiver = RecordingTracer.load(result.receiver_trace)
        except TraceDataError as exc:
            logging.getLogger("escp").warning("receiver trace ignored: %s", exc)
    mine = tracer.snapshot()
    result.stats = summarize(mine, receiver)
    if cfg.trace_path:
        result.trace_written = tracer.write_chrome(cfg.trace_path, receiver,
                                                   receiver_offset_ns=result.clock_offset_ns, mine=mine)
