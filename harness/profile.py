"""py-spy profiles of escp runs: `profile_run(cmd, outdir)` records a command twice under
`py-spy record --subprocesses` (speedscope JSON for viewing, raw collapsed stacks for analysis),
then hands the raw stacks to harness.pyspy for per-stage attribution.
`nox -s profile` / `python -m harness profile` profiles escp copying one dataset.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import datasets, peers, pyspy, results, runner, scenarios

REPO = Path(__file__).resolve().parent.parent


def _record(
    cmd: list[str], out: Path, fmt: str, rate: int, env: dict[str, str] | None, cwd: Path | None
) -> int:
    argv = [
        "py-spy",
        "record",
        "--subprocesses",
        "--rate",
        str(rate),
        "--format",
        fmt,
        "-o",
        str(out),
        "--",
        *cmd,
    ]
    with open(out.with_suffix(out.suffix + ".log"), "wb") as log:
        return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode


def profile_run(
    cmd: list[str] | Callable[[int], list[str]],
    outdir: Path,
    *,
    rate: int = 100,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Profile `cmd` with py-spy into `outdir`; returns paths and exit codes.

    The command runs twice (py-spy writes one format per run): profile.speedscope.json and
    profile.raw.txt. `cmd` may be a function of the run index (0, 1) so that each run copies
    to a fresh destination.
    """
    if shutil.which("py-spy") is None:
        raise RuntimeError("py-spy not found on PATH")
    outdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for i, (fmt, name) in enumerate((("speedscope", "profile.speedscope.json"), ("raw", "profile.raw.txt"))):
        argv = cmd(i) if callable(cmd) else cmd
        out.setdefault("cmd", argv)
        path = outdir / name
        t0 = time.perf_counter()
        out[f"{fmt}_exit"] = _record(argv, path, fmt, rate, env, cwd)
        out[f"{fmt}_s"] = round(time.perf_counter() - t0, 3)
        out[fmt] = str(path) if path.exists() else None
    out["attribution"] = _attribute(Path(out["raw"]) if out.get("raw") else None, outdir)
    return out


def _attribute(raw: Path | None, outdir: Path) -> Any:
    """Per-stage shares of the py-spy samples via harness.pyspy.attribute_samples."""
    if raw is None:
        return None
    try:
        shares = pyspy.attribute_samples([raw])
    except Exception as e:  # the helper must never lose the recorded profiles
        return f"attribution failed: {e!r}"
    doc = {
        "samples": shares.total,
        "shares": shares.shares(),
        "by_root": {root: dict(c) for root, c in shares.by_root.items()},
        "bad_lines": shares.bad_lines,
    }
    results.write_json(outdir / "stages.json", doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness profile", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--dataset", default="huge-random")
    ap.add_argument("--scenario", help="take escp options from this scenario (default: first on the dataset)")
    ap.add_argument("--escp-cmd", help="escp argv prefix (default: python -m escp --local -q)")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--datasets", type=Path, default=REPO / "datasets")
    ap.add_argument("--out", type=Path, default=REPO / "profiles")
    args = ap.parse_args(argv)
    prof = scenarios.load(profile=args.profile)
    ds = datasets.ensure_dataset(args.datasets, args.dataset, prof.datasets[args.dataset])
    cands = [
        s for s in prof.scenarios if (s.name == args.scenario if args.scenario else s.dataset == args.dataset)
    ]
    opts = cands[0].escp if cands else scenarios.EscpOptions()
    escp = peers.EscpCommand.from_string(args.escp_cmd)
    run_id = results.new_run_id()
    outdir = args.out / run_id
    scratch = args.datasets / "_scratch" / f"profile-{run_id}"

    def cmd(i: int) -> list[str]:
        dest = scratch / f"r{i}" / "out"
        dest.parent.mkdir(parents=True, exist_ok=True)
        return peers.build("escp", ds.source(), dest, escp=escp, opts=opts, sshd=None).argv

    info = profile_run(cmd, outdir, rate=args.rate, env=peers.escp_env(), cwd=REPO)
    results.write_json(outdir / "profile.json", {"dataset": ds.name, "options": opts.__dict__, **info})
    runner.delete_in_background(scratch)
    print(f"profiles: {outdir} (open profile.speedscope.json in https://www.speedscope.app)")
    print(f"attribution: {info.get('attribution')}")
    return 0 if info.get("speedscope_exit") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
