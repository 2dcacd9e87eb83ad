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

__all__ = ["Tracer", "NullTracer", "NULL_TRACER", "WaitKind", "COUNTER_EVERY"]
