"""One side's CPU picture: where its stream workers' time went (on a CPU, runnable, sleeping),
per ranking name and in all, with the process's, cgroup's and host's counters around it.

side_cpu() builds a SideCpu from a recording (TraceData: its sched totals and cpu context);
summary.py puts one per side in the summary, verdict.py judges starvation and the disk / CPU /
network question of a stage from them. The ranking names are the work stages and each side's
peer pseudo-stage: DOWNSTREAM (the sender's send time and blocked waits) and UPSTREAM (the
receiver's recv time and starved waits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .tracedata import Role, TraceData

DOWNSTREAM = "send+blocked"  # pseudo-stage names used in the rankings
UPSTREAM = "recv+starved"
PEER = {"sender": DOWNSTREAM, "receiver": UPSTREAM}
PEER_STAGE = {"sender": "send", "receiver": "recv"}


def is_meta(worker: str) -> bool:
    return worker.startswith("meta") or worker.endswith("-meta")


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


@dataclass(frozen=True)
class Split:
    """Time split into on a CPU / runnable (waiting for one) / sleeping (blocked: I/O, poll, lock)."""

    on_cpu_s: float = 0.0
    runq_s: float = 0.0
    sleep_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.on_cpu_s + self.runq_s + self.sleep_s

    def share(self, part: str) -> float:
        """Fraction of the total in part ("on_cpu", "runq" or "sleep"); 0 without time."""
        total = self.total_s
        return getattr(self, f"{part}_s") / total if total > 0 else 0.0


@dataclass(frozen=True)
class SideCpu:
    """One side's CPU picture: its stream workers' time split, and the counters around it."""

    side: Role
    split: Split  # stream workers, all stages and the gaps between them (empty: no schedstat)
    stages: dict[str, Split]  # by ranking name (work stage, or the peer pseudo-stage)
    data_wall_s: float = 0.0  # the side's wall time (first to last span or wait)
    wall_s: float = 0.0  # of the counters below (the recording: start-up to the end)
    cpus: int | None = None  # CPUs the process may run on
    cpuset: tuple[int, ...] = ()
    boot_id: str = ""  # the same on both sides when they share a host
    process_cpu_s: float | None = None  # user + system time of the whole process
    nivcsw: int | None = None  # involuntary context switches (preempted while runnable)
    nvcsw: int | None = None
    quota_cores: float | None = None  # the cgroup's CPU quota (None: none or not seen)
    cgroup: str | None = None
    periods: int = 0
    throttled_periods: int = 0
    throttled_s: float = 0.0
    psi_some_s: float | None = None  # host: time some task waited for a CPU
    unseen: tuple[str, ...] = ()  # counters that could not be read

    @property
    def has_sched(self) -> bool:
        return self.split.total_s > 0

    @property
    def cpus_used(self) -> float:
        """CPUs the stream workers kept busy on average over the side's wall time."""
        return self.split.on_cpu_s / self.data_wall_s if self.data_wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpuset"] = list(self.cpuset)
        d["unseen"] = list(self.unseen)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SideCpu:
        return cls(**(d | {"split": Split(**d["split"]), "stages": {k: Split(**v) for k, v in d["stages"].items()},
                           "cpuset": tuple(d.get("cpuset", ())), "unseen": tuple(d.get("unseen", ()))}))


def _seconds_split(ns: list[int]) -> Split:
    return Split(*(x / 1e9 for x in ns))


def side_cpu(data: TraceData) -> SideCpu:
    """The CPU split of the stream workers (whole side and per ranking name) and the counters.

    A work stage's waits count toward the peer pseudo-stage in the ranking, but the CPU
    split is per (worker, stage), so a stage's split covers its spans and its own waits; for
    the ranking names the work stages' splits are mostly their spans (a worker's waits for the
    peer are recorded under send / recv)."""
    total = [0, 0, 0]
    per: dict[str, list[int]] = {}
    peer, peer_stage = PEER[data.role], PEER_STAGE[data.role]
    for (worker, stage), s in data.sched.items():
        if is_meta(worker):
            continue
        parts = (s.cpu_ns, s.runq_ns, s.sleep_ns)
        total = [a + b for a, b in zip(total, parts, strict=True)]
        name = peer if stage == peer_stage else stage
        per[name] = [a + b for a, b in zip(per.get(name, [0, 0, 0]), parts, strict=True)]
    cpu = data.cpu or {}
    unseen = list(cpu.get("unseen", [])) if data.cpu is not None else ["no CPU counters (cgroup, context switches)"]
    if not data.sched:
        unseen.insert(0, cpu.get("schedstat") or "no schedstat (on-CPU / runnable time)")
    cg = cpu.get("cgroup") or {}
    psi = cpu.get("psi_some_ns")
    return SideCpu(
        data.role, _seconds_split(total), {k: _seconds_split(v) for k, v in per.items()}, data_wall_s=data.wall_ns / 1e9,
        wall_s=cpu.get("wall_ns", 0) / 1e9, cpus=cpu.get("cpus"), cpuset=tuple(cpu.get("cpuset", ())),
        boot_id=cpu.get("boot_id", ""),
        process_cpu_s=cpu["cpu_ns"] / 1e9 if "cpu_ns" in cpu else None,
        nivcsw=cpu.get("nivcsw"), nvcsw=cpu.get("nvcsw"), quota_cores=cg.get("quota_cores"),
        cgroup=cg.get("path"), periods=cg.get("periods", 0), throttled_periods=cg.get("throttled", 0),
        throttled_s=cg.get("throttled_ns", 0) / 1e9, psi_some_s=psi / 1e9 if psi is not None else None,
        unseen=tuple(unseen),
    )


def describe_cpu(c: SideCpu) -> str:
    """One line: where the side's worker time went and the counters that explain it."""
    parts = []
    if c.has_sched:
        parts.append(f"on-CPU {pct(c.split.share('on_cpu'))}, runnable {pct(c.split.share('runq'))}, "
                     f"sleeping {pct(c.split.share('sleep'))} of worker time")
    if c.has_sched and c.cpus:
        parts.append(f"workers used {c.cpus_used:.2f} of {c.cpus} CPUs")
    if c.quota_cores is not None:
        parts.append(f"cgroup quota {c.quota_cores:.2f} CPU, throttled in {c.throttled_periods} of "
                     f"{c.periods} periods ({c.throttled_s:.2f} s, summed over CPUs)")
    if c.nivcsw is not None:
        parts.append(f"{c.nivcsw} involuntary context switches")
    return f"{c.side}: " + ("; ".join(parts) if parts else "no CPU figures")


__all__ = ["Split", "SideCpu", "side_cpu", "describe_cpu", "is_meta", "pct", "DOWNSTREAM", "UPSTREAM", "PEER",
           "PEER_STAGE"]
