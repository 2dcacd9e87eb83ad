"""Tracer hook points used by every pipeline stage.

The engine calls these on its hot path, so the default tracer (NULL_TRACER) does
nothing and costs one method call. A recording tracer (see escp.trace.recorder) keeps
spans, wait spans, counters and instants and exports them as Chrome Trace Events.

Call pattern in a stage worker:

    t0 = tracer.now()
    n = os.preadv(fd, [buf], offset)
    tracer.span(worker, "read", t0, n)          # busy time of a stage, with bytes

    t0 = tracer.now()
    job = queue.get()
    tracer.wait(worker, "read", t0, "starved")  # waited for input
    tracer.wait(worker, "send", t0, "blocked")  # waited for the next stage / the peer

Modules: recorder (RecordingTracer: the hot path), tracedata (TraceData, the recording as
data and its export/load), sched (per-thread schedstat, cgroup throttling, context switches:
where a stage's time went), chrome (Chrome Trace Event JSON of both sides), summary
(per-stage table), sidecpu (a side's CPU split and counters), verdict (what limited the
transfer) and netclass (which kind of network limit). See docs/tuning.md.

Stage names: sender read, checksum, compress, encrypt, send; receiver recv, decrypt,
decompress, verify, write; plus "meta" for the metadata channel. Workers are strings
such as "tx-0" or "rx-3"; the tracer adds the role (sender/receiver).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal, Protocol

WaitKind = Literal["starved", "blocked"]

COUNTER_EVERY = 4  # a stream worker samples its trace counters once every this many blocks


class Tracer(Protocol):
    enabled: bool

    def now(self) -> int:
        """Monotonic time in ns (0 when tracing is off)."""
        ...

    def span(self, worker: str, stage: str, t0: int, nbytes: int = 0) -> None: ...

    def wait(self, worker: str, stage: str, t0: int, kind: WaitKind) -> None: ...

    def counter(self, name: str, value: float) -> None: ...

    def instant(self, worker: str, name: str, args: dict[str, Any] | None = None) -> None: ...


class NullTracer:
    """The tracer that records nothing: the default."""

    enabled = False

    def now(self) -> int:
        return 0

    def span(self, worker: str, stage: str, t0: int, nbytes: int = 0) -> None:
        return None

    def wait(self, worker: str, stage: str, t0: int, kind: WaitKind) -> None:
        return None

    def counter(self, name: str, value: float) -> None:
        return None

    def instant(self, worker: str, name: str, args: dict[str, Any] | None = None) -> None:
        return None


NULL_TRACER = NullTracer()


def export_json(tracer: Tracer, include_events: bool, limit: int) -> bytes:
    """A recording tracer's side as JSON for the peer or the initiator: with the span log
    when asked and it fits in `limit` bytes, else the totals only, else nothing (b"", also
    for a tracer that records nothing). Never fails the transfer."""
    export = getattr(tracer, "export", None)
    if not callable(export):
        return b""
    try:
        blob = json.dumps(export(include_events=include_events)).encode()
        if len(blob) > limit:
            blob = json.dumps(export(include_events=False)).encode()
        if len(blob) > limit:
            logging.getLogger("escp").warning("trace too large to send; omitted")
            return b""
    except Exception:  # noqa: BLE001 - a broken trace must not break the transfer
        logging.getLogger("escp").warning("could not export the trace", exc_info=True)
        return b""
    return blob


__all__ = ["Tracer", "NullTracer", "NULL_TRACER", "WaitKind", "COUNTER_EVERY", "export_json"]
