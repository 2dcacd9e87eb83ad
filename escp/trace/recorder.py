"""Recording tracer: keeps stage spans, wait spans, counters and instants of one side.

RecordingTracer implements the escp.trace.Tracer protocol for one side of a transfer
(sender or receiver). The hot path appends one event tuple (a SpanEvent etc., built by
the C tuple constructor) under one lock and adds to the per-(worker, stage) totals;
nothing is formatted until export.

Bounds: the totals (busy ns, wait ns by kind, bytes, counts) are exact whatever the
number of events. The event log used for the timeline keeps the first max_events // 2
events (start-up) and a ring of the most recent max_events - max_events // 2 events
(steady state and the end); events in between are dropped and counted.

Failures: the tracer never raises into the engine. Any internal error disables
recording and is logged once; the transfer goes on untraced.

Export: TraceData (a plain snapshot) converts to and from a JSON-able dict, so the
receiver can ship its part to the sender over the session (docs/protocol.md §6.11 gives
the document). Events travel as columns (one list per field, names as indexes into a
string table): the loader checks a whole column at once in C (array('q') rejects
anything but 64-bit integers) and raises TraceDataError on anything malformed or out of
bounds. A 2 GiB transfer's ~10,000 receiver events load in ~15 ms.
"""

from __future__ import annotations

import logging
import math
import operator
import os
import threading
from array import array
from collections import deque
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from time import monotonic_ns
from typing import Any, Literal, NamedTuple

from . import WaitKind

log = logging.getLogger("escp.trace")

Role = Literal["sender", "receiver"]
_WAIT_KINDS: tuple[WaitKind, ...] = ("starved", "blocked")  # wait "kind" column: index here
ROLES: tuple[Role, ...] = ("sender", "receiver")
FORMAT_NAME = "escp-trace"
FORMAT_VERSION = 2  # 2: columnar event tables and a string table

# Limits applied when loading a dict that came from the peer.
MAX_LOAD_EVENTS = 2_000_000
MAX_NAME_LEN = 128
MAX_TOTALS = 10_000


class TraceDataError(ValueError):
    """A trace dict (usually the peer's) is malformed or exceeds a bound."""


# Events are made with tuple.__new__(EventType, fields): the C constructor (a NamedTuple's own
# __new__ is Python code), on the hot path and when loading the peer's events.
_new = tuple.__new__


class SpanEvent(NamedTuple):
    worker: str
    stage: str
    t0: int
    t1: int
    nbytes: int


class WaitEvent(NamedTuple):
    worker: str
    stage: str
    t0: int
    t1: int
    kind: WaitKind


class CounterEvent(NamedTuple):
    ts: int
    name: str
    value: float


class InstantEvent(NamedTuple):
    ts: int
    worker: str
    name: str
    args: dict[str, Any]


@dataclass
class StageTotals:
    """Exact totals of one (worker, stage)."""

    busy_ns: int = 0
    starved_ns: int = 0
    blocked_ns: int = 0
    nbytes: int = 0
    spans: int = 0
    starved_waits: int = 0
    blocked_waits: int = 0

    def add(self, other: StageTotals) -> None:
        self.busy_ns += other.busy_ns
        self.starved_ns += other.starved_ns
        self.blocked_ns += other.blocked_ns
        self.nbytes += other.nbytes
        self.spans += other.spans
        self.starved_waits += other.starved_waits
        self.blocked_waits += other.blocked_waits


@dataclass
class CounterTotals:
    count: int = 0
    last: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf


