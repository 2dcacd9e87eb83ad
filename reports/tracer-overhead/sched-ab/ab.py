"""A/B of the tracer's cost before and after the CPU split (schedstat readings), same run.

Alternates, round by round, three commands on one file (destination on tmpfs):
  plain   escp from TREE_NEW, untraced
  old     escp --stats --trace from TREE_OLD (the tracer without the CPU split)
  new     escp --stats --trace from TREE_NEW
and records each run's data-phase seconds (the --json report's "seconds"), wall time, and
CPU time (user + system of both processes, from RUSAGE_CHILDREN: less disturbed by other
load than the clocks, on a shared machine).
Usage: python3 ab.py TREE_OLD TREE_NEW SRC ROUNDS OUT.json
"""

import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

old_tree, new_tree, src, rounds, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
scratch = Path("/dev/shm/escp-sched-ab")
variants = {"plain": (new_tree, []), "old": (old_tree, ["--stats", "--trace"]), "new": (new_tree, ["--stats", "--trace"])}
runs: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
for rnd in range(-1, rounds):  # round -1: warm-up, not kept
    order = list(variants)
    random.Random(rnd).shuffle(order)
    for name in order:
        tree, extra = variants[name]
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        if extra:
            extra = [*extra, str(scratch / "trace.json")]
        env = dict(os.environ, PYTHONPATH=tree)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "escp", "--local", "-q", "-t", "4", "--blocksize", "1M",
                            "--json", str(scratch / "r.json"), *extra, src, str(scratch / "dst")],
                           env=env, capture_output=True, text=True, cwd=tree)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        assert r.returncode == 0, r.stderr
        seconds = json.loads((scratch / "r.json").read_text())["seconds"]
        if rnd >= 0:
            runs[name].append({"seconds": seconds, "wall_s": wall, "cpu_s": cpu, "round": rnd})
        print(rnd, name, f"{seconds:.2f} s data, {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
shutil.rmtree(scratch, ignore_errors=True)


def ratios(a: str, b: str, key: str) -> list[float]:
    return [x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True)]


summary = {}
for a, b in (("new", "old"), ("new", "plain"), ("old", "plain")):
    for key in ("seconds", "wall_s", "cpu_s"):
        rs = sorted(ratios(a, b, key))
        q = statistics.quantiles(rs, n=4) if len(rs) >= 4 else [rs[0], statistics.median(rs), rs[-1]]
        summary[f"{a}/{b} {key}"] = {"median": statistics.median(rs), "q1": q[0], "q3": q[2], "min": rs[0],
                                     "max": rs[-1], "n": len(rs)}
out.write_text(json.dumps({"src": src, "rounds": rounds, "loadavg_end": os.getloadavg(), "runs": runs,
                           "summary": summary}, indent=1))
for k, v in summary.items():
    print(f"{k}: median {v['median']:.3f} (middle half {v['q1']:.3f}..{v['q3']:.3f}, range {v['min']:.3f}..{v['max']:.3f})")
