"""Recording tracer: keeps stage spans, wait spans, counters and instants of one side.

RecordingTracer implements the escp.trace.Tracer protocol for one side of a transfer
(sender or receiver). The hot path appends one event tuple (a SpanEvent etc., built by
the C tuple constructor) under one lock and adds to the per-(worker, stage) totals;
nothing is formatted until export. The data model and its document are in tracedata.py.

CPU accounting (on by default): each worker thread reads its own clocks at the end of every
span and wait (escp.trace.sched.ThreadClock: its thread CPU clock, and, after time off the
CPU, the run queue time in its /proc/thread-self/schedstat, kept open), so each (worker,
stage) learns how much of its time was on a CPU, runnable (waiting for a CPU: contention or
a cgroup quota) or sleeping (I/O, poll, lock, sleep). A reading costs ~1 µs after time on
the CPU, ~3 µs after a wait. now() takes a reading only when its thread was outside any span
or wait for more than GAP_NS, and books that gap as "untraced". Every
TIMELINE_NS a worker adds "<worker> on-CPU %", "runnable %" and "sleeping %" counters to the
timeline, and, when the process's cgroup has a CPU quota, "cgroup throttled %". The bytes of
each stream's network stage (send / recv) are summed per time bin for the verdict (tracedata
RateBins). The process, cgroup and host counters are read at the start and at snapshot().

Bounds: the totals (busy ns, wait ns by kind, bytes, counts, CPU split) are exact whatever
the number of events. The event log used for the timeline keeps the first max_events // 2
events (start-up) and a ring of the most recent max_events - max_events // 2 events
(steady state and the end); events in between are dropped and counted.

Failures: the tracer never raises into the engine. Any internal error disables recording
and is logged once; the transfer goes on untraced. A kernel without schedstat only turns
the CPU accounting off (the summary says it could not see it).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from pathlib import Path
from time import monotonic_ns
from typing import Any

from . import WaitKind
from . import sched as schedmod
from .tracedata import (
    MAX_LOAD_EVENTS,
    MAX_RATE_BINS,
    ROLES,
    TIMELINE_SERIES,
    CounterEvent,
    CounterTotals,
    InstantEvent,
    RateBins,
    Role,
    SchedTotals,
    SpanEvent,
    StageTotals,
    TraceData,
    TraceDataError,
    WaitEvent,
    load_trace_data,
    new_event,
)

log = logging.getLogger("escp.trace")

GAP_NS = 100_000  # now(): a thread outside spans and waits for longer gets its own reading
OFF_CPU_MIN_NS = 20_000  # a reading looks at the run queue only after this much time off the CPU
TIMELINE_NS = 100_000_000  # a worker's on-CPU / runnable / blocked counters: one sample per this
CGROUP_SAMPLE_NS = 250_000_000  # "cgroup throttled %": one sample per this (only under a quota)
RATE_BIN_NS = 50_000_000  # first width of the per-stream byte bins (doubled to stay in MAX_RATE_BINS)
UNTRACED = "untraced"  # the sched pseudo-stage of time between spans and waits
NET_STAGE: dict[str, str] = {"sender": "send", "receiver": "recv"}

# Per-(worker, stage) totals on the hot path are lists in StageTotals field order:
# busy_ns, starved_ns, blocked_ns, nbytes, spans, starved_waits, blocked_waits (indexes 0..6),
# then the CPU split in SchedTotals order: cpu_ns, runq_ns, covered_ns (7..9).


class _ThreadSched:
    """One worker thread's schedstat clock, its last reading and its timeline interval."""

    __slots__ = ("clock", "cpu", "runq", "t", "worker", "line_t", "line_cpu", "line_runq")

    def __init__(self, clock: schedmod.ThreadClock) -> None:
        self.clock = clock
        self.t, self.cpu, self.runq = clock.read()
        self.worker: str | None = None
        self.line_t, self.line_cpu, self.line_runq = self.t, self.cpu, self.runq

    def take(self) -> tuple[int, int, int]:
        """(on-CPU ns, runnable ns, wall ns) since the last reading; this becomes the last.

        The wall time is the reading's own, not the event's end: a thread that lost the GIL
        or its CPU between the event's end and this reading must not add runnable time to an
        interval that does not contain it. The run queue is read only when the thread was off
        its CPU for OFF_CPU_MIN_NS or more (or the clock pair was not read cleanly): a CPU
        stage on a quiet host costs one thread-clock read (~1 µs), the full reading ~3 µs."""
        pair = self.clock.cpu_time()
        if pair is None or (pair[0] - self.t) - (pair[1] - self.cpu) >= OFF_CPU_MIN_NS:
            t, cpu, runq = self.clock.read()
        else:
            (t, cpu), runq = pair, self.runq  # at most OFF_CPU_MIN_NS of run-queue time moves to the next reading
        out = (cpu - self.cpu, runq - self.runq, t - self.t)
        self.cpu, self.runq, self.t = cpu, runq, t
        return out


