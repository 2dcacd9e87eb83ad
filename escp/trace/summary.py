"""Per-stage summary of a traced transfer: the `--stats` table and the figures the verdict uses.

summarize(sender, receiver) turns the exact totals of both sides (TraceData) into one
StageSummary per (side, stage), the worker-time shares each side is ranked by, each side's
CPU picture (escp.trace.sidecpu: on a CPU / runnable / sleeping, plus its cgroup quota and
throttling, context switches and host CPU pressure) and the network figures
(escp.trace.netclass), then asks escp.trace.verdict for the verdict. The summary's dict form holds everything the verdict
reads, so TraceSummary.from_dict() on a --json report's "stats" gives the verdict again.

The engine runs one thread per stream doing every stage in turn, so the time of one worker
splits across its stages. Shares are fractions of a side's worker time (wall x stream
workers; "meta" workers are shown but not counted). The sender's "downstream" time is send
busy + send waits + blocked waits of any stage; the receiver's "upstream" time is recv busy
+ recv waits + starved waits of any stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..units import format_bytes
from .netclass import NetInputs, net_inputs
from .sidecpu import PEER, PEER_STAGE, SideCpu, describe_cpu, is_meta, pct, side_cpu
from .tcpinfo import TcpStreamRow, render_table, stream_rows
from .tracedata import Role, TraceData
from .verdict import Verdict, compute_verdict

STAGE_ORDER = ["read", "checksum", "compress", "encrypt", "send", "recv", "decrypt", "decompress",
               "verify", "write", "meta"]


@dataclass(frozen=True)
class StageSummary:
    side: Role
    stage: str
    workers: int
    busy_s: float
    starved_s: float
    blocked_s: float
    nbytes: int
    count: int
    wall_s: float
    on_cpu_s: float | None = None  # the CPU split of the stage's time (None: no schedstat)
    runq_s: float | None = None
    sleep_s: float | None = None

    @property
    def wait_s(self) -> float:
        return self.starved_s + self.blocked_s

    @property
    def mb_per_s(self) -> float | None:
        """MB/s (decimal) per busy second: what one worker moves while busy in this stage.

        Stage capacity with all workers busy is about mb_per_s * workers. None without bytes or time.
        """
        if self.busy_s <= 0 or self.nbytes <= 0:
            return None
        return self.nbytes / self.busy_s / 1e6

    @property
    def utilisation(self) -> float:
        """busy / (wall * workers): the busy fraction of this stage's workers."""
        denom = self.wall_s * self.workers
        return self.busy_s / denom if denom > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["wait_s"] = self.wait_s
        d["mb_per_s"] = self.mb_per_s
        d["utilisation"] = self.utilisation
        return d


_STAGE_FIELDS = {f.name for f in fields(StageSummary)}


@dataclass
class TraceSummary:
    stages: list[StageSummary]
    wall_s: dict[str, float]
    workers: dict[str, int]
    shares: dict[str, dict[str, float]]  # side -> ranking name -> share of worker time
    nbytes: int
    cpu: dict[str, SideCpu] = field(default_factory=dict)
    net: NetInputs = field(default_factory=NetInputs)  # what the network verdict reads
    verdict: Verdict | None = None
    tcp: list[TcpStreamRow] = field(default_factory=list)  # the sender's TCP_INFO samples per stream
    hosts: dict[str, str] = field(default_factory=dict)  # side -> the host it ran on (when known)

    def render_text(self) -> str:
        return render_text(self)

    def to_dict(self) -> dict[str, Any]:
        return summary_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceSummary:
        """A summary from its to_dict() form (a --json report's "stats"), without its verdict:
        compute_verdict() on it gives the verdict again."""
        return cls([StageSummary(**{k: v for k, v in row.items() if k in _STAGE_FIELDS}) for row in d["stages"]],
                   dict(d["wall_s"]), dict(d["workers"]), {k: dict(v) for k, v in d["shares"].items()}, d["bytes"],
                   {side: SideCpu.from_dict(c) for side, c in d.get("cpu", {}).items()},
                   NetInputs.from_dict(d.get("net", {})), hosts=dict(d.get("hosts", {})))



