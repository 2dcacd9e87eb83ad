"""Result records: one JSON file per scenario run under reports/<run-id>/, plus run.json.

A scenario record holds the schema version, the scenario and its hash, the git commit, machine
metadata (cpu count and model, memory, kernel, python), the harness configuration, every repeat
of every tool (wall, CPU, peak RSS, verification, escp's --json report when present) with
summaries, and the escp/peer ratios per round. `load_run()` reads them back for report/regress.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

SCHEMA = 1
RUN_FILE = "run.json"
REPO = Path(__file__).resolve().parent.parent

# keys every scenario record must have (checked by validate() and the tests)
REQUIRED = ("schema", "kind", "run_id", "scenario", "scenario_hash", "git", "machine", "config", "dataset", "tools")


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now()
    return now.strftime("%Y%m%d-%H%M%S")


def git_info(repo: Path = REPO) -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return r.stdout.strip() if r.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def machine_info() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "memory_bytes": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],  # other load skews every figure
    }


def write_json(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False, default=str))
    tmp.rename(path)
    return path


def scenario_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def validate(record: dict[str, Any]) -> list[str]:
    """Problems with a scenario record (empty list: valid)."""
    problems = [f"missing key {k!r}" for k in REQUIRED if k not in record]
    if record.get("schema") != SCHEMA:
        problems.append(f"schema {record.get('schema')!r} != {SCHEMA}")
    for name, tool in record.get("tools", {}).items():
        if tool.get("status") not in ("ok", "failed", "skipped"):
            problems.append(f"tool {name}: bad status {tool.get('status')!r}")
        for rep in tool.get("repeats", []):
            for k in ("round", "wall_s", "exit_code", "verified"):
                if k not in rep:
                    problems.append(f"tool {name}: repeat without {k!r}")
    return problems


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    """All scenario records of a run directory (or of a baseline directory), in file order."""
    out = []
    for p in sorted(run_dir.glob("*.json")):
        if p.name == RUN_FILE:
            continue
        try:
            doc = json.loads(p.read_text())
        except ValueError:
            continue
        if doc.get("kind") == "escp-bench-scenario":
            out.append(doc)
    return out


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta_path = run_dir / RUN_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"run_id": run_dir.name}
    records = load_records(run_dir)
    order = {name: i for i, name in enumerate(meta.get("scenarios", []))}  # run order
    records.sort(key=lambda r: order.get(r["scenario"]["name"], len(order)))
    return meta, records


def latest_run(reports: Path) -> Path | None:
    runs = [p for p in reports.iterdir() if p.is_dir() and (p / RUN_FILE).exists()] if reports.exists() else []
    return max(runs, key=lambda p: (p / RUN_FILE).stat().st_mtime) if runs else None
