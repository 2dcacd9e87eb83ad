"""N concurrent sessions to one host (issue 16): `python -m harness concurrency`
(`nox -s concurrency`).

For each N of --sessions (default 8, 32, 64), in --repeats rounds: N escp pushes started at
once through the private sshd (harness/sshd.py) to one host, each sending its own name (a
hard link) of one seeded random file (--size, default 5 MiB, `-t 2`) into its own
destination, every receiver on escp's default port range 1232-1241 (`--port-range` makes
it narrower, to see sessions queue for a port) of one loopback address of the run's own
(`--bind`: nothing else on this shared machine uses those ports); and, in the same round,
ONE session moving the same bytes (the N names as one directory, `-r`). The two take turns
(the order alternates from round to round). Every copy is checked against the source's
digest.

Reported per N: how many sessions completed and were exact (the goal: all), the completion
times (spawn to exit of each session: min, median, p90, max), how many sessions waited for a
port (their `-v` lines, protocol.md §2.11) and the longest wait one reported, the makespan
(first spawn to last exit), the total throughput N x size / makespan, and the one session's
throughput on the same bytes, with their ratio per round. Results: DIR/concurrency.json
and DIR/concurrency.md (default reports/concurrency-<run-id>).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import results
from harness.datasets import ensure_dataset, file_digest, parse_size
from harness.peers import REPO, escp_env
from harness.sshd import PrivateSshd, unavailable_reason
from harness.stats import median, quantile

DEFAULT_SESSIONS = (8, 32, 64)
PORT_START, PORT_RANGE = 1232, 10  # escp's defaults
STREAMS = 2
SESSION_TIMEOUT_S = 600
WAIT_LINE = re.compile(r"is busy; waiting for one \((\d+) s so far")
MiB = 1 << 20


@dataclass
class SessionRun:
    start: float  # perf_counter at spawn
    end: float  # ... at exit
    exit_code: int
    exact: bool
    port_waits: int  # SetupProgress lines on its -v stderr
    waited_s: int  # the longest wait it reported (0: none)
    tail: str = ""  # end of its output, when it failed

    @property
    def seconds(self) -> float:
        return self.end - self.start


def private_address() -> str:
    """A loopback address other than 127.0.0.1/127.0.0.2: the run's receivers listen there."""
    return f"127.{random.randrange(100, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"


