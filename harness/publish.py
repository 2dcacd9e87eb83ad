"""Publish a run as a committed report (reports/example): its report.md, index.html, plots and
run.json, and its scenario records slimmed for git (no command lines, no logs, escp's --json
reports cut to their times; the instrumented run keeps its stats, verdict and TCP_INFO rows).
The artifacts (traces, py-spy samples) stay behind.

    python -m harness bench --publish reports/example     # run the quick profile, then publish
    python -m harness publish [RUN_DIR] [DEST]            # publish a finished run (default: latest)
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path
from typing import Any

from harness import results

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO / "reports" / "example"
KEPT_FILES = ("report.md", "index.html", results.RUN_FILE)
ESCP_JSON_KEPT = ("ok", "exit_code", "bytes", "files", "seconds")


def slim(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a scenario record without what only a debugging session needs."""
    rec = copy.deepcopy(record)
    for tool in rec.get("tools", {}).values():
        for rep in tool.get("repeats", []) + tool.get("warmup", []):
            rep.pop("argv", None)
            rep.pop("tool_json", None)
            doc = rep.pop("escp_json", None)
            if isinstance(doc, dict):
                rep["escp_json"] = {k: doc[k] for k in ESCP_JSON_KEPT if k in doc}
    inst = rec.get("instrumented")
    if isinstance(inst, dict):
        inst.pop("argv", None)
        doc = inst.get("escp_json")
        if isinstance(doc, dict):
            inst["escp_json"] = {k: doc[k] for k in (*ESCP_JSON_KEPT, "stats") if k in doc}
    return rec


def publish(run_dir: Path, dest: Path) -> Path:
    """Replace dest with the published form of run_dir; returns dest."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in KEPT_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, dest / name)
    if (run_dir / "plots").is_dir():
        shutil.copytree(run_dir / "plots", dest / "plots")
    for rec in results.load_records(run_dir):
        results.write_json(results.scenario_path(dest, rec["scenario"]["name"]), slim(rec))
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness publish", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?", type=Path, help="reports/<run-id> (default: the latest run)")
    ap.add_argument("dest", nargs="?", type=Path, default=DEFAULT_DEST)
    ap.add_argument("--reports", type=Path, default=REPO / "reports")
    a = ap.parse_args(argv)
    run_dir = a.run_dir or results.latest_run(a.reports)
    if run_dir is None:
        print("no run found", file=sys.stderr)
        return 1
    print(f"published {run_dir} as {publish(run_dir, a.dest)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
