"""The public API: escp.transfer() runs one transfer, in whichever direction its sources
and destination give (direction.py), and returns its result."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .config import TransferConfig
from .direction import Direction, Route, describe, plan_route
from .errors import ConnectionFailure, EscpError, UsageError
from .net.spawn import ServerProcess, local_argv, ssh_argv
from .paths import check_local_overlap
from .results import TransferResult
from .target import RemoteTarget, keep_literal
from .trace import NULL_TRACER, Tracer

if TYPE_CHECKING:
    from .net.receive import ReceiveSession
    from .net.relay import Relay
    from .net.send import SendSession
    from .trace.tracedata import Role

SETTLE_OK = 10.0  # after a good session: how long the server may take to exit
SETTLE_FAILED = 3.0  # after a failed one


def transfer(
    sources: Sequence[str | bytes | RemoteTarget],
    dest: RemoteTarget | str | bytes,
    config: TransferConfig | None = None,
    *,
    tracer: Tracer = NULL_TRACER,
    on_session: Callable[[SendSession | ReceiveSession | Relay], None] | None = None,
) -> TransferResult:
    """Copy sources to dest. Each is a local path or a RemoteTarget ([user@]host:path): local
    sources to a remote DEST push, remote sources to a local DEST pull, remote to remote goes
    directly between the two hosts (or through this one with config.relay). A plain path
    DEST with local sources uses a local server.

    Never raises for transfer failures: they are in result.error / result.failures.
    The server is started before the local side's own modules are imported, so that the
    processes' start-up (imports: ~0.2 s each here) overlaps.
    """
    cfg = config or TransferConfig()
    try:
        route = plan_route(sources, dest, cfg.filelist is not None)
        if cfg.checksum_file and route.direction in (Direction.PULL, Direction.REMOTE):
            raise UsageError("--checksum-file needs local sources (the manifest is written by the sending side)")
        if cfg.relay and (route.direction is not Direction.REMOTE or cfg.connect_to):
            raise UsageError("-3 applies to remote-to-remote copies only, and without --connect-to "
                             "(the relay connects to both hosts)")
        if route.direction is Direction.LOCAL:
            check_local_overlap(route.sources, route.dest_path, cfg.recursive)
    except UsageError as exc:
        return TransferResult(error=exc)
    local_role: Role = "receiver" if route.direction is Direction.PULL else "sender"
    traced = bool(cfg.trace_path or cfg.stats)
    if tracer is NULL_TRACER and traced and route.direction is not Direction.REMOTE:
        from .trace.recorder import RecordingTracer

        tracer = RecordingTracer(local_role)
    try:
        procs = [ServerProcess(server_argv(cfg, t)) for t in server_targets(route)]
    except Exception as exc:  # noqa: BLE001 - surfaced as the result's error
        return TransferResult(error=exc if isinstance(exc, EscpError) else ConnectionFailure(str(exc)))
    result = TransferResult()
    try:
        result = run_route(cfg, route, procs, tracer, traced, on_session)
    except EscpError as exc:  # the session could not even be built (e.g. --checksum-file)
        result = TransferResult(error=exc)
        return result
    finally:
        for proc in procs:
            proc.finish(timeout=SETTLE_OK if result.error is None else SETTLE_FAILED)
    result.hosts = hosts(route)
    if traced:
        finish_trace(cfg, tracer, result)
    return result


def server_targets(route: Route) -> list[RemoteTarget | None]:
    """Where the servers run, in start order: the sending host first (it expands its sources
    and tells the receiver's side what they are), then the receiving host."""
    if route.direction is Direction.REMOTE:
        return [route.source_host, route.dest_host]
    return [route.source_host if route.direction is Direction.PULL else route.dest_host]


def server_argv(cfg: TransferConfig, target: RemoteTarget | None) -> list[str]:
    if target is None:
        return local_argv()
    ssh = cfg.ssh
    if target.port is not None and ssh.port is None:
        ssh = replace(ssh, port=target.port)
    return ssh_argv(ssh, target.user, target.host)


def run_route(cfg: TransferConfig, route: Route, procs: list[ServerProcess], tracer: Tracer, traced: bool,
              on_session: Callable[[Any], None] | None) -> TransferResult:
    if route.direction is Direction.PULL:
        from .net.initiator import pull  # while the server starts

        assert route.source_host is not None
        return pull(cfg, route.sources, route.dest_path, procs[0], describe(route.source_host), tracer, on_session)
    if route.direction is Direction.REMOTE:
        assert route.source_host is not None and route.dest_host is not None
        names = (describe(route.source_host), describe(route.dest_host))
        if cfg.relay:
            from .net.remote import relay

            return relay(cfg, route.sources, route.dest_path, procs[0], procs[1], names, traced, on_session)
        from .net.remote import remote_to_remote

        return remote_to_remote(cfg, route.sources, route.dest_path, procs[0], procs[1], names, traced)
    from .net.initiator import push

    if route.dest_host is None:  # a local server expands `~`: here it is part of a name
        return push(cfg, route.sources, keep_literal(route.dest_path), procs[0], tracer, on_session)
    where = route.dest_host.host.encode() + b":"  # error lines name remote paths as host:path
    return push(cfg, route.sources, route.dest_path, procs[0], tracer, on_session, where)


def hosts(route: Route) -> dict[str, str]:
    """Which host played each data role, as the user named it."""
    here = f"{socket.gethostname()} (local)"
    sender = describe(route.source_host) if route.source_host is not None else here
    receiver = describe(route.dest_host) if route.dest_host is not None else here
    if route.direction is Direction.LOCAL:
        receiver = f"{socket.gethostname()} (local child)"
    return {"sender": sender, "receiver": receiver}


def finish_trace(cfg: TransferConfig, tracer: Tracer, result: TransferResult) -> None:
    """Summary and verdict from both sides' traces (the local recording and the ones the
    other sides sent); the Chrome trace file when asked."""
    import logging

    from .trace.chrome import write_chrome_trace
    from .trace.recorder import RecordingTracer, TraceData, TraceDataError
    from .trace.summary import summarize

    sides: dict[str, TraceData] = {}
    if isinstance(tracer, RecordingTracer):
        sides[tracer.role] = tracer.snapshot()
    for role, doc in result.traces.items():
        if role in sides:
            continue
        try:
            sides[role] = RecordingTracer.load(doc)
        except TraceDataError as exc:
            logging.getLogger("escp").warning("%s trace ignored: %s", role, exc)
    if not sides:
        return
    for role, data in sides.items():
        data.host = result.hosts.get(role, "")
    sender, receiver = sides.get("sender"), sides.get("receiver")
    result.stats = summarize(sender, receiver)
    if cfg.trace_path:
        try:
            write_chrome_trace(cfg.trace_path, sender, receiver, receiver_offset_ns=result.clock_offset_ns)
            result.trace_written = True
        except EscpError as exc:
            logging.getLogger("escp").warning("%s", exc.one_line())
        except Exception as exc:  # noqa: BLE001 - never break a transfer because of the trace
            logging.getLogger("escp").warning("could not write trace %s: %s", cfg.trace_path, exc)



