"""RecordingTracer: exact totals under the log bound, thread safety, export/load, never raising."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escp.trace import NULL_TRACER, NullTracer, Tracer
from escp.trace import recorder as recorder_mod
from escp.trace.recorder import (
    CounterEvent,
    RecordingTracer,
    SpanEvent,
    TraceData,
    TraceDataError,
    WaitEvent,
    load_trace_data,
)


def _use(tracer: Tracer) -> None:
    """What a stage worker does; typed against the protocol so mypy checks conformance."""
    t0 = tracer.now()
    tracer.span("tx-0", "read", t0, 10)
    tracer.wait("tx-0", "send", t0, "blocked")
    tracer.counter("inflight", 3)
    tracer.instant("tx-0", "file-start", {"fino": 1})


def test_null_tracer_is_stateless_and_never_reads_the_clock() -> None:
    tracer = NullTracer()
    with mock.patch.object(time, "monotonic_ns", side_effect=AssertionError("clock read")):
        for _ in range(1000):
            _use(tracer)
    assert tracer.enabled is False
    assert tracer.now() == 0
    assert vars(tracer) == {}  # keeps nothing, so it cannot grow
    _use(NULL_TRACER)


def test_spans_and_waits_are_totalled(clock: Any) -> None:
    tr = RecordingTracer("sender")
    _use(tr)  # zero-length at a fixed clock
    t0 = clock.t
    clock.advance(1500)
    tr.span("tx-0", "read", t0, 1 << 20)
    t0 = clock.t
    clock.advance(700)
    tr.wait("tx-0", "send", t0, "blocked")
    t0 = clock.t
    clock.advance(300)
    tr.wait("tx-0", "send", t0, "starved")
    data = tr.snapshot()
    read = data.totals[("tx-0", "read")]
    send = data.totals[("tx-0", "send")]
    assert (read.busy_ns, read.nbytes, read.spans) == (1500, (1 << 20) + 10, 2)
    assert (send.blocked_ns, send.starved_ns, send.blocked_waits, send.starved_waits) == (700, 300, 2, 1)
    assert data.wall_ns == 2500
    assert data.counter_totals["inflight"].last == 3.0
    assert [i.name for i in data.instants] == ["file-start"]
    assert data.role == "sender" and data.dropped == 0


def test_t0_from_a_null_tracer_counts_bytes_but_no_time(clock: Any) -> None:
    tr = RecordingTracer("receiver")
    clock.advance(1000)
    tr.span("rx-0", "write", 0, 42)
    tr.wait("rx-0", "recv", clock.t + 5, "starved")  # t0 in the future
    data = tr.snapshot()
    assert data.totals[("rx-0", "write")].busy_ns == 0
    assert data.totals[("rx-0", "write")].nbytes == 42
    assert tr.anomalies == 2


def test_log_keeps_head_and_tail_and_totals_stay_exact(clock: Any) -> None:
    tr = RecordingTracer("sender", max_events=10)
    for i in range(1000):
        t0 = clock.t
        clock.advance(10)
        tr.span("tx-0", "encrypt", t0, i)
    data = tr.snapshot()
    assert len(data.spans) == 10
    assert [s.nbytes for s in data.spans] == [0, 1, 2, 3, 4, 995, 996, 997, 998, 999]
    assert tr.dropped == data.dropped == 990
    tot = data.totals[("tx-0", "encrypt")]
    assert (tot.spans, tot.busy_ns, tot.nbytes) == (1000, 10_000, sum(range(1000)))


ops = st.lists(
    st.tuples(st.sampled_from(["span", "starved", "blocked", "counter", "instant"]),
              st.sampled_from(["tx-0", "tx-1", "meta"]), st.sampled_from(["read", "send", "encrypt"]),
              st.integers(0, 10_000), st.integers(0, 1 << 22)),
    max_size=200,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops, max_events=st.integers(0, 50))
def test_totals_exact_whatever_the_bound(ops: list[tuple[str, str, str, int, int]], max_events: int) -> None:
    fake = [10**9]
    with mock.patch.object(recorder_mod, "monotonic_ns", lambda: fake[0]):
        tr = RecordingTracer("sender", max_events=max_events, cpu_accounting=False)  # no timeline counters
        expect: dict[tuple[str, str], list[int]] = {}
        for op, worker, stage, dur, nbytes in ops:
            t0 = fake[0]
            fake[0] += dur
            e = expect.setdefault((worker, stage), [0, 0, 0, 0, 0])
            if op == "span":
                tr.span(worker, stage, t0, nbytes)
                e[0] += dur
                e[3] += nbytes
                e[4] += 1
            elif op in ("starved", "blocked"):
                tr.wait(worker, stage, t0, op)  # type: ignore[arg-type]
                e[1 if op == "starved" else 2] += dur
            elif op == "counter":
                tr.counter(stage, nbytes)
            else:
                tr.instant(worker, stage, {"n": nbytes})
        data = tr.snapshot()
    got = {k: [t.busy_ns, t.starved_ns, t.blocked_ns, t.nbytes, t.spans] for k, t in data.totals.items()}
    assert got == {k: v for k, v in expect.items() if k in got}
    assert all(v == [0, 0, 0, 0, 0] for k, v in expect.items() if k not in got)  # counters/instants only
    logged = len(data.spans) + len(data.waits) + len(data.counters) + len(data.instants)
    assert logged == min(len(ops), max_events)
    assert data.dropped == len(ops) - logged
    assert tr.enabled


def test_thread_safety_exact_totals() -> None:
    tr = RecordingTracer("receiver", max_events=1000, cpu_accounting=False)  # counts every logged event
    n_threads, n_ops = 8, 3000
    barrier = threading.Barrier(n_threads)

    def worker(i: int) -> None:
        name = f"rx-{i}"
        barrier.wait()
        for k in range(n_ops):
            t0 = tr.now()
            tr.span(name, "write", t0, k)
            tr.wait(name, "recv", t0, "starved")
            tr.span("meta", "meta", t0, 1)  # shared key across threads
            tr.counter("queue", k)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = tr.snapshot()
    for i in range(n_threads):
        tot = data.totals[(f"rx-{i}", "write")]
        assert (tot.spans, tot.nbytes) == (n_ops, sum(range(n_ops)))
        assert data.totals[(f"rx-{i}", "recv")].starved_waits == n_ops
    assert data.totals[("meta", "meta")].spans == n_threads * n_ops
    assert data.counter_totals["queue"].count == n_threads * n_ops
    assert len(data.spans) + len(data.waits) + len(data.counters) == 1000
    assert data.dropped == 4 * n_threads * n_ops - 1000
    assert tr.enabled and not tr.failed


def test_internal_failure_disables_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    tr = RecordingTracer("sender")
    caplog.set_level(logging.WARNING, logger="escp.trace")
    tr.wait("tx-0", "send", tr.now(), "sideways")  # type: ignore[arg-type]
    assert not tr.enabled and tr.failed
    for _ in range(5):
        _use(tr)  # all no-ops now, none raises
    broken = RecordingTracer("sender")
    broken._lock = mock.MagicMock(__enter__=mock.Mock(side_effect=RuntimeError("boom")))  # type: ignore[assignment]
    for _ in range(3):
        broken.span("tx-0", "read", broken.now(), 1)
    assert not broken.enabled
    msgs = [r.getMessage() for r in caplog.records if r.name == "escp.trace"]
    assert len(msgs) == 2 and "ValueError" in msgs[0] and "RuntimeError" in msgs[1]


def test_export_load_roundtrip_through_json(clock: Any) -> None:
    tr = RecordingTracer("receiver", max_events=100)
    for i in range(5):
        t0 = clock.t
        clock.advance(100)
        tr.wait(f"rx-{i % 2}", "recv", t0, "starved")
        t0 = clock.t
        clock.advance(900)
        tr.span(f"rx-{i % 2}", "write", t0, 1 << 20)
    tr.counter("inflight", 2.5)
    tr.instant("rx-0", "file-done", {"fino": 3, "odd": object()})
    wire = json.loads(json.dumps(tr.export()))
    back = RecordingTracer.load(wire)
    mine = tr.snapshot()
    assert back.totals == mine.totals
    assert back.spans == mine.spans and back.waits == mine.waits and back.counters == mine.counters
    assert back.instants[0].args["fino"] == 3 and isinstance(back.instants[0].args["odd"], str)
    assert (back.role, back.t_first_ns, back.t_last_ns) == ("receiver", mine.t_first_ns, mine.t_last_ns)
    light = load_trace_data(json.loads(json.dumps(tr.export(include_events=False))))
    assert light.totals == mine.totals and light.spans == []


def _one_span(d: dict[str, Any], t0: Any = 1, dur: Any = 1, worker: Any = 0) -> None:
    d["names"] = ["rx-0", "write"]
    d["spans"] = {"worker": [worker], "stage": [1], "t0": [t0], "dur": [dur], "bytes": [0]}


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(format="other"),
    lambda d: d.update(version=1),  # the row format of older releases
    lambda d: d.update(role="attacker"),
    lambda d: _one_span(d, dur=-5),  # ends before it starts
    lambda d: _one_span(d, t0=-1),
    lambda d: _one_span(d, t0=2**63 - 2, dur=5),  # ends past the clock's range
    lambda d: _one_span(d, t0=1.5),
    lambda d: _one_span(d, worker=2),  # not in the string table
    lambda d: (_one_span(d), d["spans"]["bytes"].append(3)),  # columns of different lengths
    lambda d: (_one_span(d), d["spans"].pop("bytes")),
    lambda d: d.update(names=["rx-0", "recv"], waits={"worker": [0], "stage": [1], "t0": [1], "dur": [1],
                                                      "kind": [2]}),  # no such wait kind
    lambda d: d["totals"].append(["x" * 1000, "s", 0, 0, 0, 0, 0, 0, 0]),
    lambda d: d.update(names=["x" * 1000]),
    lambda d: d.update(names=["rx-0"], spans={"worker": [0] * 50, "stage": [0] * 50, "t0": [1] * 50,
                                              "dur": [1] * 50, "bytes": [0] * 50}),  # over the load limit
    lambda d: d.update(t_first_ns="soon"),
    lambda d: d.pop("t_last_ns"),
    lambda d: d.update(names=["c"], counters={"name": [0], "ts": [1], "value": [float("nan")]}),
    lambda d: d.update(names=["c"], counters={"name": [0], "ts": [1], "value": ["3"]}),
])
def test_loader_rejects_malformed_peer_data(mutate: Any) -> None:
    d = TraceData(role="receiver", t_first_ns=1, t_last_ns=2).to_dict()
    mutate(d)
    with pytest.raises(TraceDataError):
        TraceData.from_dict(d, max_events=10)


junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=12), c, max_size=6))
_VALID = {
    "format": "escp-trace", "version": 2, "role": "receiver", "pid": 7, "t_first_ns": 1, "t_last_ns": 9,
    "totals": [["rx-0", "write", 1, 2, 3, 4, 5, 6, 7]], "counter_totals": {"q": [1, 2.0, 1.0, 3.0]},
    "names": ["rx-0", "write", "recv", "q"],
    "spans": {"worker": [0], "stage": [1], "t0": [1], "dur": [1], "bytes": [3]},
    "waits": {"worker": [0], "stage": [2], "t0": [1], "dur": [1], "kind": [0]},
    "counters": {"name": [3], "ts": [1], "value": [2.0]}, "instants": [[1, "rx-0", "x", {}]],
}


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(sorted(_VALID)), value=junk, whole=junk, nested=st.booleans())
def test_loader_raises_only_trace_data_error(key: str, value: Any, whole: Any, nested: bool) -> None:
    d = json.loads(json.dumps(_VALID))
    inner = d[key]
    if nested and isinstance(inner, dict) and inner:
        next(iter(inner.values()))[0] = value  # corrupt inside a column
    elif nested and isinstance(inner, list) and inner and isinstance(inner[0], list):
        inner[0][0] = value  # corrupt inside a row
    else:
        d[key] = value
    for candidate in (d, whole):
        try:
            TraceData.from_dict(candidate)
        except TraceDataError:
            pass


def test_valid_fixture_loads() -> None:
    data = TraceData.from_dict(_VALID)
    assert data.totals[("rx-0", "write")].spans == 5
    assert data.spans == [SpanEvent("rx-0", "write", 1, 2, 3)] and data.waits == [WaitEvent("rx-0", "recv", 1, 2, "starved")]
    assert data.counters == [CounterEvent(1, "q", 2.0)]


def test_failing_sink_does_not_raise_out_of_the_recorder(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    tr = RecordingTracer("sender")
    _use(tr)
    caplog.set_level(logging.WARNING, logger="escp.trace")
    assert tr.write_chrome(tmp_path / "missing-dir" / "trace.json") is False
    assert any("cannot write trace file" in r.getMessage() for r in caplog.records)
    assert tr.enabled  # recording goes on
    assert tr.write_chrome(tmp_path / "trace.json") is True
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