def _stage_rows(data: TraceData) -> list[StageSummary]:
    wall = data.wall_ns / 1e9
    acc: dict[str, list[int]] = {}
    workers: dict[str, set[str]] = {}
    for (worker, stage), t in data.totals.items():
        a = acc.setdefault(stage, [0, 0, 0, 0, 0])
        a[0] += t.busy_ns
        a[1] += t.starved_ns
        a[2] += t.blocked_ns
        a[3] += t.nbytes
        a[4] += t.spans
        workers.setdefault(stage, set()).add(worker)
    split: dict[str, list[int]] = {}
    for (_worker, stage), s in data.sched.items():
        p = split.setdefault(stage, [0, 0, 0])
        p[0] += s.cpu_ns
        p[1] += s.runq_ns
        p[2] += s.sleep_ns
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    rows = []
    for stage, a in sorted(acc.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        # the readings cover a little more than the stage's spans and waits (the µs between
        # events, the tracer's own reading): their proportions, applied to the stage's time
        parts, traced = split.get(stage), (a[0] + a[1] + a[2]) / 1e9
        cpu: list[float | None] = [traced * x / sum(parts) for x in parts] if parts and sum(parts) else [None] * 3
        rows.append(StageSummary(data.role, stage, len(workers[stage]), a[0] / 1e9, a[1] / 1e9, a[2] / 1e9, a[3],
                                 a[4], wall, *cpu))
    return rows


def _shares(data: TraceData) -> tuple[dict[str, float], int]:
    """Ranking of one side: its peer-wait pseudo-stage and each work stage, as worker-time shares.

    With the CPU split, a (worker, stage)'s times are scaled to the wall time its readings
    covered: a thread that waited for a CPU right after a span (at the system call of the
    reading, where a preempted thread leaves) lost that time to the stage, not to no stage."""
    stream_workers = {w for (w, _s) in data.totals if not is_meta(w)}
    denom = data.wall_ns * len(stream_workers)
    peer, peer_stage = PEER[data.role], PEER_STAGE[data.role]
    peer_kind = "blocked" if data.role == "sender" else "starved"
    ns: dict[str, float] = {peer: 0}
    traced = 0.0
    for (worker, stage), t in data.totals.items():
        if is_meta(worker):
            continue
        own = t.busy_ns + t.starved_ns + t.blocked_ns
        covered = data.sched[(worker, stage)].covered_ns if (worker, stage) in data.sched else 0
        scale = covered / own if own and covered > own else 1.0
        traced += own * scale
        if stage == peer_stage:
            ns[peer] += own * scale
            continue
        ns[stage] = ns.get(stage, 0) + t.busy_ns * scale
        ns[peer] += (t.blocked_ns if peer_kind == "blocked" else t.starved_ns) * scale
    if denom <= 0:
        return {k: 0.0 for k in ns} | {"untraced": 0.0}, len(stream_workers)
    shares = {k: v / denom for k, v in ns.items()}
    shares["untraced"] = max(0.0, 1.0 - traced / denom)
    return shares, len(stream_workers)



def summarize(sender: TraceData | None, receiver: TraceData | None) -> TraceSummary:
    """StageSummary rows of both sides, their CPU pictures, and the verdict."""
    stages: list[StageSummary] = []
    wall: dict[str, float] = {}
    workers: dict[str, int] = {}
    shares: dict[str, dict[str, float]] = {}
    cpu: dict[str, SideCpu] = {}
    for data in (sender, receiver):
        if data is None:
            continue
        stages += _stage_rows(data)
        wall[data.role] = data.wall_ns / 1e9
        shares[data.role], workers[data.role] = _shares(data)
        cpu[data.role] = side_cpu(data)
    nbytes = 0
    for side, stage in (("sender", "read"), ("sender", "send"), ("receiver", "write"), ("receiver", "recv")):
        nbytes = sum(s.nbytes for s in stages if s.side == side and s.stage == stage)
        if nbytes:
            break
    summary = TraceSummary(stages, wall, workers, shares, nbytes, cpu, net_inputs(sender, receiver))
    summary.verdict = compute_verdict(summary)
    summary.tcp = stream_rows(sender.counter_totals) if sender is not None else []
    summary.hosts = {data.role: data.host for data in (sender, receiver) if data is not None and data.host}
    return summary


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"



def render_text(summary: TraceSummary) -> str:
    """The table printed by `escp --stats`, the CPU lines, then the verdict and the hint."""
    head = f"{'side':<9}{'stage':<11}{'wkr':>4}{'busy s':>9}{'starved s':>11}{'blocked s':>11}" \
           f"{'bytes':>13}{'MB/s busy':>11}{'util':>6}{'on-CPU s':>10}{'runq s':>9}{'sleep s':>9}"
    lines = [head, "-" * len(head)]
    for s in summary.stages:
        rate = f"{s.mb_per_s:.0f}" if s.mb_per_s is not None else "-"
        lines.append(
            f"{s.side:<9}{s.stage:<11}{s.workers:>4}{s.busy_s:>9.3f}{s.starved_s:>11.3f}{s.blocked_s:>11.3f}"
            f"{format_bytes(s.nbytes) if s.nbytes else '-':>13}{rate:>11}{pct(s.utilisation):>6}"
            f"{_seconds(s.on_cpu_s):>10}{_seconds(s.runq_s):>9}{_seconds(s.sleep_s):>9}"
        )
    walls = ", ".join(f"{side} {w:.3f} s x {summary.workers.get(side, 0)} workers" for side, w in summary.wall_s.items())
    lines.append(f"wall: {walls or '-'}; data {format_bytes(summary.nbytes)}")
    if summary.hosts:
        lines.append("sides: " + ", ".join(f"{side} on {host}" for side, host in summary.hosts.items()))
    lines += [f"cpu: {describe_cpu(c)}" for c in summary.cpu.values()]
    v = summary.verdict
    if v is not None:
        on = f" on {summary.hosts[v.side]}" if v.side in summary.hosts else ""
        lines.append(f"verdict: {v.title()}{on}: {v.evidence}")
        if v.unseen:
            lines.append(f"not seen: {'; '.join(v.unseen)}")
        lines.append(f"hint: {v.hint}")
    if summary.tcp:
        lines.append(render_table(summary.tcp))
    return "\n".join(lines)


def summary_to_dict(summary: TraceSummary) -> dict[str, Any]:
    """JSON-able form for the run report."""
    return {
        "wall_s": dict(summary.wall_s),
        "workers": dict(summary.workers),
        "bytes": summary.nbytes,
        "shares": {side: dict(sh) for side, sh in summary.shares.items()},
        "stages": [s.to_dict() for s in summary.stages],
        "cpu": {side: c.to_dict() for side, c in summary.cpu.items()},
        "net": summary.net.to_dict(),
        "verdict": summary.verdict.to_dict() if summary.verdict is not None else None,
        "hosts": dict(summary.hosts),
        "tcp": [row.to_dict() for row in summary.tcp],
    }


__all__ = ["StageSummary", "TraceSummary", "summarize", "render_text", "summary_to_dict", "STAGE_ORDER"]
