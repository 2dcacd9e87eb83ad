"""Regression check: compare a run with reports/baseline/*.json.

Absolute times drift with the machine, so the compared quantity is a ratio measured inside one
run: escp time / peer time per round (the scenario's ratio_peer: cp, rsync-ssh, or escp-dummy).
A scenario regresses only when BOTH hold:
  - the median ratio grew by more than a factor (default 1.10), and
  - a one-sided Mann-Whitney U test over the per-round ratios says new > baseline (p < alpha).
Exit status 1 when any scenario regressed. `--update-baseline` stores the run's records, trimmed
to what this check needs, as the new baseline.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import results
from harness.stats import mann_whitney_greater, median

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = REPO / "reports" / "baseline"


@dataclass(frozen=True)
class Comparison:
    base_median: float
    new_median: float
    change: float  # new / base (>1: escp got slower relative to the peer)
    p_value: float
    regressed: bool
    improved: bool


def compare(
    base: list[float], new: list[float], *, threshold: float = 1.10, alpha: float = 0.05
) -> Comparison:
    """Compare two samples of 'escp time / peer time' (lower is better)."""
    if not base or not new:
        raise ValueError("empty sample")
    b, n = median(base), median(new)
    change = n / b if b > 0 else float("inf")
    _, p_slower = mann_whitney_greater(new, base)
    _, p_faster = mann_whitney_greater(base, new)
    return Comparison(
        base_median=b,
        new_median=n,
        change=change,
        p_value=p_slower,
        regressed=change > threshold and p_slower < alpha,
        improved=change < 1 / threshold and p_faster < alpha,
    )


def ratio_samples(record: dict[str, Any], peer: str | None = None) -> tuple[str, list[float]] | None:
    """(peer, per-round escp/peer time ratios) of a scenario record, or None."""
    peer = peer or record["scenario"].get("ratio_peer")
    ratios = record.get("ratios", {})
    if peer not in ratios:
        return None
    return peer, list(ratios[peer].get("time_ratio_per_round", []))


def trim(record: dict[str, Any]) -> dict[str, Any]:
    """A small copy of a scenario record for the baseline (no argv, logs, stats, traces)."""
    out = {k: record[k] for k in results.REQUIRED if k in record}
    out["ratios"] = record.get("ratios", {})
    out["tools"] = {
        name: {
            "status": t.get("status"),
            "reason": t.get("reason"),
            "repeats": [
                {
                    k: r.get(k)
                    for k in ("round", "wall_s", "exit_code", "verified", "user_s", "sys_s", "max_rss_bytes")
                }
                for r in t.get("repeats", [])
            ],
        }
        for name, t in record.get("tools", {}).items()
    }
    return out


def run_compare(
    run_dir: Path, baseline: Path, *, threshold: float, alpha: float, peer: str | None = None
) -> tuple[list[list[str]], bool]:
    _, new_records = results.load_run(run_dir)
    base_records = {r["scenario"]["name"]: r for r in results.load_records(baseline)}
    rows: list[list[str]] = []
    any_regressed = False
    for rec in new_records:
        name = rec["scenario"]["name"]
        base = base_records.get(name)
        if base is None:
            rows.append([name, "-", "-", "-", "-", "-", "no baseline"])
            continue
        if base.get("scenario_hash") != rec.get("scenario_hash"):
            rows.append([name, "-", "-", "-", "-", "-", "scenario changed since baseline (hash differs)"])
            continue
        got_new, got_base = ratio_samples(rec, peer), ratio_samples(base, peer)
        if not got_new or not got_base or not got_new[1] or not got_base[1]:
            rows.append([name, peer or "-", "-", "-", "-", "-", "no ratio samples (failed or skipped run)"])
            continue
        c = compare(got_base[1], got_new[1], threshold=threshold, alpha=alpha)
        verdict = "REGRESSION" if c.regressed else "improved" if c.improved else "ok"
        any_regressed |= c.regressed
        rows.append(
            [
                name,
                got_new[0],
                f"{c.base_median:.3f}",
                f"{c.new_median:.3f}",
                f"{c.change:.3f}",
                f"{c.p_value:.4f}",
                verdict,
            ]
        )
    return rows, any_regressed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness regress", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?", type=Path, help="reports/<run-id> (default: the latest run)")
    ap.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    ap.add_argument(
        "--threshold", type=float, default=1.10, help="ratio change factor to flag (default 1.10)"
    )
    ap.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    ap.add_argument("--peer", help="compare against this peer instead of each scenario's ratio_peer")
    ap.add_argument("--update-baseline", action="store_true", help="store this run as the baseline")
    ap.add_argument("--reports", type=Path, default=REPO / "reports")
    args = ap.parse_args(argv)
    run_dir = args.run_dir or results.latest_run(args.reports)
    if run_dir is None:
        print("no run to compare (run `nox -s bench` first)", file=sys.stderr)
        return 2
    if args.update_baseline:
        _, records = results.load_run(run_dir)
        args.baseline.mkdir(parents=True, exist_ok=True)
        for rec in records:
            results.write_json(results.scenario_path(args.baseline, rec["scenario"]["name"]), trim(rec))
        print(f"baseline {args.baseline} updated from {run_dir} ({len(records)} scenarios)")
        return 0
    if not args.baseline.exists() or not results.load_records(args.baseline):
        print(f"no baseline in {args.baseline}; create one with --update-baseline {run_dir}")
        return 0
    rows, regressed = run_compare(
        run_dir, args.baseline, threshold=args.threshold, alpha=args.alpha, peer=args.peer
    )
    header = ["scenario", "peer", "base ratio", "new ratio", "change", "p (new slower)", "verdict"]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    print(
        f"run {run_dir.name} vs baseline {args.baseline}: {'REGRESSION' if regressed else 'no regression'} "
        f"(threshold x{args.threshold}, alpha {args.alpha})"
    )
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