class RecordingTracer:
    """Tracer that records one side of a transfer. Thread-safe; never raises."""

    def __init__(self, role: Role, max_events: int = 200_000, *, cpu_accounting: bool = True) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be 'sender' or 'receiver', not {role!r}")
        if max_events < 0:
            raise ValueError("max_events must be >= 0")
        self.role: Role = role
        self.enabled = True
        self.max_events = max_events
        self.failed = False
        self._lock = threading.Lock()
        self._head_cap = max_events // 2
        self._head: list[tuple[Any, ...]] = []
        self._tail_cap = max_events - self._head_cap
        self._tail: deque[tuple[Any, ...]] = deque(maxlen=self._tail_cap)
        self._dropped = 0
        self._anomalies = 0
        self._t_first = 0
        self._t_last = 0
        self._totals: dict[tuple[str, str], list[int]] = {}
        self._counters: dict[str, CounterTotals] = {}
        # CPU accounting
        self._accounting = cpu_accounting
        self._local = threading.local()
        self._untraced: dict[str, list[int]] = {}  # worker -> CPU split of its time outside events
        self._schedstat_missing: str | None = None if cpu_accounting else "CPU accounting turned off"
        self._cpu_start = schedmod.snapshot() if cpu_accounting else None
        quota_dirs = [cg for cg in self._cpu_start.cgroups if cg.quota_cores] if self._cpu_start else []
        self._cg_dirs = [(Path(cg.path), cg.version) for cg in quota_dirs]
        self._cg_t = monotonic_ns()
        self._cg_throttled = sum(cg.throttled_ns for cg in quota_dirs)
        self._net_stage = NET_STAGE[role]
        self._rate_t0 = monotonic_ns()
        self._bin_ns = RATE_BIN_NS
        self._bins: dict[str, list[int]] = {}

    # -- hot path ---------------------------------------------------------------------

    def now(self) -> int:
        t = monotonic_ns()
        if self._accounting and self.enabled:
            try:
                th = getattr(self._local, "th", None)
                if th is None:
                    self._new_thread()
                elif t - th.t > GAP_NS:  # the thread was outside spans and waits: book the gap
                    gap = th.take()
                    if th.worker is not None:
                        with self._lock:
                            self._add_untraced(th.worker, gap)
            except Exception as exc:
                self._fail(exc)
        return t

    def span(self, worker: str, stage: str, t0: int, nbytes: int = 0) -> None:
        if not self.enabled:
            return
        t1 = monotonic_ns()
        try:
            if t0 <= 0 or t0 > t1:  # t0 from another clock or a NullTracer: keep the bytes, no time
                t0 = t1
                self._anomalies += 1  # racy count: diagnostic only
            self._record(worker, stage, t0, t1, new_event(SpanEvent, (worker, stage, t0, t1, nbytes)), 0, 4, nbytes)
        except Exception as exc:
            self._fail(exc)

    def wait(self, worker: str, stage: str, t0: int, kind: WaitKind) -> None:
        if not self.enabled:
            return
        t1 = monotonic_ns()
        try:
            if kind == "starved":
                i_ns, i_n = 1, 5  # _STARVED, _NSTARVED
            elif kind == "blocked":
                i_ns, i_n = 2, 6  # _BLOCKED, _NBLOCKED
            else:
                raise ValueError(f"wait kind must be 'starved' or 'blocked', not {kind!r}")
            if t0 <= 0 or t0 > t1:
                t0 = t1
                self._anomalies += 1
            self._record(worker, stage, t0, t1, new_event(WaitEvent, (worker, stage, t0, t1, kind)), i_ns, i_n, 0)
        except Exception as exc:
            self._fail(exc)

    def _record(self, worker: str, stage: str, t0: int, t1: int, event: tuple[Any, ...], i_ns: int, i_n: int,
                nbytes: int) -> None:
        """Totals, CPU split and log of one span (i_ns 0) or wait (1 starved, 2 blocked)."""
        th: _ThreadSched | None = getattr(self._local, "th", None) if self._accounting else None
        if th is None and self._accounting:
            th = self._new_thread()
        split = th.take() if th is not None else None
        key = (worker, stage)
        with self._lock:
            tot = self._totals.get(key)
            if tot is None:
                tot = self._totals[key] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            tot[i_ns] += t1 - t0
            tot[i_n] += 1
            if nbytes:
                tot[3] += nbytes  # _BYTES
                if stage == self._net_stage:
                    self._add_rate(worker, t1, nbytes)
            if t1 > self._t_last:
                self._t_last = t1
            if t0 < self._t_first or self._t_first == 0:
                self._t_first = t0
            if split is not None:
                tot[7] += split[0]
                tot[8] += split[1]
                tot[9] += split[2]
            self._append(event)
        if th is not None:
            th.worker = worker
            if th.t - th.line_t >= TIMELINE_NS:
                self._timeline(worker, th)

    def counter(self, name: str, value: float) -> None:
        if not self.enabled:
            return
        ts = monotonic_ns()
        try:
            v = float(value)
            with self._lock:
                self._count(ts, name, v)
        except Exception as exc:
            self._fail(exc)

    def instant(self, worker: str, name: str, args: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        ts = monotonic_ns()
        try:
            copied = dict(args) if args else {}
            with self._lock:
                self._append(new_event(InstantEvent, (ts, worker, name, copied)))
        except Exception as exc:
            self._fail(exc)

    # -- helpers (those named _add/_count/_append run under self._lock) --------------------

    def _append(self, event: tuple[Any, ...]) -> None:
        if len(self._head) < self._head_cap:
            self._head.append(event)
            return
        if len(self._tail) == self._tail_cap:
            self._dropped += 1
        self._tail.append(event)

    def _count(self, ts: int, name: str, v: float) -> None:
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = CounterTotals()
        c.count += 1
        c.last = v
        if v < c.minimum:
            c.minimum = v
        if v > c.maximum:
            c.maximum = v
        self._append(new_event(CounterEvent, (ts, name, v)))

    def _add_untraced(self, worker: str, split: tuple[int, int, int]) -> None:
        """A worker's time between spans and waits (its CPU split only: no span, no wait)."""
        s = self._untraced.get(worker)
        if s is None:
            s = self._untraced[worker] = [0, 0, 0]
        s[0] += split[0]
        s[1] += split[1]
        s[2] += split[2]

    def _add_rate(self, worker: str, t: int, nbytes: int) -> None:
        i = (t - self._rate_t0) // self._bin_ns
        if i < 0:
            return
        while i >= MAX_RATE_BINS:  # a long transfer: halve the resolution of every stream
            self._bin_ns *= 2
            for w, old in self._bins.items():
                self._bins[w] = [sum(old[j:j + 2]) for j in range(0, len(old), 2)]
            i = (t - self._rate_t0) // self._bin_ns
        bins = self._bins.get(worker)
        if bins is None:
            bins = self._bins[worker] = []
        if len(bins) <= i:
            bins.extend([0] * (i + 1 - len(bins)))
        bins[i] += nbytes

    def _new_thread(self) -> _ThreadSched | None:
        """This thread's schedstat clock; without one (the kernel has none) the CPU accounting
        stops for every thread."""
        try:
            th = _ThreadSched(schedmod.ThreadClock())
        except schedmod.SchedstatUnavailable as exc:
            self._schedstat_missing = f"no schedstat ({exc})"
            self._accounting = False
            return None
        self._local.th = th
        return th

    def _timeline(self, worker: str, th: _ThreadSched) -> None:
        """The worker's on-CPU / runnable / sleeping shares since its last sample, as counters."""
        t = th.t
        dt = t - th.line_t
        cpu = min(100.0, max(0.0, 100.0 * (th.cpu - th.line_cpu) / dt))
        runq = min(100.0 - cpu, max(0.0, 100.0 * (th.runq - th.line_runq) / dt))
        ts = th.line_t  # a counter holds its value until the next sample: place it at the interval's start
        th.line_t, th.line_cpu, th.line_runq = t, th.cpu, th.runq
        throttled = self._cgroup_sample(t) if self._cg_dirs and t - self._cg_t >= CGROUP_SAMPLE_NS else None
        with self._lock:
            for series, value in zip(TIMELINE_SERIES, (cpu, runq, 100.0 - cpu - runq), strict=True):
                self._count(ts, f"{worker} {series}", value)
            if throttled is not None:
                self._count(throttled[0], "cgroup throttled %", throttled[1])

    def _cgroup_sample(self, t: int) -> tuple[int, float] | None:
        """(interval start, % of it the cgroup spent throttled) since the last sample, or None
        when another worker took this sample."""
        with self._lock:
            t_prev = self._cg_t
            if t - t_prev < CGROUP_SAMPLE_NS:
                return None
            self._cg_t = t
        cgroups = [schedmod.read_cgroup_cpu(path, version) for path, version in self._cg_dirs]
        throttled = sum(cg.throttled_ns for cg in cgroups if cg is not None)
        delta, self._cg_throttled = throttled - self._cg_throttled, throttled
        return t_prev, min(100.0, max(0.0, 100.0 * delta / (t - t_prev)))

    def _fail(self, exc: BaseException) -> None:
        self.enabled = False
        if not self.failed:
            self.failed = True
            log.warning("tracing disabled after an internal error (%s: %s)", exc.__class__.__name__, exc,
                        exc_info=exc)

    # -- export -----------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Events left out of the bounded log (totals still include them)."""
        return self._dropped

    @property
    def anomalies(self) -> int:
        """Spans or waits whose t0 was not a valid earlier time of this clock (recorded as 0 ns).

        Counted outside the lock: a diagnostic, may undercount under contention."""
        return self._anomalies

    def snapshot(self) -> TraceData:
        """A consistent copy of everything recorded so far (may be called while running)."""
        end = schedmod.snapshot() if self._cpu_start is not None else None
        with self._lock:
            events = list(self._head) + list(self._tail)
            totals = {k: StageTotals(*v[:7]) for k, v in self._totals.items()}
            sched = {k: SchedTotals(*v[7:]) for k, v in self._totals.items() if v[9]}
            sched |= {(w, UNTRACED): SchedTotals(*v) for w, v in self._untraced.items()}
            counters = {k: CounterTotals(c.count, c.last, c.minimum, c.maximum) for k, c in self._counters.items()}
            data = TraceData(
                role=self.role, pid=os.getpid(), t_first_ns=self._t_first, t_last_ns=self._t_last,
                max_events=self.max_events, dropped=self._dropped, totals=totals, counter_totals=counters,
                sched=sched,
                rates=RateBins(self._bin_ns, self._rate_t0, {w: list(b) for w, b in self._bins.items()}),
            )
        if self._cpu_start is not None and end is not None:
            data.cpu = schedmod.cpu_context(self._cpu_start, end) | {"schedstat": self._schedstat_missing}
        data.spans = [ev for ev in events if type(ev) is SpanEvent]
        data.waits = [ev for ev in events if type(ev) is WaitEvent]
        data.counters = [ev for ev in events if type(ev) is CounterEvent]
        data.instants = [ev for ev in events if type(ev) is InstantEvent]
        return data

    def export(self, *, include_events: bool = True) -> dict[str, Any]:
        """JSON-able dict of this side (what the receiver sends back to the sender)."""
        return self.snapshot().to_dict(include_events=include_events)

    @classmethod
    def load(cls, data: Any, *, max_events: int = MAX_LOAD_EVENTS) -> TraceData:
        """Load a dict made by export() (e.g. the receiver's part) as TraceData."""
        return TraceData.from_dict(data, max_events=max_events)

    def write_chrome(self, path: str | os.PathLike[str], receiver: TraceData | None = None,
                     *, receiver_offset_ns: int = 0, mine: TraceData | None = None) -> bool:
        """Write this side (plus the receiver's part) as Chrome JSON; log and return False on failure.
        `mine`: a snapshot of this tracer the caller already took (else one is taken)."""
        from .chrome import TraceExportError, write_chrome_trace

        try:
            if mine is None:
                mine = self.snapshot()
            if self.role == "sender":
                write_chrome_trace(Path(path), mine, receiver, receiver_offset_ns=receiver_offset_ns)
            else:
                write_chrome_trace(Path(path), None, mine)
            return True
        except TraceExportError as exc:
            log.warning("%s", exc)
        except Exception as exc:  # never break a transfer because of the trace
            log.warning("could not write trace %s: %s: %s", path, exc.__class__.__name__, exc)
        return False


__all__ = [
    "RecordingTracer",
    "TraceData",
    "TraceDataError",
    "StageTotals",
    "SchedTotals",
    "CounterTotals",
    "SpanEvent",
    "WaitEvent",
    "CounterEvent",
    "InstantEvent",
    "load_trace_data",
    "Role",
]
