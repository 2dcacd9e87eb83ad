"""The verdict: what limited a traced transfer, on which side, with the evidence and a hint.

Classes (Verdict.kind), each naming the side:

    cpu-starved    a side's workers were runnable but not running: a cgroup CPU quota
                   (cause "quota": the cgroup was throttled) or other processes on its CPUs
                   (cause "contention": runnable most of the time and far longer than on a
                   CPU, hardly ever asleep waiting for its peer, the work spread over its
                   stages, while the transfer used well under the CPUs it may run on).
    cpu-bound      a stage's own work on a CPU limits: compress, encrypt, ... or the kernel's
                   copy in read / write (page cache) or send / recv (loopback): more of
                   the stage's time on a CPU than asleep.
    disk-bound     read (sender) or write (receiver) limits while its thread sleeps in I/O
                   (more of its time asleep than on a CPU; runnable time is contention).
    network-bound  both ends wait on the network: the sender blocked in send, the receiver
                   starved in recv, both asleep. Cause "link-saturated" (the streams share one
                   flat total: more streams will not help), "window-limited" (each stream
                   moves window/RTT: more streams help), "stream-limited" (the sender's -l
                   pacing holds each stream back: more streams or a higher -l help), or
                   "undetermined" (see escp.trace.netclass).
    balanced       no clear leader.

Order: starvation is judged first, from the CPU split (escp.trace.summary.SideCpu), because a
starved thread shows up inside whatever stage it was in; then the limiting stage is found
from the worker-time shares as before (a leader needs DOMINANT of its side's worker time and
a MARGIN lead; the sender decides first, and when it mostly waits for downstream, or finished
long before the receiver (the data waited in buffers), the receiver decides), and the stage's
CPU split says whether it is the disk, the CPU or the network.
Without schedstat the old wall-time reading stands, and the verdict lists what it could not
see (Verdict.unseen).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from . import netclass
from .sidecpu import DOWNSTREAM, UPSTREAM, SideCpu, Split, pct
from .tracedata import Role

if TYPE_CHECKING:
    from .summary import TraceSummary

VerdictKind = Literal["cpu-starved", "cpu-bound", "disk-bound", "network-bound", "balanced"]

DOMINANT = 0.40  # a leader must take at least this share of its side's worker time
MARGIN = 0.10  # ... and lead the runner-up by this much, else "balanced"
EARLY = 1.5  # a receiver that took this many times as long as its sender decides (the data sat in buffers)
DISK_STAGES = frozenset({"read", "write"})
# cpu-starved (contention): runnable for at least STARVED_RUNQ of the side's worker time and
# STRETCH times as long as on a CPU (the side got under a third of the CPU time it was ready to
# use), with its work spread over its stages (no stage doing DOMINANT_WORK of its CPU work), while
# the transfer's workers kept less than SATURATED of the CPUs they may use busy (else its own
# threads outnumber the CPUs). One stage doing nearly all the work (zstd at a high level) waits
# too on a busy host, but that stage is what to change: cpu-bound, with the waiting in evidence.
STARVED_RUNQ = 0.40
STRETCH = 2.0
PEER_SLEEP = 0.15  # ... and slept waiting for its peer less than this share (else it was not the limit)
DOMINANT_WORK = 0.80
SATURATED = 0.75
# quota: the cgroup was throttled in this share of its CFS periods (or the workers used SATURATED
# of the quota), and the side was runnable this much
THROTTLED = 0.10
QUOTA_RUNQ = 0.30
BUSY_HOST = 0.30  # a cpu-bound verdict mentions the waiting for a CPU from this share on


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    stage: str
    side: Role | None
    evidence: str
    hint: str
    cause: str = ""  # quota / contention; link-saturated / window-limited / undetermined; page-cache ...
    unseen: tuple[str, ...] = field(default=())  # counters the verdict could not read

    def title(self) -> str:
        """"network-bound, link-saturated (send, sender)"."""
        where = f"{self.stage}, {self.side}" if self.side else self.stage
        kind = f"{self.kind}, {self.cause}" if self.cause else self.kind
        return f"{kind} ({where})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unseen"] = list(self.unseen)
        return d


HINTS: dict[tuple[str, str], str] = {
    ("cpu-starved", "quota"): "the side's cgroup CPU quota throttles escp: raise the quota (cpu.max / "
    "cpu.cfs_quota_us, the container's CPU limit) or run it outside that cgroup; more streams will not help",
    ("cpu-starved", "contention"): "other processes take the CPUs escp's threads wait for: move or pause "
    "the competing load, give escp its own cores (taskset, cpumask in /etc/escp.conf) or raise its priority; "
    "more streams will not help",
    ("network-bound", "link-saturated"): "the link is full: all streams together move one flat rate, so more "
    "streams will not help; compress (-C) if the data compresses and the CPUs have room, pace just below the "
    "link rate (-l) if there is loss, or move the transfer off the busy link",
    ("network-bound", "window-limited"): "each stream is limited by its window (window/RTT), not by the link: "
    "add streams (-t); raise the TCP buffer limits (net.core.rmem_max/wmem_max, tcp_rmem/tcp_wmem) on both hosts",
    ("network-bound", "stream-limited"): "the sender's pacing (-l, one rate for the whole transfer) held it back, "
    "and the network had room: raise -l",
    ("network-bound", "*"): "the network path limits: try more streams (-t 8) and see whether the total grows "
    "(window-limited) or stays flat (the link is full); check TCP buffer limits and MTU; --ioengine dummy "
    "isolates the network",
    ("disk-bound", "read"): "the source disk limits: check the disk (fio; --ioengine dummy::posix skips source "
    "reads to compare), try --nodirect (page cache and its read-ahead) or larger blocks (--blocksize 4M); more "
    "streams only help devices with queue depth",
    ("disk-bound", "write"): "the destination disk limits (the sender sees back-pressure): check the target "
    "filesystem, try larger blocks (--blocksize 4M) or fewer streams; --ioengine posix::dummy skips writes to "
    "confirm; --sparse helps mostly-zero data",
    ("cpu-bound", "write"): "the kernel's copy into the page cache dominates the receiver (on a CPU, not "
    "waiting for the disk): add streams (-t) if the receiver has idle cores; --sparse skips zero blocks",
    ("cpu-bound", "read"): "the kernel's copy out of the page cache dominates the sender (on a CPU): add "
    "streams (-t) if the sender has idle cores; --direct reads without the page cache",
    ("cpu-bound", "send"): "the sender's socket copies dominate (on a CPU, as on loopback): add streams (-t) "
    "up to the cores, larger blocks (--blocksize)",
    ("cpu-bound", "recv"): "the receiver's socket copies dominate (on a CPU, as on loopback): add streams (-t) "
    "up to the receiver's cores",
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


def hint_for(kind: str, key: str) -> str:
    return HINTS.get((kind, key)) or HINTS[(kind, "*")]


def _ranked(shares: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(((k, v) for k, v in shares.items() if k != "untraced"), key=lambda kv: -kv[1])


def _describe(side: str, ranking: list[tuple[str, float]], shares: dict[str, float]) -> str:
    top = ", ".join(f"{k} {pct(v)}" for k, v in ranking[:3])
    return f"{side}: {top} of worker time (untraced {pct(shares.get('untraced', 0.0))})"


def _lead(ranking: list[tuple[str, float]]) -> tuple[str, float, float]:
    name, share = ranking[0] if ranking else ("none", 0.0)
    runner = ranking[1][1] if len(ranking) > 1 else 0.0
    return name, share, runner


def _split_text(name: str, s: Split) -> str:
    return (f"{name} on-CPU {pct(s.share('on_cpu'))} / runnable {pct(s.share('runq'))} / "
            f"sleeping {pct(s.share('sleep'))}")


# -- starvation ------------------------------------------------------------------------------


def starvation(c: SideCpu, peer: SideCpu | None) -> tuple[str, float] | None:
    """(cause, runnable share) when this side was starved of CPU, else None (see STRETCH).

    A quota starves a side that waited for a CPU a good part of its time while its cgroup was
    throttled or its workers used up the quota. A side whose transfer's own threads fill the
    CPUs they may use (with the peer's, when it shares the host and CPUs) waits for itself:
    cpu-bound, judged by stage."""
    if not c.has_sched:
        return None
    runq, on_cpu = c.split.share("runq"), c.split.share("on_cpu")
    if peer is not None and c.data_wall_s > 0 and peer.data_wall_s > c.data_wall_s:
        runq *= c.data_wall_s / peer.data_wall_s  # a side that finished early waited for a part of the transfer only
    if c.quota_cores is not None and runq >= QUOTA_RUNQ and (
            c.periods and c.throttled_periods / c.periods >= THROTTLED or c.cpus_used >= SATURATED * c.quota_cores):
        return "quota", runq
    if runq < STARVED_RUNQ or runq < STRETCH * on_cpu:
        return None
    peer_wait = c.stages.get(DOWNSTREAM if c.side == "sender" else UPSTREAM)
    if peer_wait is not None and peer_wait.sleep_s >= PEER_SLEEP * c.split.total_s:
        return None  # it slept waiting for its peer or the network: its waits for a CPU cost no throughput
    top_work = max((s.on_cpu_s for s in c.stages.values()), default=0.0)
    if c.split.on_cpu_s > 0 and top_work >= DOMINANT_WORK * c.split.on_cpu_s:
        return None
    cpus, used = set(c.cpuset), c.cpus_used
    if peer is not None and peer.has_sched and peer.boot_id and peer.boot_id == c.boot_id and cpus & set(peer.cpuset):
        cpus |= set(peer.cpuset)
        used += peer.cpus_used
    if used >= SATURATED * float(len(cpus) or c.cpus or 1):
        return None
    return "contention", runq


def _starved_verdict(side: Role, cause: str, c: SideCpu, other: SideCpu | None, unseen: tuple[str, ...]) -> Verdict:
    stage = max(c.stages.items(), key=lambda kv: kv[1].runq_s)[0] if c.stages else "all"
    stage = {DOWNSTREAM: "send", UPSTREAM: "recv"}.get(stage, stage)
    ev = describe_starved(c)
    if other is not None and other.has_sched:
        ev += f"; {other.side}: runnable {pct(other.split.share('runq'))}, sleeping {pct(other.split.share('sleep'))}"
    return Verdict("cpu-starved", stage, side, ev, hint_for("cpu-starved", cause), cause, unseen)


def describe_starved(c: SideCpu) -> str:
    parts = [f"{c.side}: runnable {pct(c.split.share('runq'))}, on-CPU {pct(c.split.share('on_cpu'))} of worker time"]
    if c.quota_cores is not None:
        parts.append(f"cgroup quota {c.quota_cores:.2f} CPU, throttled in {c.throttled_periods} of {c.periods} "
                     f"periods ({c.throttled_s:.2f} s, summed over CPUs)")
    parts.append(f"its workers used {c.cpus_used:.2f} of {c.cpus} CPUs")
    if c.nivcsw is not None:
        parts.append(f"{c.nivcsw} involuntary context switches")
    if c.psi_some_s is not None and c.wall_s > 0:
        parts.append(f"host CPU pressure {pct(min(1.0, c.psi_some_s / c.wall_s))}")
    return ", ".join(parts)


# -- the verdict -------------------------------------------------------------------------------


def _unseen(summary: TraceSummary) -> tuple[str, ...]:
    out: list[str] = []
    for c in summary.cpu.values():
        out += [f"{c.side}: {u}" for u in c.unseen]
    return tuple(out)


def compute_verdict(summary: TraceSummary) -> Verdict:
    """The verdict of a summary (see the module doc)."""
    unseen = _unseen(summary)
    s_sh, r_sh = summary.shares.get("sender"), summary.shares.get("receiver")
    if not s_sh and not r_sh:
        return Verdict("balanced", "none", None, "no trace data", hint_for("balanced", "*"), unseen=unseen)
    starved = []
    for side, c in summary.cpu.items():
        peer = next((p for s, p in summary.cpu.items() if s != side), None)
        if (st := starvation(c, peer)) is not None:
            starved.append((st[0] == "quota", st[1], side, st[0]))
    if starved:  # a throttled quota first, then the side that waited longest
        _quota, _runq, side, cause = max(starved)
        other = next((c for s, c in summary.cpu.items() if s != side), None)
        return _starved_verdict(side, cause, summary.cpu[side], other, unseen)  # type: ignore[arg-type]

    def balanced(side: Role, sh: dict[str, float], ranking: list[tuple[str, float]], why: str) -> Verdict:
        name, _share, _r = _lead(ranking)
        ev = f"{why}; {_describe(side, ranking, sh)}"
        if sh.get("untraced", 0.0) >= 0.5:
            return Verdict("balanced", "untraced", side, ev, hint_for("balanced", "untraced"), unseen=unseen)
        stage = {DOWNSTREAM: "send", UPSTREAM: "recv"}.get(name, name)
        return Verdict("balanced", stage, side, ev, hint_for("balanced", "*"), unseen=unseen)

    r_rank = _ranked(r_sh) if r_sh else []
    w_s, w_r = summary.wall_s.get("sender", 0.0), summary.wall_s.get("receiver", 0.0)
    if s_sh and r_sh and w_r > EARLY * w_s:  # the data waited in buffers: the sender was not the limit
        s_sh = None
        ev_s = f"the sender's part took {w_s:.2f} s, the receiver's {w_r:.2f} s"
    elif not s_sh:
        ev_s = "no sender trace"
    if s_sh:
        s_rank = _ranked(s_sh)
        name, share, runner = _lead(s_rank)
        if share < DOMINANT or share - runner < MARGIN:
            return balanced("sender", s_sh, s_rank, "no clear leader on the sender")
        ev_s = _describe("sender", s_rank, s_sh)
        if name != DOWNSTREAM:
            if r_sh:
                ev_s += f"; receiver waits for data {pct(r_sh.get(UPSTREAM, 0.0))}"
            return _by_stage(summary, "sender", name, ev_s, unseen)
        if not r_sh:
            return _network(summary, ev_s + "; no receiver trace, so receiver back-pressure is not ruled out",
                            unseen)
    assert r_sh is not None
    name, share, runner = _lead(r_rank)
    if share < DOMINANT or share - runner < MARGIN:
        return balanced("receiver", r_sh, r_rank, f"{ev_s}; no clear leader on the receiver")
    ev = f"{ev_s}; {_describe('receiver', r_rank, r_sh)}"
    if name == UPSTREAM:
        return _network(summary, ev, unseen)
    return _by_stage(summary, "receiver", name, ev, unseen)


def _computing(split: Split) -> bool:
    """A stage that spent more of its time on a CPU than asleep computes (a copy in the kernel,
    say); one that slept more waits (the device, the network). Its runnable time says neither:
    it is the host's contention, judged by starvation()."""
    return split.on_cpu_s > split.sleep_s


def _by_stage(summary: TraceSummary, side: Role, stage: str, ev: str, unseen: tuple[str, ...]) -> Verdict:
    """A work stage leads: the disk when it sleeps in read / write, else the CPU."""
    c = summary.cpu.get(side)
    split = c.stages.get(stage) if c is not None else None
    if split is not None and split.total_s > 0:
        ev += f"; {_split_text(stage, split)}"
    if c is not None and c.has_sched and c.split.share("runq") >= BUSY_HOST:
        ev += (f"; the {side}'s workers also waited for a CPU {pct(c.split.share('runq'))} of their time "
               f"({c.split.runq_s / max(c.split.on_cpu_s, 1e-9):.1f}x their time on one): the host is busy")
    if stage in DISK_STAGES:
        if split is None or not _computing(split):
            return Verdict("disk-bound", stage, side, ev, hint_for("disk-bound", stage), unseen=unseen)
        return Verdict("cpu-bound", stage, side, ev, hint_for("cpu-bound", stage), "page-cache copy", unseen)
    return Verdict("cpu-bound", stage, side, ev, hint_for("cpu-bound", stage), unseen=unseen)


def _network(summary: TraceSummary, ev: str, unseen: tuple[str, ...]) -> Verdict:
    """Both ends wait on each other through the network: unless one end was really copying on a
    CPU (loopback), the network limits; netclass says how."""
    for side, pseudo, stage in (("sender", DOWNSTREAM, "send"), ("receiver", UPSTREAM, "recv")):
        c = summary.cpu.get(side)
        split = c.stages.get(pseudo) if c is not None else None
        if split is not None and _computing(split):
            return Verdict("cpu-bound", stage, side,  # type: ignore[arg-type]
                           f"{ev}; {_split_text(stage, split)}: the socket copies, not the network",
                           hint_for("cpu-bound", stage), "socket copy", unseen)
    net = netclass.classify(summary.net)
    key = net.cause if net.cause != "undetermined" else "*"
    return Verdict("network-bound", "send", "sender", f"{ev}; {net.evidence}", hint_for("network-bound", key),
                   net.cause, unseen + net.unseen)


__all__ = ["Verdict", "VerdictKind", "compute_verdict", "starvation", "hint_for", "HINTS"]
