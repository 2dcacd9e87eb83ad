"""Chrome Trace Event export: validity, µs units, no overlap per track, merge with offset, sinks."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escp.trace.chrome import TraceExportError, chrome_trace, write_chrome_trace
from escp.trace.recorder import CounterEvent, InstantEvent, SpanEvent, TraceData, WaitEvent

PHASES = {"X", "M", "C", "i"}


def check_valid(doc: dict[str, Any]) -> None:
    """Format checks shared by the tests (what Perfetto / chrome://tracing need)."""
    json.dumps(doc, allow_nan=False)
    assert isinstance(doc["traceEvents"], list)
    for ev in doc["traceEvents"]:
        for key in ("ph", "ts", "pid", "tid", "name"):
            assert key in ev, (key, ev)
        assert ev["ph"] in PHASES
        assert isinstance(ev["ts"], int | float) and ev["ts"] >= 0
        if ev["ph"] == "X":
            assert ev["dur"] >= 0
        if ev["ph"] == "C":
            assert all(isinstance(v, int | float) for v in ev["args"].values())
        if ev["ph"] == "i":
            assert ev["s"] in ("t", "p", "g")


def check_no_overlap(doc: dict[str, Any]) -> None:
    """No two complete events on one (pid, tid) overlap; compared in whole ns."""
    tracks: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for ev in doc["traceEvents"]:
        if ev["ph"] == "X":
            t0 = round(ev["ts"] * 1000)
            tracks[(ev["pid"], ev["tid"])].append((t0, t0 + round(ev["dur"] * 1000)))
    for spans in tracks.values():
        spans.sort()
        for (_a0, a1), (b0, _b1) in zip(spans, spans[1:], strict=False):
            assert a1 <= b0, spans


def thread_names(doc: dict[str, Any], pid: int) -> dict[int, str]:
    return {ev["tid"]: ev["args"]["name"] for ev in doc["traceEvents"]
            if ev["ph"] == "M" and ev["name"] == "thread_name" and ev["pid"] == pid}


def sample(role: str = "sender", base: int = 5_000_000_000) -> TraceData:
    w = "tx-0" if role == "sender" else "rx-0"
    d = TraceData(role=role, t_first_ns=base, t_last_ns=base + 4000)  # type: ignore[arg-type]
    d.spans = [SpanEvent(w, "read", base, base + 1500, 1 << 20), SpanEvent(w, "encrypt", base + 1500, base + 2000, 1 << 20)]
    d.waits = [WaitEvent(w, "send", base + 2000, base + 4000, "blocked")]
    d.counters = [CounterEvent(base + 100, "inflight", 3.0)]
    d.instants = [InstantEvent(base + 50, w, "file-start", {"fino": 1})]
    return d


def test_units_names_and_metadata() -> None:
    doc = chrome_trace(sample(), None)
    check_valid(doc)
    check_no_overlap(doc)
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert [(e["name"], e["ts"], e["dur"]) for e in xs] == [("read", 0.0, 1.5), ("encrypt", 1.5, 0.5),
                                                            ("send blocked", 2.0, 2.0)]
    assert xs[0]["args"]["bytes"] == 1 << 20 and xs[2]["cat"] == "wait.blocked"
    assert thread_names(doc, 1) == {1: "tx-0"}  # busy and wait share one track when they do not overlap
    procs = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    assert procs == {1: "sender"}
    (c,) = [e for e in doc["traceEvents"] if e["ph"] == "C"]
    assert (c["name"], c["ts"], c["args"]) == ("inflight", 0.1, {"inflight": 3.0})
    (i,) = [e for e in doc["traceEvents"] if e["ph"] == "i"]
    assert (i["tid"], i["ts"], i["args"]) == (1, 0.05, {"fino": 1})


def test_merge_two_sides_with_offset() -> None:
    snd = sample("sender", base=10_000)
    rcv = sample("receiver", base=10_000 + 1000)
    same_host = chrome_trace(snd, rcv)
    shifted = chrome_trace(snd, rcv, receiver_offset_ns=250_000)
    for doc in (same_host, shifted):
        check_valid(doc)
        check_no_overlap(doc)
    procs = {e["pid"]: e["args"]["name"] for e in same_host["traceEvents"] if e["name"] == "process_name"}
    assert procs == {1: "sender", 2: "receiver"}
    assert thread_names(same_host, 2) == {1: "rx-0"}

    def first_x(doc: dict[str, Any], pid: int) -> float:
        return min(e["ts"] for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == pid)

    assert first_x(same_host, 1) == 0.0 and first_x(same_host, 2) == 1.0
    assert first_x(shifted, 2) - first_x(shifted, 1) == pytest.approx(251.0)
    # a negative offset moving the receiver before the sender re-bases at the receiver
    early = chrome_trace(snd, rcv, receiver_offset_ns=-3000)
    check_valid(early)
    assert first_x(early, 2) == 0.0 and first_x(early, 1) == 2.0


def test_overlapping_spans_go_to_extra_lanes_or_wait_tracks() -> None:
    d = TraceData(role="sender", t_first_ns=100, t_last_ns=1000)
    d.spans = [SpanEvent("tx-0", "send", 100, 1000, 5)]
    d.waits = [WaitEvent("tx-0", "send", 200, 900, "blocked")]  # nested inside the busy send
    lanes = chrome_trace(d, None)
    check_no_overlap(lanes)
    assert sorted(thread_names(lanes, 1).values()) == ["tx-0", "tx-0 #2"]
    split = chrome_trace(d, None, separate_wait_tracks=True)
    check_no_overlap(split)
    assert sorted(thread_names(split, 1).values()) == ["tx-0", "tx-0 wait"]


def test_worker_tracks_in_natural_order() -> None:
    d = TraceData(role="sender", t_first_ns=1, t_last_ns=10)
    d.spans = [SpanEvent(w, "read", 1, 2, 0) for w in ("meta", "tx-10", "tx-2", "tx-1")]
    assert list(thread_names(chrome_trace(d, None), 1).values()) == ["tx-1", "tx-2", "tx-10", "meta"]


interval = st.tuples(st.integers(0, 10_000), st.integers(0, 3_000))
span_sets = st.lists(
    st.tuples(st.sampled_from(["span", "starved", "blocked"]), st.sampled_from(["tx-0", "tx-1", "meta"]),
              st.sampled_from(["read", "send", "encrypt"]), interval),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(snd=span_sets, rcv=span_sets, offset=st.integers(-20_000, 20_000), split=st.booleans())
def test_random_span_sets_never_overlap_on_a_track(snd: list[Any], rcv: list[Any], offset: int, split: bool) -> None:
    def build(role: str, items: list[Any]) -> TraceData:
        d = TraceData(role=role, t_first_ns=10**9, t_last_ns=10**9 + 13_000)  # type: ignore[arg-type]
        for kind, worker, stage, (start, dur) in items:
            t0 = 10**9 + start
            if kind == "span":
                d.spans.append(SpanEvent(worker, stage, t0, t0 + dur, dur))
            else:
                d.waits.append(WaitEvent(worker, stage, t0, t0 + dur, kind))
        return d

    doc = chrome_trace(build("sender", snd), build("receiver", rcv), receiver_offset_ns=offset,
                       separate_wait_tracks=split)
    check_valid(doc)
    check_no_overlap(doc)
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == len(snd) + len(rcv)  # nothing lost
    assert sum(round(e["dur"] * 1000) for e in xs) == sum(it[3][1] for it in snd + rcv)


def test_write_to_file_and_failing_sink(tmp_path: Path) -> None:
    out = write_chrome_trace(tmp_path / "t.json", sample(), sample("receiver"))
    doc = json.loads(out.read_text())
    check_valid(doc)
    bad = tmp_path / "no-such-dir" / "t.json"
    with pytest.raises(TraceExportError, match="cannot write trace file .*no-such-dir"):
        write_chrome_trace(bad, sample(), None)
    if os.geteuid() != 0:  # root ignores directory permissions
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(TraceExportError):
            write_chrome_trace(ro / "t.json", sample(), None)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "ro") == ["t.json"]  # no temp files left


def test_sink_is_a_directory_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(TraceExportError):
        write_chrome_trace(tmp_path / "d", sample(), None)
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_empty_sides() -> None:
    doc = chrome_trace(None, None)
    assert doc["traceEvents"] == []
    check_valid(chrome_trace(TraceData(role="receiver"), None))
