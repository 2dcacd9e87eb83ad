"""The recording of one side as data: events, exact totals, and the document that carries it.

TraceData is a plain snapshot of a RecordingTracer (escp.trace.recorder); chrome.py, summary.py
and verdict.py consume it. It converts to and from a JSON-able dict, so the receiver can ship
its part to the sender over the session (docs/protocol.md §6.11 gives the document). Events
travel as columns (one list per field, names as indexes into a string table): the loader
checks a whole column at once in C (array('q') rejects anything but 64-bit integers) and
raises TraceDataError on anything malformed or out of bounds. A 2 GiB transfer's ~10,000
receiver events load in ~15 ms.

Besides the events and per-(worker, stage) busy/wait totals, a recording carries where its
threads' time went (escp.trace.sched): per (worker, stage) the ns on a CPU, the ns runnable
and the wall time those readings cover (`sched`); the process's, cgroup's and host's CPU
counters over the recording (`cpu`); and the bytes each stream moved per time bin (`rates`),
which shows whether the streams' total was flat.
"""

from __future__ import annotations

import math
import operator
from array import array
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Literal, NamedTuple

from . import WaitKind

Role = Literal["sender", "receiver"]
WAIT_KINDS: tuple[WaitKind, ...] = ("starved", "blocked")  # wait "kind" column: index here
ROLES: tuple[Role, ...] = ("sender", "receiver")
# a worker's CPU split on the timeline: counters "<worker> on-CPU %", "<worker> runnable %", ...
TIMELINE_SERIES = ("on-CPU %", "runnable %", "sleeping %")
FORMAT_NAME = "escp-trace"
FORMAT_VERSION = 2  # 2: columnar event tables and a string table (sched, cpu, rates: optional keys)

# Limits applied when loading a dict that came from the peer.
MAX_LOAD_EVENTS = 2_000_000
MAX_NAME_LEN = 128
MAX_TOTALS = 10_000
MAX_RATE_BINS = 512  # per worker (the recorder widens its bins to stay within this)
MAX_TEXT = 1024  # cgroup path, "unseen" notes
MAX_UNSEEN = 16
MAX_CPUS = 65_536


class TraceDataError(ValueError):
    """A trace dict (usually the peer's) is malformed or exceeds a bound."""


# Events are made with tuple.__new__(EventType, fields): the C constructor (a NamedTuple's own
# __new__ is Python code), on the hot path and when loading the peer's events.
new_event = tuple.__new__


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
class SchedTotals:
    """Where one (worker, stage)'s time went, from its thread's schedstat readings. covered_ns is
    the wall time between the readings (the stage's spans and waits plus the few µs between
    them); sleeping (blocked in I/O, a socket poll, a lock or a sleep) is what is neither on a
    CPU nor runnable."""

    cpu_ns: int = 0
    runq_ns: int = 0
    covered_ns: int = 0

    @property
    def sleep_ns(self) -> int:
        return max(0, self.covered_ns - self.cpu_ns - self.runq_ns)


@dataclass
class CounterTotals:
    count: int = 0
    last: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf


@dataclass
class RateBins:
    """Bytes each stream moved in its network stage, per bin of bin_ns from t0_ns."""

    bin_ns: int
    t0_ns: int
    workers: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class TraceData:
    """A snapshot of one side's recording."""

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
    sched: dict[tuple[str, str], SchedTotals] = field(default_factory=dict)  # empty: no schedstat
    cpu: dict[str, Any] | None = None  # sched.cpu_context() plus "schedstat" (None, or why not)
    rates: RateBins | None = None
    host: str = ""  # which host this side ran on, as the initiator names it (not exported: set on merge)

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
            "sched": [[w, s, t.cpu_ns, t.runq_ns, t.covered_ns] for (w, s), t in sorted(self.sched.items())],
        }
        if self.cpu is not None:
            out["cpu"] = jsonable(self.cpu)
        if self.rates is not None:
            out["rates"] = {"bin_ns": self.rates.bin_ns, "t0_ns": self.rates.t0_ns,
                            "workers": {w: list(b) for w, b in sorted(self.rates.workers.items())}}
        if include_events:
            names = _NameTable()
            sw, ss, st0, st1, sn = _columns(self.spans, 5)
            ww, ws, wt0, wt1, wk = _columns(self.waits, 5)
            cts, cname, cval = _columns(self.counters, 3)
            out["spans"] = {"worker": names.indexes(sw), "stage": names.indexes(ss), "t0": list(st0),
                            "dur": list(map(operator.sub, st1, st0)), "bytes": list(sn)}
            out["waits"] = {"worker": names.indexes(ww), "stage": names.indexes(ws), "t0": list(wt0),
                            "dur": list(map(operator.sub, wt1, wt0)), "kind": [WAIT_KINDS.index(k) for k in wk]}
            out["counters"] = {"name": names.indexes(cname), "ts": list(cts), "value": list(cval)}
            out["instants"] = [[e.ts, e.worker, e.name, jsonable(e.args)] for e in self.instants]
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


