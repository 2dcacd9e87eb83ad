"""The public API: escp.transfer() runs one transfer (a push today) and returns its result."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from .config import TransferConfig
from .errors import ConnectionFailure, EscpError, UsageError
from .net.spawn import ServerProcess, local_argv, ssh_argv
from .paths import check_local_overlap
from .results import TransferResult
from .target import RemoteTarget, keep_literal
from .trace import NULL_TRACER, Tracer

if TYPE_CHECKING:
    from .net.send import SendSession

SETTLE_OK = 10.0  # after a good session: how long the server may take to exit
SETTLE_FAILED = 3.0  # after a failed one


def transfer(
    sources: Sequence[str | bytes],
    dest: RemoteTarget | str | bytes,
    config: TransferConfig | None = None,
    *,
    tracer: Tracer = NULL_TRACER,
    on_session: Callable[[SendSession], None] | None = None,
) -> TransferResult:
    """Copy sources to dest. A RemoteTarget goes over ssh; a plain path uses a local server.

    Never raises for transfer failures: they are in result.error / result.failures.
    The server is started before the sending side's own modules are imported, so that
    the two processes' start-up (imports: ~0.2 s each here) overlaps.
    """
    cfg = config or TransferConfig()
    if tracer is NULL_TRACER and (cfg.trace_path or cfg.stats):
        from .trace.recorder import RecordingTracer

        tracer = RecordingTracer("sender")
    srcs = [os.fsencode(s) for s in sources]
    if isinstance(dest, RemoteTarget):
        ssh = cfg.ssh
        if dest.port is not None and ssh.port is None:
            ssh = replace(ssh, port=dest.port)
        argv = ssh_argv(ssh, dest.user, dest.host)
        dest_path = dest.path
        where = dest.host.encode() + b":"  # error lines name remote paths as host:path
    else:
        argv = local_argv()
        where = b""
        dest_path = keep_literal(os.fsencode(dest))  # the server expands `~`: here it is a name
        try:
            check_local_overlap(srcs, dest_path, cfg.recursive)
        except UsageError as exc:
            return TransferResult(error=exc)
    try:
        proc = ServerProcess(argv)
    except Exception as exc:  # noqa: BLE001 - surfaced as the result's error
        return TransferResult(error=exc if isinstance(exc, EscpError) else ConnectionFailure(str(exc)))
    from .net.initiator import push  # while the server starts

    result = TransferResult()
    try:
        result = push(cfg, srcs, dest_path, proc, tracer, on_session, where)
    except EscpError as exc:  # the session could not even be built (e.g. --checksum-file)
        result = TransferResult(error=exc)
        return result
    finally:
        proc.finish(timeout=SETTLE_OK if result.error is None else SETTLE_FAILED)
    if tracer.enabled:
        finish_trace(cfg, tracer, result)
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
