"""Flake hunt: run test groups (by default the fault and hostile groups, tests/faults and
tests/hostile) again and again, first on the machine as it is ("quiet": nothing of ours
runs beside them, but whatever else the machine runs does; the load average is printed),
then under a bounded background CPU load that this tool starts and always stops, and
print how often each test failed in each phase.

    python3 -m tests.flakes [--reps N] [--loaded-reps N] [--load K] [-k EXPR] [PATH...]

`nox -s flakes -- ...` runs it. The load is K processes spinning on the CPU, each ending by
itself after --load-limit seconds even if this tool is killed, and killed by it when the
loaded phase ends, whether it passed, failed or was interrupted. Exit code 1 when any
repetition had a failure. Each repetition is one `pytest -n WORKERS` run with a JUnit XML
report (read for the per-test outcome) and a time limit.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GROUPS = ("tests/faults", "tests/hostile")
SPIN = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"
WHOLE_RUN = "<the whole run>"  # a repetition that ended without a report (time limit, crash)


@dataclass
class Repetition:
    phase: str
    index: int
    seconds: float
    exit_code: int
    load_at_start: float
    passed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def tests(self) -> int:
        return self.passed + self.skipped + sum(1 for f in self.failed if not f.startswith(WHOLE_RUN))


def node_id(case: ET.Element) -> str:
    """pytest's node id from a JUnit <testcase> (module path :: name)."""
    module, _, cls = case.get("classname", "").partition(".test_")
    path = module.replace(".", "/") + "/test_" + cls.split(".")[0] + ".py" if cls else module
    inner = cls.split(".")[1:] if cls else []
    return "::".join([path, *inner, case.get("name", "?")])


def read_report(xml: Path, rep: Repetition) -> None:
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcomes = {child.tag for child in case}
        if outcomes & {"failure", "error"}:
            rep.failed.append(node_id(case))
        elif "skipped" in outcomes:
            rep.skipped += 1
        else:
            rep.passed += 1


def run_once(phase: str, index: int, args: argparse.Namespace, workdir: Path) -> Repetition:
    xml = workdir / f"{phase}-{index}.xml"
    argv = [sys.executable, "-m", "pytest", "-n", str(args.workers), "-q", "-p", "no:cacheprovider",
            f"--junitxml={xml}", *(["-k", args.k] if args.k else []), *args.paths]
    log = (workdir / f"{phase}-{index}.log").open("wb")
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        code = -1
    finally:
        if proc.poll() is None:  # time limit or interrupted: the whole pytest session goes
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    rep = Repetition(phase, index, time.monotonic() - t0, code, load)
    if xml.exists():
        read_report(xml, rep)
    if code not in (0, 1) or not xml.exists():  # 1 = some tests failed (they are listed)
        rep.failed.append(f"{WHOLE_RUN} (exit {code}; log {xml.with_suffix('.log')})")
    mark = "ok" if not rep.failed else f"{len(rep.failed)} FAILED: " + ", ".join(rep.failed)
    print(f"[{phase} {index}/{args.reps if phase == 'quiet' else args.loaded_reps}] {rep.seconds:.0f} s, "
          f"load {load:.2f} at start, {rep.passed} passed, {rep.skipped} skipped, {mark}", flush=True)
    return rep


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_load(count: int, limit: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` processes spinning on the CPU for at most `limit` seconds; killed on exit."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(limit=limit)], start_new_session=True)
                for _ in range(count)]
    t0 = time.monotonic()
    try:
        yield spinners
    finally:
        used = sum(cpu_seconds(p.pid) for p in spinners)
        for p in spinners:
            if p.poll() is None:
                p.kill()
            p.wait()
        print(f"load: {count} spinning processes used {used:.0f} CPU-seconds in {time.monotonic() - t0:.0f} s; "
              f"all stopped", flush=True)


def summary(reps: list[Repetition]) -> str:
    lines = ["", "flake hunt summary", "phase   reps  failed reps  tests/rep  minutes/rep median (range)  "
             "load avg at start (range)"]
    for phase in ("quiet", "loaded"):
        rs = [r for r in reps if r.phase == phase]
        if not rs:
            continue
        mins = [r.seconds / 60 for r in rs]
        loads = [r.load_at_start for r in rs]
        tests = {r.tests for r in rs}
        lines.append(f"{phase:<7} {len(rs):>4}  {sum(1 for r in rs if r.failed):>11}  "
                     f"{'/'.join(map(str, sorted(tests))):>9}  {statistics.median(mins):>5.1f} "
                     f"({min(mins):.1f}-{max(mins):.1f}){'':>13}{min(loads):.2f}-{max(loads):.2f}")
    per_test: dict[str, Counter[str]] = {}
    for r in reps:
        for name in r.failed:
            per_test.setdefault(name, Counter())[r.phase] += 1
    lines.append("failures per test:" + ("" if per_test else " none"))
    for name, counts in sorted(per_test.items()):
        lines.append(f"  {name}: " + ", ".join(f"{phase} {n}/{sum(1 for r in reps if r.phase == phase)}"
                                               for phase, n in sorted(counts.items())))
    return "\n".join(lines)


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM (nox or CI stopping us) unwinds like Ctrl-C, so the load is always stopped."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tests.flakes", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=list(GROUPS), help="test paths (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions on the quiet machine (default 3)")
    ap.add_argument("--loaded-reps", type=int, default=None, help="repetitions under load (default: --reps)")
    ap.add_argument("--load", type=int, default=2, help="spinning processes in the loaded phase (default 2)")
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default 2)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="time limit of one repetition, s (default 1200)")
    ap.add_argument("-k", default="", help="pytest -k expression, to hunt in a few tests")
    args = ap.parse_args(argv)
    if args.loaded_reps is None:
        args.loaded_reps = args.reps
    if min(args.reps, args.loaded_reps, args.load) < 0 or args.workers < 1:
        ap.error("counts must not be negative, and --workers at least 1")
    signal.signal(signal.SIGTERM, interrupted)
    print(f"flake hunt: {' '.join(args.paths)}; pytest -n {args.workers}; {args.reps} quiet and "
          f"{args.loaded_reps} loaded repetitions ({args.load} spinning processes); {os.cpu_count()} CPUs", flush=True)
    reps: list[Repetition] = []
    with tempfile.TemporaryDirectory(prefix="escp-flakes-") as tmp:
        work = Path(tmp)
        try:
            for i in range(1, args.reps + 1):
                reps.append(run_once("quiet", i, args, work))
            if args.loaded_reps:
                with cpu_load(args.load, limit=args.loaded_reps * args.timeout + 60):
                    for i in range(1, args.loaded_reps + 1):
                        reps.append(run_once("loaded", i, args, work))
        finally:
            print(summary(reps), flush=True)
            failed_logs = [f"{r.phase}-{r.index}" for r in reps if r.failed]
            for name in failed_logs:  # keep the logs of failed repetitions: the temp dir goes
                kept = REPO / ".flakes" / f"{name}.log"
                kept.parent.mkdir(exist_ok=True)
                kept.write_bytes((work / f"{name}.log").read_bytes())
            if failed_logs:
                print(f"logs of the failed repetitions: {REPO / '.flakes'}/", flush=True)
    return 1 if any(r.failed for r in reps) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the summary so far is printed and the load stopped already
        sys.exit(130)
