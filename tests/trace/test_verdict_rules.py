"""The verdict's classification rules (escp.trace.verdict, escp.trace.netclass) on recorded and
constructed inputs.

Recorded: tests/trace/data/verdict_inputs.json holds the --json "stats" of one run of each
injection of the verdict matrix (harness/verdicts.py, copied from reports/example/verdicts.json),
and, under "<injection>/<edge>", runs of earlier matrix runs that the first rules got wrong:
the verdict computed again from them must name the injection's expected class and side. Constructed: the rules' edges one at a time: quota, contention against a
transfer that fills its own CPUs, a CPU stage on a busy host, the page-cache copy, socket
copies on loopback, the network classes with and without TCP_INFO, and missing counters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from trace_helpers import synthetic

from escp.trace import netclass
from escp.trace.netclass import Flatness, NetInputs
from escp.trace.summary import TraceSummary, summarize
from escp.trace.tracedata import CounterEvent, CounterTotals, RateBins, SchedTotals, TraceData
from escp.trace.verdict import Verdict, compute_verdict
from harness.verdicts import INJECTIONS

RECORDED = Path(__file__).parent / "data" / "verdict_inputs.json"
EXPECT = {inj.name: inj.expect for inj in INJECTIONS}


def _recorded() -> list[tuple[str, dict[str, Any]]]:
    return sorted(json.loads(RECORDED.read_text()).items())


@pytest.mark.parametrize("name,stats", _recorded(), ids=[n for n, _s in _recorded()])
def test_recorded_runs_give_the_injected_verdict(name: str, stats: dict[str, Any]) -> None:
    again = compute_verdict(TraceSummary.from_dict(stats)).to_dict()
    assert EXPECT[name.split("/")[0]].matches(again), again
    if "/" not in name:  # the example run: the same verdict as when it ran (not its wording)
        fields = ("kind", "cause", "stage", "side")
        assert [again[f] for f in fields] == [stats["verdict"][f] for f in fields]


def test_recorded_inputs_cover_every_injection() -> None:
    assert {n.split("/")[0] for n, _s in _recorded()} == set(EXPECT)


# -- constructed inputs ------------------------------------------------------------------------

WALL_S = 2.0


def with_cpu(data: TraceData, split: Mapping[str, tuple[float, float, float]], *, cpuset: tuple[int, ...] = (0, 1),
             boot_id: str = "host-a", cgroup: dict[str, Any] | None = None) -> TraceData:
    """Give every worker of a synthetic recording a CPU split per stage: fractions of the wall
    time (on-CPU, runnable, sleeping), and a CPU context."""
    wall = data.wall_ns
    for worker in {w for w, _s in data.totals}:
        for stage, (cpu, runq, sleep) in split.items():
            data.sched[(worker, stage)] = SchedTotals(int(cpu * wall), int(runq * wall),
                                                      int((cpu + runq + sleep) * wall))
    data.cpu = {"wall_ns": wall, "cpus": len(cpuset), "cpuset": list(cpuset), "boot_id": boot_id, "cpu_ns": 0,
                "nvcsw": 0, "nivcsw": 500, "unseen": [] if cgroup else ["no cgroup CPU throttling counters (test)"],
                "schedstat": None}
    if cgroup:
        data.cpu["cgroup"] = cgroup
    return data


BLOCKED_SENDER = {"read": (0.02, 0, 0), "encrypt": (0.03, 0, 0), "send": (0.02, 0, 0.9)}
WAITING_RECEIVER = {"recv": (0.05, 0.85, 0), "decrypt": (0.03, 0, 0), "write": (0.03, 0, 0)}


def verdict(snd: TraceData | None, rcv: TraceData | None) -> Verdict:
    v = summarize(snd, rcv).verdict
    assert v is not None
    return v


def test_a_throttled_quota_starves_its_side() -> None:
    snd = with_cpu(synthetic("sender", 2, WALL_S, BLOCKED_SENDER), {"send": (0.03, 0.02, 0.9)})
    rcv = with_cpu(synthetic("receiver", 2, WALL_S, {"recv": (0.4, 0.1, 0), "write": (0.4, 0, 0)}),
                   {"recv": (0.05, 0.45, 0.0), "write": (0.05, 0.35, 0.0)},
                   cgroup={"path": "/sys/fs/cgroup/cpu/x", "version": 1, "quota_cores": 0.25, "periods": 20,
                           "throttled": 19, "throttled_ns": int(1.5e9)})
    v = verdict(snd, rcv)
    assert (v.kind, v.cause, v.side) == ("cpu-starved", "quota", "receiver"), v
    assert "quota 0.25 CPU" in v.evidence and "throttled in 19 of 20 periods" in v.evidence
    # used up its quota, though rarely throttled: still the quota
    rcv.cpu = dict(rcv.cpu or {}, cgroup={"path": "/x", "version": 2, "quota_cores": 0.2, "periods": 20,
                                          "throttled": 1, "throttled_ns": 0})
    v = verdict(snd, rcv)
    assert (v.kind, v.cause, v.side) == ("cpu-starved", "quota", "receiver"), v
    assert "quota" in v.hint and "more streams will not help" in v.hint


SPREAD_SENDER = {"read": (0.55, 0, 0), "encrypt": (0.3, 0, 0), "send": (0.05, 0, 0.1)}
SPREAD_SPLIT = {"read": (0.02, 0.52, 0.01), "encrypt": (0.02, 0.28, 0.0), "send": (0.01, 0.04, 0.1)}


def test_contention_needs_long_waits_per_unit_of_work() -> None:
    # the sender waits 16x as long for a CPU as it runs, on a CPU of its own (the receiver has the other)
    snd = with_cpu(synthetic("sender", 2, WALL_S, SPREAD_SENDER), SPREAD_SPLIT, cpuset=(0,))
    rcv = with_cpu(synthetic("receiver", 2, WALL_S, WAITING_RECEIVER), {"recv": (0.05, 0.0, 0.85)}, cpuset=(1,))
    v = verdict(snd, rcv)
    assert (v.kind, v.cause, v.stage, v.side) == ("cpu-starved", "contention", "read", "sender"), v
    assert "involuntary context switches" in v.evidence and "other processes" in v.hint
    # the same waiting, but one stage doing nearly all the work: that stage is what to change
    snd = with_cpu(synthetic("sender", 2, WALL_S, SPREAD_SENDER),
                   {"read": (0.05, 0.49, 0.01), "encrypt": (0.002, 0.3, 0.0), "send": (0.001, 0.04, 0.1)}, cpuset=(0,))
    v = verdict(snd, rcv)
    assert (v.kind, v.stage, v.side) == ("cpu-bound", "read", "sender"), v
    assert "the host is busy" in v.evidence


def test_a_side_that_sleeps_waiting_for_its_peer_is_not_starved() -> None:
    # both sides wait for CPUs on a busy host, but the receiver also sleeps a third of its time
    # waiting for data: the link paces the transfer, its waits for a CPU cost no throughput
    snd = with_cpu(synthetic("sender", 2, WALL_S, BLOCKED_SENDER), {"send": (0.02, 0.3, 0.6)})
    rcv = with_cpu(synthetic("receiver", 2, WALL_S, {"recv": (0.05, 0.65, 0), "write": (0.25, 0, 0)}),
                   {"recv": (0.04, 0.3, 0.33), "write": (0.02, 0.23, 0.0)})
    v = verdict(snd, rcv)
    assert v.kind == "network-bound", v


def test_a_cpu_stage_on_a_busy_host_is_cpu_bound() -> None:
    # zstd -19 on a loaded host: compress waits 3x as long as it runs: its own work is the limit
    snd = with_cpu(synthetic("sender", 2, WALL_S, {"compress": (0.95, 0, 0), "send": (0.01, 0, 0.01)}),
                   {"compress": (0.24, 0.72, 0.0)}, cpuset=(0, 1))
    rcv = with_cpu(synthetic("receiver", 2, WALL_S, WAITING_RECEIVER), {"recv": (0.01, 0.01, 0.95)})
    v = verdict(snd, rcv)
    assert (v.kind, v.stage, v.side) == ("cpu-bound", "compress", "sender"), v
    assert "compress on-CPU 25% / runnable 75%" in v.evidence


def test_a_transfer_that_fills_its_own_cpus_is_not_starved() -> None:
    # both sides on one host and its two CPUs: the sender waits for the receiver's threads
    snd = with_cpu(synthetic("sender", 4, WALL_S, SPREAD_SENDER), SPREAD_SPLIT)
    rcv = with_cpu(synthetic("receiver", 4, WALL_S, {"decrypt": (0.9, 0, 0)}), {"decrypt": (0.45, 0.45, 0.0)})
    v = verdict(snd, rcv)
    assert v.kind == "cpu-bound" and v.stage == "read", v
    # the same sender on a host of its own (another boot id): others take its CPUs
    rcv.cpu = dict(rcv.cpu or {}, boot_id="host-b")
    v = verdict(snd, rcv)
    assert (v.kind, v.cause, v.side) == ("cpu-starved", "contention", "sender"), v


@pytest.mark.parametrize("split,expect", [
    ((0.05, 0.02, 0.9), ("disk-bound", "", "write")),  # asleep in write: the device
    ((0.6, 0.3, 0.05), ("cpu-bound", "page-cache copy", "write")),  # on a CPU: the kernel's copy
])
def test_write_is_the_disk_only_when_it_sleeps(split: tuple[float, float, float], expect: tuple[str, str, str]) -> None:
    snd = with_cpu(synthetic("sender", 2, WALL_S, BLOCKED_SENDER), {"send": (0.02, 0.0, 0.9)})
    rcv = with_cpu(synthetic("receiver", 2, WALL_S, {"recv": (0.05, 0.05, 0), "write": (0.85, 0, 0)}),
                   {"write": split})
    v = verdict(snd, rcv)
    assert (v.kind, v.cause, v.stage, v.side) == (*expect, "receiver"), v


def test_socket_copies_on_a_cpu_are_not_the_network() -> None:
    snd = with_cpu(synthetic("sender", 2, WALL_S, {"send": (0.85, 0, 0.05), "encrypt": (0.05, 0, 0)}),
                   {"send": (0.6, 0.3, 0.0)})
    rcv = with_cpu(synthetic("receiver", 2, WALL_S, WAITING_RECEIVER), {"recv": (0.05, 0.0, 0.85)})
    v = verdict(snd, rcv)
    assert (v.kind, v.cause, v.stage, v.side) == ("cpu-bound", "socket copy", "send", "sender"), v


def test_without_schedstat_the_wall_time_reading_stands_and_says_so() -> None:
    v = verdict(synthetic("sender", 2, WALL_S, BLOCKED_SENDER),
                synthetic("receiver", 2, WALL_S, {"recv": (0.05, 0.05, 0), "write": (0.85, 0, 0)}))
    assert (v.kind, v.stage, v.side) == ("disk-bound", "write", "receiver")
    assert any("no schedstat" in u for u in v.unseen)


def test_summary_dict_round_trip_keeps_the_verdict() -> None:
    snd = with_cpu(synthetic("sender", 2, WALL_S, BLOCKED_SENDER), {"send": (0.02, 0.0, 0.9)})
    rcv = with_cpu(synthetic("receiver", 2, WALL_S, {"recv": (0.05, 0.05, 0), "write": (0.85, 0, 0)}),
                   {"write": (0.6, 0.3, 0.05)})
    summ = summarize(snd, rcv)
    d = json.loads(json.dumps(summ.to_dict()))
    assert compute_verdict(TraceSummary.from_dict(d)).to_dict() == d["verdict"]


# -- the network classes -------------------------------------------------------------------


def _tcp_sender(streams: int, *, rtt: tuple[float, float], busy_frac: float, rwnd_frac: float = 0.0,
                retrans: float = 0.0) -> TraceData:
    """A sender recording with TCP_INFO counters as the data-stream workers sample them: rtt
    (smallest, typical), cumulative busy / rwnd-limited time and retransmits, over 2 s."""
    data = synthetic("sender", streams, WALL_S, BLOCKED_SENDER)
    span_us = WALL_S * 1e6
    for i in range(1, streams + 1):
        w = f"tx-{i}"
        samples = {"rtt_us": [rtt[0]] + [rtt[1]] * 9, "cwnd_bytes": [1 << 20] * 10,
                   "busy_us": [busy_frac * span_us * k / 9 for k in range(10)],
                   "rwnd_limited_us": [rwnd_frac * busy_frac * span_us * k / 9 for k in range(10)],
                   "sndbuf_limited_us": [0.0] * 10, "retrans": [retrans * k / 9 for k in range(10)],
                   "delivery_Bps": [25e6] * 10}
        for field, values in samples.items():
            name = f"{w} tcp {field}"
            for k, v in enumerate(values):
                data.counters.append(CounterEvent(10**9 + int(k * WALL_S * 1e9 / 9), name, v))
            data.counter_totals[name] = CounterTotals(len(values), values[-1], min(values), max(values))
    return data


@pytest.mark.parametrize("kw,cause,phrase", [
    ({"rtt": (50, 60), "busy_frac": 0.2}, "stream-limited", "in flight 20%"),
    ({"rtt": (60_000, 61_000), "busy_frac": 1.0, "rwnd_frac": 0.6}, "window-limited", "receive window"),
    ({"rtt": (60_000, 61_000), "busy_frac": 1.0}, "window-limited", "no queue and no loss"),
    ({"rtt": (40, 5_000), "busy_frac": 1.0}, "link-saturated", "congestion at the bottleneck"),
    ({"rtt": (60_000, 61_000), "busy_frac": 1.0, "retrans": 30}, "link-saturated", "60 segments retransmitted"),
])
def test_tcp_info_tells_the_link_from_windows(kw: dict[str, Any], cause: str, phrase: str) -> None:
    snd = _tcp_sender(2, **kw)
    streams = netclass.tcp_streams(snd)
    assert set(streams) == {"tx-1", "tx-2"}
    got = netclass.classify(netclass.net_inputs(snd, None))
    assert got.cause == cause and phrase in got.evidence, got
    assert not got.unseen  # TCP_INFO was there


def test_tcp_stream_figures_from_the_counters() -> None:
    s = netclass.tcp_streams(_tcp_sender(1, rtt=(40, 5_000), busy_frac=0.5, retrans=12))["tx-1"]
    assert (s.rtt_min_us, s.rtt_median_us, s.retrans) == (40, 5_000, 12)
    assert s.busy_us == pytest.approx(0.5 * WALL_S * 1e6) and s.span_us == pytest.approx(WALL_S * 1e6, rel=0.01)


FLAT = Flatness(total_mb_s=50.0, cv=0.05, streams=2, bins=10)
VARYING = Flatness(total_mb_s=50.0, cv=0.6, streams=2, bins=10)


@pytest.mark.parametrize("net,cause", [
    (NetInputs(FLAT, inflight_median=16 * 1024), "stream-limited"),  # the sender paced itself
    (NetInputs(FLAT, inflight_median=3 << 20), "link-saturated"),  # full queues, one flat total
    (NetInputs(VARYING, inflight_median=3 << 20), "undetermined"),
    (NetInputs(None, inflight_median=None), "undetermined"),
    (NetInputs(FLAT, has_sender=False), "undetermined"),
])
def test_without_tcp_info(net: NetInputs, cause: str) -> None:
    got = netclass.classify(net)
    assert got.cause == cause, got
    assert got.unseen and ("TCP_INFO" in got.unseen[0] or "no sender trace" in got.unseen[0])


def test_flatness_joins_bins_until_they_hold_several_blocks() -> None:
    data = TraceData(role="receiver", t_first_ns=1, t_last_ns=2)
    # 1 MiB blocks landing 0, 1 or 2 per 50 ms bin (about 25 MB/s per stream): ragged bins, steady total
    pattern = [1 << 20, 2 << 20, 0, 1 << 20] * 30
    data.rates = RateBins(50_000_000, 0, {"rx-1": [0, *pattern], "rx-2": [0, *pattern[2:], 0, 0]})
    flat = netclass.flatness(data)
    assert flat is not None and flat.streams == 2 and flat.cv < netclass.FLAT_CV
    assert flat.total_mb_s == pytest.approx(2 * 1.0 * 2**20 / 0.05 / 1e6, rel=0.1)
    assert netclass.flatness(TraceData(role="receiver")) is None
    short = TraceData(role="receiver", rates=RateBins(50_000_000, 0, {"rx-1": [1, 2, 3]}))
    assert netclass.flatness(short) is None


def test_a_network_verdict_names_its_class_and_hint() -> None:
    snd = with_cpu(_tcp_sender(2, rtt=(40, 5_000), busy_frac=1.0), {"send": (0.02, 0.0, 0.9)})
    rcv = with_cpu(synthetic("receiver", 2, WALL_S, WAITING_RECEIVER), {"recv": (0.05, 0.0, 0.85)})
    v = verdict(snd, rcv)
    assert (v.kind, v.cause, v.stage, v.side) == ("network-bound", "link-saturated", "send", "sender")
    assert "more streams will not help" in v.hint and v.title() == "network-bound, link-saturated (send, sender)"