@dataclass
class TraceData:
    """A snapshot of one side's recording; what chrome.py and summary.py consume."""

    role: Role
    pid: int = 0
    t_first_ns: int = 0  # earliest span/wait start (0 when nothing was recorded)
    t_last_ns: int = 0  # latest span/wait end
    max_events: int = 0
    dropped: int = 0
    totals: dict[tuple[str, str], StageTotals] = field(default_factory=dict)
    counter_totals: dict[str, CounterTotals] = field(default_factory=dict)
    spans: list[SpanEvent] = field(default_factory=list)
    waits: list[WaitEvent] = field(default_factory=list)
    counters: list[CounterEvent] = field(default_factory=list)
    instants: list[InstantEvent] = field(default_factory=list)

    @property
    def wall_ns(self) -> int:
        return max(0, self.t_last_ns - self.t_first_ns)

    def to_dict(self, *, include_events: bool = True) -> dict[str, Any]:
        """A JSON-able dict; include_events=False ships only the exact totals."""
        out: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "role": self.role,
            "pid": self.pid,
            "clock": "CLOCK_MONOTONIC",
            "t_first_ns": self.t_first_ns,
            "t_last_ns": self.t_last_ns,
            "max_events": self.max_events,
            "dropped": self.dropped,
            "log_policy": "head+tail",
            "totals": [
                [w, s, t.busy_ns, t.starved_ns, t.blocked_ns, t.nbytes, t.spans, t.starved_waits, t.blocked_waits]
                for (w, s), t in sorted(self.totals.items())
            ],
            "counter_totals": {
                name: [c.count, c.last, _finite(c.minimum), _finite(c.maximum)]
                for name, c in sorted(self.counter_totals.items())
            },
        }
        if include_events:
            names = _NameTable()
            sw, ss, st0, st1, sn = _columns(self.spans, 5)
            ww, ws, wt0, wt1, wk = _columns(self.waits, 5)
            cts, cname, cval = _columns(self.counters, 3)
            out["spans"] = {"worker": names.indexes(sw), "stage": names.indexes(ss), "t0": list(st0),
                            "dur": list(map(operator.sub, st1, st0)), "bytes": list(sn)}
            out["waits"] = {"worker": names.indexes(ww), "stage": names.indexes(ws), "t0": list(wt0),
                            "dur": list(map(operator.sub, wt1, wt0)), "kind": [_WAIT_KINDS.index(k) for k in wk]}
            out["counters"] = {"name": names.indexes(cname), "ts": list(cts), "value": list(cval)}
            out["instants"] = [[e.ts, e.worker, e.name, _jsonable(e.args)] for e in self.instants]
            out["names"] = names.names
        return out

    @classmethod
    def from_dict(cls, data: Any, *, max_events: int = MAX_LOAD_EVENTS) -> TraceData:
        """Load and validate a dict made by to_dict (possibly received from the peer)."""
        try:
            return _load(data, max_events)
        except TraceDataError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise TraceDataError(f"malformed trace data: {exc.__class__.__name__}: {exc}") from None


def load_trace_data(data: Any, *, max_events: int = MAX_LOAD_EVENTS) -> TraceData:
    """Function form of TraceData.from_dict."""
    return TraceData.from_dict(data, max_events=max_events)


# Per-(worker, stage) totals on the hot path are lists in StageTotals field order:
# busy_ns, starved_ns, blocked_ns, nbytes, spans, starved_waits, blocked_waits (indexes 0..6).