class Runner:
    """Starts escp sessions (over the private sshd, or --local without one) and checks them."""

    def __init__(self, sshd: PrivateSshd | None, bind: str, block: str, work: Path, timeout: str | None,
                 port_range: int) -> None:
        self.sshd = sshd
        self.port_range = port_range
        self.bind = bind
        self.block = block
        self.work = work
        self.timeout = timeout  # escp --timeout, or None: escp's default

    def argv(self, src: Path, dest: Path, recursive: bool) -> list[str]:
        argv = [sys.executable, "-m", "escp", "-v", "-t", str(STREAMS), "--blocksize", self.block,
                "--escp_port", str(PORT_START), "--escp_portrange", str(self.port_range), "--bind", self.bind]
        argv += ["-r"] if recursive else []
        argv += ["--timeout", self.timeout] if self.timeout else []
        if self.sshd is None:
            return [*argv, "--local", str(src), str(dest)]
        return [*argv, "-F", str(self.sshd.client_config), "-D", str(self.sshd.remote_escp), str(src),
                f"{self.sshd.host}:{dest}/"]

    def run(self, jobs: list[tuple[Path, Path, bool]], expect: str) -> list[SessionRun]:
        """Start every (src, dest, recursive) job at once; wait for all; check each copy of
        the source named in it against the digest `expect`."""
        procs = []
        for i, (src, dest, recursive) in enumerate(jobs):
            dest.mkdir(parents=True)
            log = open(self.work / f"session-{i}.log", "wb")  # noqa: SIM115 - closed after the wait
            start = time.perf_counter()
            procs.append((subprocess.Popen(self.argv(src, dest, recursive), stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, cwd=REPO, env=escp_env(),
                                           start_new_session=True), start, log))
        ends: dict[int, float] = {}

        def reap(i: int, p: subprocess.Popen[bytes]) -> None:
            try:
                p.wait(SESSION_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            ends[i] = time.perf_counter()

        waiters = [threading.Thread(target=reap, args=(i, p), daemon=True) for i, (p, _, _) in enumerate(procs)]
        for w in waiters:
            w.start()
        for w in waiters:
            w.join()
        out = []
        for i, ((p, start, log), (src, dest, _)) in enumerate(zip(procs, jobs, strict=True)):
            log.close()
            text = (self.work / f"session-{i}.log").read_text(errors="replace")
            waits = [int(m.group(1)) for m in WAIT_LINE.finditer(text)]
            names = sorted(os.listdir(src)) if src.is_dir() else [src.name]
            where = dest / src.name if src.is_dir() else dest
            exact = p.returncode == 0 and all(file_digest(where / n) == expect for n in names)
            out.append(SessionRun(start, ends[i], p.returncode, exact, len(waits), max(waits, default=0),
                                  "" if exact else text[-1500:]))
            shutil.rmtree(dest, ignore_errors=True)
        return out


def concurrent_round(runner: Runner, names: Path, n: int, dest: Path, expect: str) -> dict[str, Any]:
    runs = runner.run([(names / f"f{i:03d}", dest / f"s{i:03d}", False) for i in range(n)], expect)
    makespan = max(r.end for r in runs) - min(r.start for r in runs)
    secs = [r.seconds for r in runs]
    return {
        "sessions": n,
        "exact": sum(r.exact for r in runs),
        "completion_s": {"min": min(secs), "median": median(secs), "p90": quantile(secs, 0.9), "max": max(secs)},
        "launch_spread_s": max(r.start for r in runs) - min(r.start for r in runs),
        "port_waiters": sum(r.port_waits > 0 for r in runs),
        "longest_reported_wait_s": max(r.waited_s for r in runs),
        "makespan_s": makespan,
        "failures": [asdict(r) for r in runs if not r.exact],
        "sessions_detail": [{"seconds": round(r.seconds, 3), "exit_code": r.exit_code, "port_waits": r.port_waits}
                            for r in runs],
    }


def single_round(runner: Runner, names: Path, dest: Path, expect: str) -> dict[str, Any]:
    (run,) = runner.run([(names, dest / "one", True)], expect)
    return {"seconds": run.seconds, "exact": run.exact, "failure": None if run.exact else asdict(run)}


def measure(runner: Runner, source: Path, sessions: list[int], repeats: int, size: int) -> list[dict[str, Any]]:
    rows = []
    for n in sessions:
        names = runner.work / f"names-{n}"
        names.mkdir()
        for i in range(n):
            os.link(source, names / f"f{i:03d}")  # N names, one file: the same bytes for both forms
        expect = file_digest(source)
        rounds = []
        for r in range(repeats):
            order = ["single", "concurrent"] if r % 2 == 0 else ["concurrent", "single"]
            rnd: dict[str, Any] = {"order": order, "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
            for form in order:
                print(f"  N={n} round {r + 1}/{repeats}: {form} ...", flush=True)
                dest = runner.work / f"dest-{n}-{r}-{form}"
                rnd[form] = single_round(runner, names, dest, expect) if form == "single" else \
                    concurrent_round(runner, names, n, dest, expect)
            total = n * size
            rnd["concurrent_MiB_s"] = total / MiB / rnd["concurrent"]["makespan_s"]
            rnd["single_MiB_s"] = total / MiB / rnd["single"]["seconds"]
            rnd["ratio"] = rnd["concurrent_MiB_s"] / rnd["single_MiB_s"]
            rounds.append(rnd)
        shutil.rmtree(names)
        rows.append({"sessions": n, "bytes": n * size, "rounds": rounds,
                     "ratio_median": median([r["ratio"] for r in rounds]),
                     "all_exact": all(r["concurrent"]["exact"] == n and r["single"]["exact"] for r in rounds)})
    return rows


def render_markdown(doc: dict[str, Any]) -> str:
    cfg = doc["config"]
    lines = [
        "# N concurrent sessions to one host",
        "",
        f"Run {doc['run_id']} at {doc['git'].get('commit') or '?'}; route **{cfg['route']}**; each session "
        f"{cfg['size'] / MiB:g} MiB, `-t {STREAMS}`, block {cfg['block']}, "
        f"`--timeout` {cfg.get('escp_timeout') or 'default (60)'}; receivers on ports {cfg['ports'][0]}-"
        f"{cfg['ports'][1]} of {cfg['bind']}; sshd MaxStartups {cfg['max_startups']}; machine "
        f"{doc['machine']['cpu_count']} CPUs, load average at the start {doc['machine']['loadavg']} "
        "(other work on the machine skews every figure; same-round ratios are the fairer figure).",
        "",
        "Completion time: spawn to exit of each session. Total throughput: N x size / makespan (first spawn "
        "to last exit). One session: the same N files in one `-r` session. Ratio: total / one session, per round.",
        "",
        "| N | round | exact | completion s min / median / p90 / max | waited for a port (longest) "
        "| makespan s | total MiB/s | one session MiB/s | ratio |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in doc["rows"]:
        for k, r in enumerate(row["rounds"]):
            c = r["concurrent"]
            t = c["completion_s"]
            lines.append(
                f"| {row['sessions']} | {k + 1} ({r['order'][0]} first) | {c['exact']}/{row['sessions']}"
                f"{'' if r['single']['exact'] else ' (one session: FAILED)'} | {t['min']:.1f} / {t['median']:.1f} / "
                f"{t['p90']:.1f} / {t['max']:.1f} | {c['port_waiters']} ({c['longest_reported_wait_s']} s) | "
                f"{c['makespan_s']:.1f} | {r['concurrent_MiB_s']:.1f} | {r['single_MiB_s']:.1f} | {r['ratio']:.2f} |")
    lines += ["", "Median ratio per N: " + ", ".join(f"N={row['sessions']}: {row['ratio_median']:.2f}"
                                                      for row in doc["rows"]) + ".", ""]
    failed = [(row["sessions"], f) for row in doc["rows"] for r in row["rounds"] for f in r["concurrent"]["failures"]]
    if failed:
        lines += ["## Failed sessions", ""]
        lines += [f"- N={n}: exit {f['exit_code']}: `{f['tail'].strip().splitlines()[-1] if f['tail'].strip() else ''}`"
                  for n, f in failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness concurrency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", default=",".join(map(str, DEFAULT_SESSIONS)),
                    help="comma-separated session counts (default 8,32,64)")
    ap.add_argument("--size", default="5M", help="bytes per session (default 5M)")
    ap.add_argument("--block", default="1M", help="escp --blocksize (default 1M)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds per N (default 2; the order alternates)")
    ap.add_argument("--port-range", type=int, default=PORT_RANGE,
                    help=f"escp --escp_portrange from {PORT_START} (default {PORT_RANGE}, escp's own)")
    ap.add_argument("--timeout", help="escp --timeout (the set-up, port wait and idle deadline; default: escp's)")
    ap.add_argument("--local", action="store_true", help="run escp --local, without the private sshd")
    ap.add_argument("--max-startups", default=PrivateSshd.MAX_STARTUPS,
                    help=f"the private sshd's MaxStartups (default {PrivateSshd.MAX_STARTUPS}; sshd's own: 10:30:100)")
    ap.add_argument("--out", type=Path, help="result directory (default reports/concurrency-<run-id>)")
    args = ap.parse_args(argv)
    sessions = [int(x) for x in args.sessions.split(",") if x.strip()]
    size = parse_size(args.size)
    run_id = results.new_run_id()
    out = args.out or REPO / "reports" / f"concurrency-{run_id}"
    bind = private_address()
    reason = "--local" if args.local else unavailable_reason()
    sshd = None if reason else PrivateSshd(args.max_startups).start()
    scratch = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    try:
        with tempfile.TemporaryDirectory(prefix="escp-concurrency-", dir=scratch) as tmp:
            work = Path(tmp)
            ds = ensure_dataset(work / "datasets", "session", {"kind": "huge", "size": size, "content": "random"})
            runner = Runner(sshd, bind, args.block, work, args.timeout, args.port_range)
            doc: dict[str, Any] = {
                "schema": 1, "kind": "concurrency", "run_id": run_id, "git": results.git_info(),
                "machine": results.machine_info(),
                "config": {"sessions": sessions, "size": size, "block": args.block, "repeats": args.repeats,
                           "route": "ssh" if sshd else f"local ({reason})", "bind": bind,
                           "escp_timeout": args.timeout,
                           "ports": [PORT_START, PORT_START + args.port_range - 1], "max_startups": args.max_startups,
                           "scratch": scratch or tempfile.gettempdir()},
                "rows": measure(runner, ds.source(), sessions, args.repeats, size),
            }
    finally:
        if sshd is not None:
            sshd.stop()
    results.write_json(out / "concurrency.json", doc)
    (out / "concurrency.md").write_text(render_markdown(doc))
    print(render_markdown(doc))
    print(f"concurrency: {out / 'concurrency.md'}")
    return 0 if all(row["all_exact"] for row in doc["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
