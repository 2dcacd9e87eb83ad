"""The verdict matrix: known bottlenecks, injected from outside escp and from inside, each run
several times; every run's verdict must name the injected class and side.

`python -m harness verdicts [--runs 3] [--only GLOB] [--scale 1.0] [--out DIR] [--example]`
(`nox -s verdicts`) needs root for the outside injections (harness/inject.py); an injection
whose facility is missing is reported as skipped with the reason. Each run copies a seeded
file with `escp -t 2 --stats --json` through the ssh stand-in (harness/ssh_standin.py), so
that each side can be placed on its own: the sender through the launcher (harness/launch.py),
the receiver through the launcher given as the remote escp program (`-D`). Every copy is
checked against its source.

Results: DIR/verdicts.json (every run: verdict, evidence, right or not, wall time, and the
--json "stats" it was made from) and DIR/verdicts.md (the table); --example writes them to
reports/example.
Tests (tests/trace/test_injections.py) run the same injections once each at a small scale.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import inject, results, ssh_standin
from harness.datasets import ensure_dataset, file_digest
from harness.peers import REPO, escp_env

FAULT_ENV = "ESCP_FAULT"
RUN_TIMEOUT_S = 300
STREAMS = 2
# the hog injection: busy loops sharing the side's CPU; the other side gets a CPU of its own at
# this weight, so that the machine's other load (a shared 2-CPU host) does not starve it too
HOGS = 4
PROTECT_WEIGHT = 10


@dataclass(frozen=True)
class Expect:
    kind: str
    side: str
    cause: str | None = None  # required cause, if any
    stage: str | None = None  # required stage, if any

    def text(self) -> str:
        kind = f"{self.kind}, {self.cause}" if self.cause else self.kind
        return f"{kind} ({self.stage or 'any stage'}, {self.side})"

    def matches(self, v: dict[str, Any]) -> bool:
        return (v.get("kind") == self.kind and v.get("side") == self.side
                and self.cause in (None, v.get("cause")) and self.stage in (None, v.get("stage")))


@dataclass
class Placement:
    """How one run is started: where each side goes and what escp gets."""

    src: Path
    dest: Path
    sender: list[str] = field(default_factory=list)  # launcher arguments
    receiver: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)  # e.g. `ip netns exec NAME`
    args: list[str] = field(default_factory=list)  # extra escp options
    env: dict[str, str] = field(default_factory=dict)


Setup = Callable[["Injection", Path, Path], contextlib.AbstractContextManager[Placement]]


@dataclass(frozen=True)
class Injection:
    name: str
    what: str  # how the bottleneck is made (the table's text)
    expect: Expect
    setup: Setup
    size_mib: int  # file size at scale 1 (sized for a few seconds per run on the 2-CPU dev host)
    needs: tuple[str, ...] = ()  # facilities (inject.facility_missing)
    content: str = "random"
    args: tuple[str, ...] = ()
    fault: str | None = None
    verify: bool = True  # False: the receiver writes nothing (dummy engine)
    outside: bool = True  # injected from outside escp


# -- placements ---------------------------------------------------------------------------


@contextlib.contextmanager
def _plain(inj: Injection, src: Path, work: Path) -> Iterator[Placement]:
    p = Placement(src, work / "dst", args=list(inj.args))
    if inj.fault:
        p.env[FAULT_ENV] = inj.fault  # both sides get it; the rule names the call it slows
    yield p


def _quota(side: str, cores: float) -> Setup:
    @contextlib.contextmanager
    def setup(inj: Injection, src: Path, work: Path) -> Iterator[Placement]:
        with inject.SideCgroup(cores) as cg, _plain(inj, src, work) as p:
            home = ["--cgroup", str(cg.layout.home / "cgroup.procs")]
            p.sender, p.receiver = (["--cgroup", str(cg.procs)], home) if side == "sender" else \
                (home, ["--cgroup", str(cg.procs)])  # the receiver, a grandchild of the sender, goes home
            yield p
    return setup


def _hog(side: str) -> Setup:
    @contextlib.contextmanager
    def setup(inj: Injection, src: Path, work: Path) -> Iterator[Placement]:
        cpus = sorted(os.sched_getaffinity(0))[:2]
        if len(cpus) < 2:
            raise inject.InjectionError("needs 2 CPUs (one per side)")
        mine, other = (cpus[0], cpus[1]) if side == "sender" else (cpus[1], cpus[0])
        with inject.SideCgroup(weight=PROTECT_WEIGHT) as protect, \
                inject.CpuHogs([mine], HOGS, RUN_TIMEOUT_S), _plain(inj, src, work) as p:
            hogged = ["--cgroup", str(protect.layout.home / "cgroup.procs"), "--cpus", str(mine)]
            spared = ["--cgroup", str(protect.procs), "--cpus", str(other)]
            p.sender, p.receiver = (hogged, spared) if side == "sender" else (spared, hogged)
            yield p
    return setup


@contextlib.contextmanager
def _link(inj: Injection, src: Path, work: Path) -> Iterator[Placement]:
    # inside `ip netns exec` /sys is the namespace's own: cgroups are left as they are
    with inject.NetnsLink("400mbit") as ns, _plain(inj, src, work) as p:
        p.prefix = ns.prefix()
        yield p


def _disk(kind: str) -> Setup:
    @contextlib.contextmanager
    def setup(inj: Injection, src: Path, work: Path) -> Iterator[Placement]:
        rate = 20 << 20
        with inject.SlowDisk(max(64, 3 * inj.size_mib)) as disk, inject.SideCgroup() as cg, \
                _plain(inj, src, work) as p:
            side = ["--cgroup", str(cg.procs)]  # v2 limits the device for this cgroup only
            if kind == "write":
                p.dest, p.receiver = disk.mount / "dst", side
                disk.throttle(write_bps=rate, cgroup=cg)
            else:
                p.src = disk.mount / src.name
                subprocess.run(["cp", str(src), str(p.src)], check=True)
                p.sender, p.receiver = side, ["--cgroup", str(cg.layout.home / "cgroup.procs")]
                p.args.append("--direct")  # O_DIRECT reads reach the device
                disk.throttle(read_bps=rate, cgroup=cg)
            yield p
    return setup


INJECTIONS: list[Injection] = [
    Injection("quota-receiver", "receiver alone in a cgroup with a CPU quota of 0.25 CPU",
              Expect("cpu-starved", "receiver", "quota"), _quota("receiver", 0.25), 96, ("cgroup",)),
    Injection("quota-sender", "sender alone in a cgroup with a CPU quota of 0.05 CPU",
              Expect("cpu-starved", "sender", "quota"), _quota("sender", 0.05), 24, ("cgroup",)),
    Injection("hog-sender", f"{HOGS} busy loops pinned to the sender's CPU (each side on a CPU of its own, the "
              f"other side at {PROTECT_WEIGHT}x CPU weight)",
              Expect("cpu-starved", "sender", "contention"), _hog("sender"), 128, ("cgroup",)),
    Injection("hog-receiver", f"{HOGS} busy loops pinned to the receiver's CPU (as above)",
              Expect("cpu-starved", "receiver", "contention"), _hog("receiver"), 128, ("cgroup",)),
    Injection("link-tbf", "both sides in a network namespace whose lo has tc tbf rate 400mbit",
              Expect("network-bound", "sender", "link-saturated", "send"), _link, 160, ("netns",)),
    Injection("disk-write", "destination on a loop-device ext4 mounted -o sync, blkio write limit 20 MiB/s",
              Expect("disk-bound", "receiver", None, "write"), _disk("write"), 64, ("loop", "cgroup")),
    Injection("disk-read", "source on a loop-device ext4, blkio read limit 20 MiB/s, read with --direct",
              Expect("disk-bound", "sender", None, "read"), _disk("read"), 64, ("loop", "cgroup")),
    Injection("pacing", "-l 8M (escp paces the whole transfer to 8 MB/s)",
              Expect("network-bound", "sender", "stream-limited", "send"), _plain, 24, args=("-l", "8M"),
              outside=False),
    Injection("zstd-19", "-C --compress-level 19 on text",
              Expect("cpu-bound", "sender", None, "compress"), _plain, 4, content="text",
              args=("-C", "--compress-level", "19"), outside=False),
    Injection("fault-write", "ESCP_FAULT write delay 30 ms per write (the fault hook: a slow disk from inside)",
              Expect("disk-bound", "receiver", None, "write"), _plain, 32, fault="write:delay:ms=30:times=inf",
              outside=False),
    Injection("fault-read", "ESCP_FAULT read delay 50 ms per read (the fault hook)",
              Expect("disk-bound", "sender", None, "read"), _plain, 16, fault="read:delay:ms=50:times=inf",
              outside=False),
    Injection("dummy-paced", "--ioengine dummy -l 8M (no disk on either side; paced streams)",
              Expect("network-bound", "sender", "stream-limited", "send"), _plain, 24,
              args=("--ioengine", "dummy", "-l", "8M"), verify=False, outside=False),
]


# -- one run -------------------------------------------------------------------------------


@dataclass
class RunResult:
    injection: str
    run: int
    ok: bool  # exit 0 and an exact copy
    correct: bool  # the verdict matches the expectation
    verdict: dict[str, Any] | None
    wall_s: float
    error: str | None = None
    stats: dict[str, Any] | None = None  # the run's --json "stats": everything its verdict was made from
    unset: bool = False  # the injection itself could not be set up (the error says why)


def source_file(base: Path, content: str, size_mib: int) -> Path:
    """A seeded file of size_mib MiB (random or text), made once and reused; written back and
    read once, so that no run pays for the disk (escp reads a cold file with O_DIRECT, and a
    slow first read would be a real, but not the injected, bottleneck)."""
    ds = ensure_dataset(base, f"verdict-{content}-{size_mib}m",
                        {"kind": "huge", "size": f"{size_mib}M", "content": content}, log=lambda _m: None)
    os.sync()
    with open(ds.source(), "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass
    return ds.source()


def escp_argv(p: Placement, ssh: Path, report: Path) -> list[str]:
    py = sys.executable
    remote = shlex.join([py, "-m", "harness.launch", *p.receiver, "--", py, "-m", "escp"])
    return [*p.prefix, py, "-m", "harness.launch", *p.sender, "--", py, "-m", "escp", "-q", "--stats",
            "--json", str(report), "-S", str(ssh), "-D", remote, "-t", str(STREAMS), "--blocksize", "1M", *p.args,
            str(p.src), f"localhost:{p.dest}"]


def run_once(inj: Injection, src: Path, work: Path, run: int) -> RunResult:
    """One transfer under the injection; the injection is set up and removed around it."""
    work.mkdir(parents=True, exist_ok=True)
    ssh = ssh_standin.write_script(work)
    report = work / "report.json"
    t0 = time.monotonic()
    try:
        with inj.setup(inj, src, work) as p:
            r = subprocess.run(escp_argv(p, ssh, report), env=escp_env() | p.env, cwd=REPO, capture_output=True,
                               text=True, timeout=RUN_TIMEOUT_S)
            wall = time.monotonic() - t0
            if r.returncode != 0:
                return RunResult(inj.name, run, False, False, None, wall, f"exit {r.returncode}: {r.stderr[-500:]}")
            if inj.verify and file_digest(p.dest) != file_digest(p.src):
                return RunResult(inj.name, run, False, False, None, wall, "the copy differs from the source")
    except inject.InjectionError as exc:
        return RunResult(inj.name, run, False, False, None, time.monotonic() - t0, f"injection not set up: {exc}",
                         unset=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return RunResult(inj.name, run, False, False, None, time.monotonic() - t0, f"{type(exc).__name__}: {exc}")
    stats = json.loads(report.read_text())["stats"]
    return RunResult(inj.name, run, True, inj.expect.matches(stats["verdict"]), stats["verdict"], wall, None, stats)


# -- the matrix ------------------------------------------------------------------------------


def run_matrix(injections: list[Injection], runs: int, scale: float, work: Path, datasets: Path,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    load_start = [round(x, 2) for x in os.getloadavg()]
    swept = inject.sweep_stale()
    if swept:
        log(f"removed leftovers of earlier runs: {', '.join(swept)}")
    rows = []
    for inj in injections:
        skip = inject.facility_missing(*inj.needs)
        if skip:
            log(f"{inj.name}: skipped ({skip})")
            rows.append({"injection": inj.name, "what": inj.what, "expect": inj.expect.text(), "outside": inj.outside,
                         "skipped": skip, "runs": []})
            continue
        size = max(1, round(inj.size_mib * scale))
        src = source_file(datasets, inj.content, size)
        done = []
        for i in range(runs):
            res = run_once(inj, src, work / f"{inj.name}-{i}", i)
            done.append(res)
            title = _title(res.verdict) if res.verdict else f"FAILED: {res.error}"
            log(f"{inj.name} run {i + 1}/{runs}: {title} [{'right' if res.correct else 'WRONG'}] {res.wall_s:.1f} s")
        rows.append({"injection": inj.name, "what": inj.what, "expect": inj.expect.text(), "outside": inj.outside,
                     "size_mib": size, "skipped": None, "runs": [asdict(r) for r in done]})
    return {"kind": "escp-verdict-matrix", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "streams": STREAMS,
            "runs_each": runs, "scale": scale, "git": results.git_info(), "loadavg_start": load_start,
            "machine": results.machine_info(), "rows": rows}


def _title(v: dict[str, Any]) -> str:
    kind = f"{v['kind']}, {v['cause']}" if v.get("cause") else v["kind"]
    return f"{kind} ({v['stage']}, {v['side']})"


def render_markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Verdict matrix",
        "",
        f"{doc['created']}; commit {(doc['git'].get('commit') or '?')[:12]}"
        f"{' (uncommitted changes)' if doc['git'].get('dirty') else ''}; {m.get('cpu_count')} CPUs, kernel "
        f"{m.get('kernel')}; load average {doc.get('loadavg_start')} at the start, {m.get('loadavg')} at the end "
        f"(a shared machine); `escp -t {doc['streams']} --blocksize 1M --stats`, {doc['runs_each']} runs per "
        "injection (`nox -s verdicts`, harness/verdicts.py).",
        "",
        "Each run sets up its injection, copies a seeded file through the ssh stand-in and checks the copy. "
        "A verdict is right when its class, side (and the cause or stage named) match.",
        "",
        "| injection | how | from | expected | right | verdicts | MiB | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in doc["rows"]:
        origin = "outside" if row["outside"] else "inside"
        if row["skipped"]:
            lines.append(f"| {row['injection']} | {row['what']} | {origin} | {row['expect']} | skipped: "
                         f"{row['skipped']} | | | |")
            continue
        runs = row["runs"]
        seen: dict[str, int] = {}
        for r in runs:
            key = _title(r["verdict"]) if r["verdict"] else f"failed ({(r['error'] or '')[:80]})"
            seen[key] = seen.get(key, 0) + 1
        right = sum(r["correct"] for r in runs)
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in runs)
        verdicts = "; ".join(f"{k} x{n}" for k, n in seen.items())
        lines.append(f"| {row['injection']} | {row['what']} | {origin} | {row['expect']} | "
                     f"{right}/{len(runs)} | {verdicts} | {row['size_mib']} | {walls} |")
    lines += ["", "## Evidence of the first run of each injection", ""]
    for row in doc["rows"]:
        first = row["runs"][0] if row["runs"] else None
        if first and first["verdict"]:
            v = first["verdict"]
            lines += [f"**{row['injection']}**: {_title(v)}: {v['evidence']}", ""]
            if v.get("unseen"):
                lines += [f"not seen: {'; '.join(v['unseen'])}", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness verdicts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per injection (default 3)")
    ap.add_argument("--only", action="append", default=[], metavar="GLOB", help="injections to run (repeatable)")
    ap.add_argument("--scale", type=float, default=1.0, help="file sizes x this (default 1)")
    ap.add_argument("--out", type=Path, help="result directory (default reports/verdicts-<run-id>)")
    ap.add_argument("--example", action="store_true", help="write the results to reports/example")
    ap.add_argument("--datasets", type=Path, default=REPO / "datasets")
    ap.add_argument("--render", type=Path, metavar="DIR", help="only write DIR/verdicts.md again from DIR/verdicts.json")
    args = ap.parse_args(argv)
    if args.render:
        (args.render / "verdicts.md").write_text(render_markdown(json.loads((args.render / "verdicts.json").read_text())))
        return 0
    chosen = [i for i in INJECTIONS if not args.only or any(fnmatch.fnmatch(i.name, g) for g in args.only)]
    if not chosen:
        ap.error(f"no injection matches {args.only}; known: {', '.join(i.name for i in INJECTIONS)}")
    out = REPO / "reports" / "example" if args.example else args.out or \
        REPO / "reports" / f"verdicts-{results.new_run_id()}"
    with tempfile.TemporaryDirectory(prefix="escp-verdicts-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK)
                                     else None) as tmp:
        doc = run_matrix(chosen, args.runs, args.scale, Path(tmp), args.datasets)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdicts.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")  # compact: every run's stats
    (out / "verdicts.md").write_text(render_markdown(doc))
    print(f"verdict matrix: {out / 'verdicts.md'}")
    scored = [r for row in doc["rows"] for r in row["runs"]]
    return 0 if scored and all(r["correct"] for r in scored) else 1


__all__ = ["Injection", "Expect", "Placement", "INJECTIONS", "RunResult", "run_once", "run_matrix",
           "render_markdown", "source_file"]
