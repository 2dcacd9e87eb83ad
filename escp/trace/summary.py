"""Per-stage summary of a traced transfer and the bottleneck verdict.

summarize(sender, receiver) turns the exact totals of both sides (TraceData) into one
StageSummary per (side, stage) and a Verdict naming what limited the transfer:

    network-bound  the sender spends most worker time in send (blocked) and the
                   receiver most in recv (starved): bytes are in flight, not in a stage.
    disk-bound     read (sender) or write (receiver) dominates its side; for write the
                   sender shows it as back-pressure (blocked in send).
    cpu-bound      a CPU stage (checksum, compress, encrypt / decrypt, decompress,
                   verify) dominates its side.
    balanced       no clear leader (or most worker time is outside traced stages).

The engine runs one thread per stream doing every stage in turn, so the time of one
worker splits across its stages. Shares are fractions of a side's worker time
(wall x stream workers; "meta" workers are shown but not counted). The sender's
"downstream" time is send busy + send waits + blocked waits of any stage; the
receiver's "upstream" time is recv busy + recv waits + starved waits of any stage.
The sender decides first: if its leader is downstream time, the receiver decides
between network (its leader is upstream time) and its own leading stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..units import format_bytes
from .recorder import Role, TraceData
from .tcpinfo import TcpStreamRow, render_table, stream_rows

VerdictKind = Literal["network-bound", "disk-bound", "cpu-bound", "balanced"]

DISK_STAGES = frozenset({"read", "write"})
CPU_STAGES = frozenset({"checksum", "compress", "encrypt", "decrypt", "decompress", "verify"})
NET_STAGES = frozenset({"send", "recv"})
STAGE_ORDER = ["read", "checksum", "compress", "encrypt", "send", "recv", "decrypt", "decompress",
               "verify", "write", "meta"]

DOMINANT = 0.40  # a leader must take at least this share of its side's worker time
MARGIN = 0.10  # ... and lead the runner-up by this much, else "balanced"
DOWNSTREAM = "send+blocked"  # pseudo-stage names used in the rankings
UPSTREAM = "recv+starved"


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


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    stage: str
    side: Role | None
    evidence: str
    hint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TraceSummary:
    stages: list[StageSummary]
    wall_s: dict[str, float]
    workers: dict[str, int]
    shares: dict[str, dict[str, float]]  # side -> ranking name -> share of worker time
    nbytes: int
    verdict: Verdict = field(default_factory=lambda: Verdict("balanced", "none", None, "no data", ""))
    tcp: list[TcpStreamRow] = field(default_factory=list)  # the sender's TCP_INFO samples per stream

    def render_text(self) -> str:
        return render_text(self)

    def to_dict(self) -> dict[str, Any]:
        return summary_to_dict(self)


def _is_meta(worker: str) -> bool:
    return worker.startswith("meta")


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
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    return [
        StageSummary(data.role, stage, len(workers[stage]), a[0] / 1e9, a[1] / 1e9, a[2] / 1e9, a[3], a[4], wall)
        for stage, a in sorted(acc.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    ]


def _shares(data: TraceData) -> tuple[dict[str, float], int]:
    """Ranking of one side: its peer-wait pseudo-stage and each work stage, as worker-time shares."""
    stream_workers = {w for (w, _s) in data.totals if not _is_meta(w)}
    denom = data.wall_ns * len(stream_workers)
    peer = DOWNSTREAM if data.role == "sender" else UPSTREAM
    peer_stage = "send" if data.role == "sender" else "recv"
    peer_kind = "blocked" if data.role == "sender" else "starved"
    ns: dict[str, int] = {peer: 0}
    traced = 0
    for (worker, stage), t in data.totals.items():
        if _is_meta(worker):
            continue
        traced += t.busy_ns + t.starved_ns + t.blocked_ns
        if stage == peer_stage:
            ns[peer] += t.busy_ns + t.starved_ns + t.blocked_ns
            continue
        ns[stage] = ns.get(stage, 0) + t.busy_ns
        ns[peer] += t.blocked_ns if peer_kind == "blocked" else t.starved_ns
    if denom <= 0:
        return {k: 0.0 for k in ns} | {"untraced": 0.0}, len(stream_workers)
    shares = {k: v / denom for k, v in ns.items()}
    shares["untraced"] = max(0.0, 1.0 - traced / denom)
    return shares, len(stream_workers)


def _ranked(shares: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(((k, v) for k, v in shares.items() if k != "untraced"), key=lambda kv: -kv[1])


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _describe(side: str, ranking: list[tuple[str, float]], shares: dict[str, float]) -> str:
    top = ", ".join(f"{k} {_pct(v)}" for k, v in ranking[:3])
    return f"{side}: {top} of worker time (untraced {_pct(shares.get('untraced', 0.0))})"


HINTS: dict[tuple[str, str], str] = {
    ("network-bound", "*"): "the path limits: try more streams (-t 8 or more), check TCP buffer limits "
    "(net.core.rmem_max/wmem_max, tcp_rmem/wmem) and MTU; use -l pacing if there is loss; "
    "--ioengine dummy isolates the network",
    ("disk-bound", "read"): "the source disk limits: check the disk (fio; --ioengine dummy::posix skips source reads to compare), "
    "try --nodirect (page cache and its read-ahead) or larger blocks (--blocksize 4M); more streams only help devices with queue depth",
    ("disk-bound", "write"): "the destination disk limits (the sender sees back-pressure): check the target "
    "filesystem, try larger blocks (--blocksize 4M) or fewer streams; --ioengine posix::dummy skips writes to confirm; "
    "--sparse helps mostly-zero data",
    ("cpu-bound", "compress"): "zstd compression dominates: run without -C unless the link is slower than "
    "the compress MB/s shown here times the streams",
    ("cpu-bound", "decompress"): "zstd decompression on the receiver dominates: run without -C "
    "or add streams (-t) if cores are idle",
    ("cpu-bound", "encrypt"): "AES-GCM dominates: add streams (-t) up to the number of cores, pin with "
    "cpumask in /etc/escp.conf, check the CPU has AES-NI / VAES",
    ("cpu-bound", "decrypt"): "AES-GCM on the receiver dominates: add streams (-t) up to the receiver's cores, "
    "pin with cpumask in /etc/escp.conf, check AES-NI / VAES",
    ("cpu-bound", "checksum"): "block hashing dominates: add streams (-t); --nochecksum removes it "
    "(not recommended: end-to-end integrity is lost)",
    ("cpu-bound", "verify"): "block hash verification dominates: add streams (-t); --nochecksum removes it "
    "(not recommended)",
    ("cpu-bound", "*"): "a CPU stage dominates: add streams (-t) up to the number of cores, larger blocks (--blocksize)",
    ("balanced", "untraced"): "most worker time is outside the traced stages (file open/close, metadata, "
    "many small files, start-up): fewer streams for many small files, check the metadata path",
    ("balanced", "*"): "no single stage dominates: raise streams (-t) and block size (--blocksize) together and "
    "re-measure; check for other load on the hosts",
}


def _hint(kind: str, stage: str) -> str:
    return HINTS.get((kind, stage)) or HINTS[(kind, "*")]


def _classify_stage(stage: str) -> VerdictKind:
    if stage in DISK_STAGES:
        return "disk-bound"
    return "cpu-bound"


def _lead(ranking: list[tuple[str, float]]) -> tuple[str, float, float]:
    name, share = ranking[0] if ranking else ("none", 0.0)
    runner = ranking[1][1] if len(ranking) > 1 else 0.0
    return name, share, runner


def compute_verdict(summary: TraceSummary) -> Verdict:
    """The bottleneck verdict from the per-side shares of a summary (see module doc)."""
    s_sh = summary.shares.get("sender")
    r_sh = summary.shares.get("receiver")
    if not s_sh and not r_sh:
        return Verdict("balanced", "none", None, "no trace data", _hint("balanced", "*"))

    def balanced(side: Role, sh: dict[str, float], ranking: list[tuple[str, float]], why: str) -> Verdict:
        name, _share, _r = _lead(ranking)
        if sh.get("untraced", 0.0) >= 0.5:
            return Verdict("balanced", "untraced", side, f"{why}; {_describe(side, ranking, sh)}",
                           _hint("balanced", "untraced"))
        stage = {DOWNSTREAM: "send", UPSTREAM: "recv"}.get(name, name)
        return Verdict("balanced", stage, side, f"{why}; {_describe(side, ranking, sh)}", _hint("balanced", "*"))

    def by_stage(side: Role, stage: str, evidence: str) -> Verdict:
        kind = _classify_stage(stage)
        return Verdict(kind, stage, side, evidence, _hint(kind, stage))

    r_rank = _ranked(r_sh) if r_sh else []
    if s_sh:
        s_rank = _ranked(s_sh)
        name, share, runner = _lead(s_rank)
        if share < DOMINANT or share - runner < MARGIN:
            return balanced("sender", s_sh, s_rank, "no clear leader on the sender")
        if name != DOWNSTREAM:
            ev = _describe("sender", s_rank, s_sh)
            if r_sh:
                ev += f"; receiver waits for data {_pct(r_sh.get(UPSTREAM, 0.0))}"
            return by_stage("sender", name, ev)
        ev_s = _describe("sender", s_rank, s_sh)
        if not r_sh:
            return Verdict("network-bound", "send", "sender",
                           ev_s + "; no receiver trace, so receiver back-pressure is not ruled out",
                           _hint("network-bound", "*"))
    else:
        ev_s = "no sender trace"
    assert r_sh is not None
    name, share, runner = _lead(r_rank)
    ev = f"{ev_s}; {_describe('receiver', r_rank, r_sh)}"
    if share < DOMINANT or share - runner < MARGIN:
        return balanced("receiver", r_sh, r_rank, f"{ev_s}; no clear leader on the receiver")
    if name == UPSTREAM:
        return Verdict("network-bound", "send", "sender", ev, _hint("network-bound", "*"))
    return by_stage("receiver", name, ev)


def summarize(sender: TraceData | None, receiver: TraceData | None) -> TraceSummary:
    """StageSummary rows of both sides plus the verdict."""
    stages: list[StageSummary] = []
    wall: dict[str, float] = {}
    workers: dict[str, int] = {}
    shares: dict[str, dict[str, float]] = {}
    for data in (sender, receiver):
        if data is None:
            continue
        stages += _stage_rows(data)
        wall[data.role] = data.wall_ns / 1e9
        shares[data.role], workers[data.role] = _shares(data)
    nbytes = 0
    for side, stage in (("sender", "read"), ("sender", "send"), ("receiver", "write"), ("receiver", "recv")):
        nbytes = sum(s.nbytes for s in stages if s.side == side and s.stage == stage)
        if nbytes:
            break
    summary = TraceSummary(stages, wall, workers, shares, nbytes)
    summary.verdict = compute_verdict(summary)
    summary.tcp = stream_rows(sender.counter_totals) if sender is not None else []
    return summary


def render_text(summary: TraceSummary) -> str:
    """The table printed by `escp --stats`, then the verdict and the hint."""
    head = f"{'side':<9}{'stage':<11}{'wkr':>4}{'busy s':>9}{'starved s':>11}{'blocked s':>11}" \
           f"{'bytes':>13}{'MB/s busy':>11}{'util':>6}"
    lines = [head, "-" * len(head)]
    for s in summary.stages:
        rate = f"{s.mb_per_s:.0f}" if s.mb_per_s is not None else "-"
        lines.append(
            f"{s.side:<9}{s.stage:<11}{s.workers:>4}{s.busy_s:>9.3f}{s.starved_s:>11.3f}{s.blocked_s:>11.3f}"
            f"{format_bytes(s.nbytes) if s.nbytes else '-':>13}{rate:>11}{_pct(s.utilisation):>6}"
        )
    walls = ", ".join(f"{side} {w:.3f} s x {summary.workers.get(side, 0)} workers" for side, w in summary.wall_s.items())
    lines.append(f"wall: {walls or '-'}; data {format_bytes(summary.nbytes)}")
    v = summary.verdict
    where = f"{v.stage}, {v.side}" if v.side else v.stage
    lines.append(f"verdict: {v.kind} ({where}): {v.evidence}")
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
        "verdict": summary.verdict.to_dict(),
        "tcp": [row.to_dict() for row in summary.tcp],
    }


__all__ = [
    "StageSummary",
    "Verdict",
    "VerdictKind",
    "TraceSummary",
    "summarize",
    "compute_verdict",
    "render_text",
    "summary_to_dict",
]