# -- JSON helpers -----------------------------------------------------------------------


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def jsonable(value: Any, depth: int = 0) -> Any:
    """Plain JSON types (unknown objects become their repr; NaN and infinities a string)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth > 4:
        return repr(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value]
    return repr(value)


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


# -- loading (the receiver's part is untrusted input) -------------------------------------


def _name(x: Any, what: str) -> str:
    if not isinstance(x, str) or not x or len(x) > MAX_NAME_LEN:
        raise TraceDataError(f"bad {what}: {x!r:.60}")
    return x


def _text(x: Any, what: str) -> str:
    if not isinstance(x, str) or len(x) > MAX_TEXT:
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
    """Events of type cls from equally long columns (constructed in C, see new_event)."""
    return list(map(new_event, repeat(cls), zip(*columns, strict=True)))


def _ends(t0: array[int], dur: array[int]) -> list[int]:
    if t0 and max(t0) + max(dur) >= 2**63:
        raise TraceDataError("event ends past the clock's range")
    return list(map(operator.add, t0, dur))


_CPU_COUNTS = ("wall_ns", "cpus", "cpu_ns", "nvcsw", "nivcsw", "psi_some_ns")
_CGROUP_COUNTS = ("version", "periods", "throttled", "throttled_ns")


def _load_cpu(raw: Any) -> dict[str, Any]:
    """The side's CPU context: only the known keys, each checked."""
    if not isinstance(raw, dict):
        raise TraceDataError("cpu is not an object")
    out: dict[str, Any] = {k: _ns(raw[k], f"cpu {k}") for k in _CPU_COUNTS if k in raw}
    unseen = raw.get("unseen", [])
    if not isinstance(unseen, list) or len(unseen) > MAX_UNSEEN:
        raise TraceDataError("bad cpu unseen list")
    out["unseen"] = [_text(u, "unseen note") for u in unseen]
    cpuset = raw.get("cpuset", [])
    if not isinstance(cpuset, list) or len(cpuset) > MAX_CPUS:
        raise TraceDataError("bad cpu cpuset")
    out["cpuset"] = list(_ints(cpuset, "cpu number"))
    out["boot_id"] = _text(raw.get("boot_id", ""), "boot id")[:64]
    schedstat = raw.get("schedstat")
    out["schedstat"] = None if schedstat is None else _text(schedstat, "schedstat note")
    cg = raw.get("cgroup")
    if cg is not None:
        if not isinstance(cg, dict):
            raise TraceDataError("bad cpu cgroup")
        quota = cg.get("quota_cores")
        out["cgroup"] = {"path": _text(cg.get("path", ""), "cgroup path"),
                         "quota_cores": None if quota is None else _num(quota, "cgroup quota"),
                         **{k: _ns(cg.get(k, 0), f"cgroup {k}") for k in _CGROUP_COUNTS}}
    return out


def _load_rates(raw: Any) -> RateBins:
    if not isinstance(raw, dict) or not isinstance(raw.get("workers"), dict) or len(raw["workers"]) > MAX_TOTALS:
        raise TraceDataError("bad rates")
    rates = RateBins(_ns(raw.get("bin_ns"), "rate bin"), _ns(raw.get("t0_ns"), "rate origin"))
    if rates.bin_ns <= 0:
        raise TraceDataError("bad rate bin")
    for worker, bins in raw["workers"].items():
        if not isinstance(bins, list) or len(bins) > MAX_RATE_BINS:
            raise TraceDataError("bad rate bins")
        rates.workers[_name(worker, "worker")] = list(_ints(bins, "rate bin bytes"))
    return rates


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
    sched = d.get("sched", [])
    if not isinstance(sched, list) or len(sched) > MAX_TOTALS:
        raise TraceDataError("bad sched")
    for row in sched:
        if not isinstance(row, list) or len(row) != 5:
            raise TraceDataError("bad sched row")
        data.sched[(_name(row[0], "worker"), _name(row[1], "stage"))] = SchedTotals(
            *(_ns(v, "sched total") for v in row[2:]))
    if "cpu" in d:
        data.cpu = _load_cpu(d["cpu"])
    if "rates" in d:
        data.rates = _load_rates(d["rates"])
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
        kinds = [WAIT_KINDS[i] for i in _ints(wt["kind"], "wait kind", len(WAIT_KINDS) - 1)]
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
    "TraceData",
    "TraceDataError",
    "StageTotals",
    "SchedTotals",
    "CounterTotals",
    "RateBins",
    "SpanEvent",
    "WaitEvent",
    "CounterEvent",
    "InstantEvent",
    "load_trace_data",
    "jsonable",
    "new_event",
    "Role",
    "ROLES",
    "WAIT_KINDS",
    "TIMELINE_SERIES",
]