class RecordingTracer:
    """Tracer that records one side of a transfer. Thread-safe; never raises."""

    def __init__(self, role: Role, max_events: int = 200_000) -> None:
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

    # -- hot path ---------------------------------------------------------------------

    def now(self) -> int:
        return monotonic_ns()

    def span(self, worker: str, stage: str, t0: int, nbytes: int = 0) -> None:
        if not self.enabled:
            return
        t1 = monotonic_ns()
        try:
            if t0 <= 0 or t0 > t1:  # t0 from another clock or a NullTracer: keep the bytes, no time
                t0 = t1
                self._anomalies += 1  # racy count: diagnostic only
            key = (worker, stage)
            event = _new(SpanEvent, (worker, stage, t0, t1, nbytes))
            with self._lock:
                tot = self._totals.get(key)
                if tot is None:
                    tot = self._totals[key] = [0, 0, 0, 0, 0, 0, 0]
                tot[0] += t1 - t0  # _BUSY
                tot[3] += nbytes  # _BYTES
                tot[4] += 1  # _SPANS
                if t1 > self._t_last:
                    self._t_last = t1
                if t0 < self._t_first or self._t_first == 0:
                    self._t_first = t0
                if len(self._head) < self._head_cap:
                    self._head.append(event)
                else:
                    if len(self._tail) == self._tail_cap:
                        self._dropped += 1
                    self._tail.append(event)
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
            key = (worker, stage)
            event = _new(WaitEvent, (worker, stage, t0, t1, kind))
            with self._lock:
                tot = self._totals.get(key)
                if tot is None:
                    tot = self._totals[key] = [0, 0, 0, 0, 0, 0, 0]
                tot[i_ns] += t1 - t0
                tot[i_n] += 1
                if t1 > self._t_last:
                    self._t_last = t1
                if t0 < self._t_first or self._t_first == 0:
                    self._t_first = t0
                if len(self._head) < self._head_cap:
                    self._head.append(event)
                else:
                    if len(self._tail) == self._tail_cap:
                        self._dropped += 1
                    self._tail.append(event)
        except Exception as exc:
            self._fail(exc)

    def counter(self, name: str, value: float) -> None:
        if not self.enabled:
            return
        ts = monotonic_ns()
        try:
            v = float(value)
            with self._lock:
                c = self._counters.get(name)
                if c is None:
                    c = self._counters[name] = CounterTotals()
                c.count += 1
                c.last = v
                if v < c.minimum:
                    c.minimum = v
                if v > c.maximum:
                    c.maximum = v
                self._append(_new(CounterEvent, (ts, name, v)))
        except Exception as exc:
            self._fail(exc)

    def instant(self, worker: str, name: str, args: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        ts = monotonic_ns()
        try:
            copied = dict(args) if args else {}
            with self._lock:
                self._append(_new(InstantEvent, (ts, worker, name, copied)))
        except Exception as exc:
            self._fail(exc)

    def _append(self, event: tuple[Any, ...]) -> None:
        if len(self._head) < self._head_cap:
            self._head.append(event)
            return
        if len(self._tail) == self._tail_cap:
            self._dropped += 1
        self._tail.append(event)

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
        with self._lock:
            events = list(self._head) + list(self._tail)
            totals = {k: StageTotals(*v) for k, v in self._totals.items()}
            counters = {k: CounterTotals(c.count, c.last, c.minimum, c.maximum) for k, c in self._counters.items()}
            data = TraceData(
                role=self.role, pid=os.getpid(), t_first_ns=self._t_first, t_last_ns=self._t_last,
                max_events=self.max_events, dropped=self._dropped, totals=totals, counter_totals=counters,
            )
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


# -- loading and JSON helpers -----------------------------------------------------------


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Instant args as plain JSON types (unknown objects become their repr)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth > 4:
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    return repr(value)


def _name(x: Any, what: str) -> str:
    if not isinstance(x, str) or not x or len(x) > MAX_NAME_LEN:
        raise TraceDataError(f"bad {what}: {x!r:.60}")
    return x


def _ns(x: Any, what: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < 2**63:
        raise TraceDataError(f"bad {what}: {x!r:.60}")
    return x


def _num(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise TraceDataError(f"bad {what}: {x!r:.60}")
    return float(x)


def _columns(events: list[Any], width: int) -> list[tuple[Any, ...]]:
    """Events (tuples of `width` fields) as `width` columns."""
    return list(zip(*events, strict=True)) if events else [()] * width


class _NameTable:
    """The string table of an export: each distinct worker, stage or counter name once."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def indexes(self, column: tuple[str, ...]) -> list[int]:
        index = self._index
        for name in set(column) - index.keys():
            index[name] = len(self.names)
            self.names.append(name)
        return [index[x] for x in column]


def _table(d: dict[str, Any], key: str, fields: tuple[str, ...], budget: list[int]) -> dict[str, list[Any]]:
    """A columnar event table: a dict of equally long lists, one per field ({} when absent)."""
    table = d.get(key)
    if table is None:
        return {}
    if not isinstance(table, dict) or set(table) != set(fields):
        raise TraceDataError(f"{key} is not a table of {', '.join(fields)}")
    cols = [table[f] for f in fields]
    if not all(isinstance(c, list) for c in cols) or len({len(c) for c in cols}) != 1:
        raise TraceDataError(f"{key}: columns are not lists of one length")
    budget[0] -= len(cols[0])
    if budget[0] < 0:
        raise TraceDataError("too many events in trace data")
    return dict(zip(fields, cols, strict=True))


def _ints(column: list[Any], what: str, hi: int = 2**63 - 1) -> array[int]:
    """A column of integers in 0..hi, checked in C (array rejects non-integers)."""
    try:
        values = array("q", column)
    except (TypeError, OverflowError):
        raise TraceDataError(f"bad {what}: not a 64-bit integer") from None
    if values and (min(values) < 0 or max(values) > hi):
        raise TraceDataError(f"bad {what}: out of range")
    return values


def _floats(column: list[Any], what: str) -> array[float]:
    try:
        values = array("d", column)
    except (TypeError, OverflowError):
        raise TraceDataError(f"bad {what}: not a number") from None
    if not all(map(math.isfinite, values)):
        raise TraceDataError(f"bad {what}: not finite")
    return values


def _named(column: list[Any], names: list[str]) -> list[str]:
    """Indexes into the string table as the names."""
    return [names[i] for i in _ints(column, "name index", len(names) - 1)]


def _rows(cls: type[Any], *columns: Any) -> list[Any]:
    """Events of type cls from equally long columns (constructed in C, see _new)."""
    return list(map(_new, repeat(cls), zip(*columns, strict=True)))


def _ends(t0: array[int], dur: array[int]) -> list[int]:
    if t0 and max(t0) + max(dur) >= 2**63:
        raise TraceDataError("event ends past the clock's range")
    return list(map(operator.add, t0, dur))


def _load(d: Any, max_events: int) -> TraceData:
    if not isinstance(d, dict):
        raise TraceDataError("trace data is not a dict")
    if d.get("format") != FORMAT_NAME or d.get("version") != FORMAT_VERSION:
        raise TraceDataError(f"unsupported trace format {d.get('format')!r} version {d.get('version')!r}")
    role = d.get("role")
    if role not in ROLES:
        raise TraceDataError(f"bad role {role!r:.60}")
    data = TraceData(
        role=role, pid=_ns(d.get("pid", 0), "pid"), t_first_ns=_ns(d["t_first_ns"], "t_first_ns"),
        t_last_ns=_ns(d["t_last_ns"], "t_last_ns"), max_events=_ns(d.get("max_events", 0), "max_events"),
        dropped=_ns(d.get("dropped", 0), "dropped"),
    )
    totals = d.get("totals", [])
    if not isinstance(totals, list) or len(totals) > MAX_TOTALS:
        raise TraceDataError("bad totals")
    for row in totals:
        if not isinstance(row, list) or len(row) != 9:
            raise TraceDataError("bad totals row")
        key = (_name(row[0], "worker"), _name(row[1], "stage"))
        data.totals[key] = StageTotals(*(_ns(v, "total") for v in row[2:]))
    ctot = d.get("counter_totals", {})
    if not isinstance(ctot, dict) or len(ctot) > MAX_TOTALS:
        raise TraceDataError("bad counter_totals")
    for name, row in ctot.items():
        if not isinstance(row, list) or len(row) != 4:
            raise TraceDataError("bad counter_totals row")
        lo = math.inf if row[2] is None else _num(row[2], "counter min")
        hi = -math.inf if row[3] is None else _num(row[3], "counter max")
        data.counter_totals[_name(name, "counter")] = CounterTotals(_ns(row[0], "count"), _num(row[1], "last"), lo, hi)
    budget = [max_events]
    names = d.get("names", [])
    if not isinstance(names, list) or len(names) > MAX_TOTALS:
        raise TraceDataError("bad names")
    names = [_name(x, "name") for x in names]
    sp = _table(d, "spans", ("worker", "stage", "t0", "dur", "bytes"), budget)
    if sp:
        t0, dur = _ints(sp["t0"], "span t0"), _ints(sp["dur"], "span duration")
        data.spans = _rows(SpanEvent, _named(sp["worker"], names), _named(sp["stage"], names), t0, _ends(t0, dur),
                           _ints(sp["bytes"], "span bytes"))
    wt = _table(d, "waits", ("worker", "stage", "t0", "dur", "kind"), budget)
    if wt:
        t0, dur = _ints(wt["t0"], "wait t0"), _ints(wt["dur"], "wait duration")
        kinds = [_WAIT_KINDS[i] for i in _ints(wt["kind"], "wait kind", len(_WAIT_KINDS) - 1)]
        data.waits = _rows(WaitEvent, _named(wt["worker"], names), _named(wt["stage"], names), t0, _ends(t0, dur),
                           kinds)
    ct = _table(d, "counters", ("name", "ts", "value"), budget)
    if ct:
        data.counters = _rows(CounterEvent, _ints(ct["ts"], "counter ts"), _named(ct["name"], names),
                              _floats(ct["value"], "counter value"))
    instants = d.get("instants", [])
    if not isinstance(instants, list):
        raise TraceDataError("instants is not a list")
    budget[0] -= len(instants)
    if budget[0] < 0:
        raise TraceDataError("too many events in trace data")
    for r in instants:
        if not isinstance(r, list) or len(r) != 4 or not isinstance(r[3], dict):
            raise TraceDataError("bad instant")
        data.instants.append(InstantEvent(_ns(r[0], "ts"), _name(r[1], "worker"), _name(r[2], "instant"), r[3]))
    return data


__all__ = [
    "RecordingTracer",
    "TraceData",
    "TraceDataError",
    "StageTotals",
    "CounterTotals",
    "SpanEvent",
    "WaitEvent",
    "CounterEvent",
    "InstantEvent",
    "load_trace_data",
    "Role",
]
