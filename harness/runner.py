"""Run one scenario: warm-up, then alternating timed rounds (escp, peer1, peer2, ..., escp, ...),
verify every destination against the dataset manifest, summarise, and build the result record.

Destinations go to fresh directories (scratch/<scenario>/<tool>-r<round>/out); big files are
unlinked right after verification (few files, frees page cache), small files are kept until the
session ends and are then deleted in the background (creating files right after deleting many is
slow on this machine). A repeat with a non-zero exit or a wrong copy marks the tool failed: its
numbers are kept for diagnosis but never summarised as a result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import peers, results
from harness.datasets import Dataset, FileEntry, file_digest
from harness.pyspy import attribute_samples, record_command
from harness.scenarios import Scenario
from harness.sshd import PrivateSshd
from harness.stats import summary

BIG_FILE = 1 << 20  # unlink files at least this big right after verification


PYSPY_RATE = 100  # samples per second of the instrumented run under py-spy

@dataclass
class RunContext:
    run_id: str
    escp: peers.EscpCommand
    scratch: Path  # fresh per session
    artifacts: Path  # reports/<run-id>/artifacts
    sshd: PrivateSshd | None = None
    sshd_reason: str | None = None  # why ssh peers are skipped
    instrumented: bool = True  # one extra escp run with --stats --trace after the timed rounds
    pyspy: bool = True  # ... under py-spy (when on PATH): stage shares of its samples in the report
    repeats_override: int | None = None
    budget_s: float | None = None  # per-scenario time budget for the timed rounds (None: no limit)
    min_repeats: int = 3
    sync: bool = True  # sync(2) after each repeat, outside the timed part
    log: Callable[[str], None] = print
    extra_config: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- verification


def _copy_root(dest: Path, ds: Dataset) -> Path:
    """Where the copy of the dataset ended up (tools differ on 'copy into' vs 'copy as')."""
    if ds.single_file:
        inner = dest / ds.files[0].path
        return inner if dest.is_dir() and inner.is_file() else dest
    first = ds.files[0].path if ds.files else ""
    if dest.is_dir() and not (dest / first).exists() and (dest / ds.data.name / first).exists():
        return dest / ds.data.name
    return dest


def verify(dest: Path, ds: Dataset) -> tuple[bool, str, int]:
    """Compare a destination with the manifest (set of files, sizes, xxh3-128 digests).

    Returns (ok, message, allocated_bytes)."""
    root = _copy_root(dest, ds)
    allocated = 0
    if ds.single_file:
        entry = ds.files[0]
        if not root.is_file():
            return False, f"missing {root}", 0
        st = root.stat()
        allocated = st.st_blocks * 512
        if st.st_size != entry.size:
            return False, f"{entry.path}: size {st.st_size} != {entry.size}", allocated
        if file_digest(root) != entry.digest:
            return False, f"{entry.path}: digest mismatch", allocated
        return True, "ok", allocated
    expected: dict[str, FileEntry] = {f.path: f for f in ds.files}
    seen: set[str] = set()
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            rel = p.relative_to(root).as_posix()
            want = expected.get(rel)
            if want is None:
                return False, f"unexpected file {rel}", allocated
            st = p.lstat()
            allocated += st.st_blocks * 512
            if st.st_size != want.size:
                return False, f"{rel}: size {st.st_size} != {want.size}", allocated
            if file_digest(p) != want.digest:
                return False, f"{rel}: digest mismatch", allocated
            seen.add(rel)
    missing = len(expected) - len(seen)
    if missing:
        example = next(k for k in expected if k not in seen)
        return False, f"{missing} files missing (e.g. {example})", allocated
    return True, "ok", allocated


def _unlink_big(dest: Path) -> None:
    if dest.is_file():
        dest.unlink()
        return
    for dirpath, _dirs, names in os.walk(dest):
        for n in names:
            p = Path(dirpath) / n
            try:
                if p.lstat().st_size >= BIG_FILE:
                    p.unlink()
            except OSError:
                pass


def delete_in_background(path: Path) -> None:
    """Detached `rm -rf` so deletion never sits in a timed section."""
    if path.exists():
        subprocess.Popen(
            ["rm", "-rf", "--", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


# ---------------------------------------------------------------- one repeat


def _read_escp_json(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        return {"invalid_json": str(e)}
    return doc if isinstance(doc, dict) else {"invalid_json": "not an object"}


def _one(
    ctx: RunContext,
    sc: Scenario,
    ds: Dataset,
    tool: str,
    rnd: int,
    *,
    extra: list[str] | None = None,
    pyspy_out: Path | None = None,
) -> dict[str, Any]:
    tag = "warmup" if rnd < 0 else f"r{rnd}"
    base = (
        ctx.scratch / sc.name / f"{tool}-{tag}" if extra is None else ctx.scratch / sc.name / f"{tool}-instr"
    )
    base.mkdir(parents=True, exist_ok=False)
    dest = base / "out"
    art = ctx.artifacts / sc.name
    art.mkdir(parents=True, exist_ok=True)
    suffix = "instr" if extra is not None else tag
    json_report = art / f"{tool}-{suffix}.escp.json" if tool.startswith("escp") else None
    inv = peers.build(
        tool,
        ds.source(),
        dest,
        escp=ctx.escp,
        opts=sc.escp,
        sshd=ctx.sshd,
        json_report=json_report,
        extra=extra,
    )
    if pyspy_out is not None:  # sampled by py-spy, both processes (the receiver is a subprocess)
        inv.argv = record_command(pyspy_out, command=inv.argv, subprocesses=True, rate=PYSPY_RATE)
    use_sshd = ctx.sshd if tool in peers.SSH_PEERS else None
    m = peers.measure(inv, base / "log.txt", sshd=use_sshd)
    rep: dict[str, Any] = {"round": rnd, **m.to_dict(), "argv": inv.argv}
    rep["rate_bytes_per_s"] = ds.total_bytes / m.wall_s if m.wall_s > 0 else None
    rep["files_per_s"] = ds.file_count / m.wall_s if m.wall_s > 0 else None
    escp_doc = _read_escp_json(json_report)
    if escp_doc is not None:
        rep["escp_json"] = escp_doc
        seconds = escp_doc.get("seconds")
        if isinstance(seconds, int | float) and seconds > 0:
            rep["transfer_s"] = seconds  # escp's own data phase: set-up to SESSION_DONE, no start-up or export
    if m.exit_code != 0:
        rep.update(verified=False, verify_error=f"exit code {m.exit_code}")
    elif not inv.verify:
        rep.update(verified=None, verify_error=None)
    else:
        ok, msg, allocated = verify(dest, ds)
        rep.update(verified=ok, verify_error=None if ok else msg, dest_allocated_bytes=allocated)
    if m.exit_code == 0:
        rep.pop("stderr_tail", None)
    _unlink_big(dest)
    if ctx.sync:
        os.sync()  # flush what remains so the next timed run does not pay for this one's writeback
    return rep


def _ok(rep: dict[str, Any]) -> bool:
    return rep["exit_code"] == 0 and rep["verified"] is not False


# ---------------------------------------------------------------- a scenario


def tools_of(sc: Scenario) -> list[str]:
    return ["escp", *sc.peers]


def _skip_reason(ctx: RunContext, tool: str) -> str | None:
    if tool in peers.SSH_PEERS and ctx.sshd is None:
        return f"no loopback sshd: {ctx.sshd_reason or 'not started'}"
    if tool in ("escp-dummy", "escp-traced") and ctx.escp.plain:
        return f"escp stand-in has no {tool.removeprefix('escp-')} mode"
    return None


def run_scenario(ctx: RunContext, sc: Scenario, ds: Dataset) -> dict[str, Any]:
    repeats = ctx.repeats_override or sc.repeats
    t_start = time.perf_counter()
    tools: dict[str, dict[str, Any]] = {}
    for tool in tools_of(sc):
        reason = _skip_reason(ctx, tool)
        tools[tool] = {"status": "skipped" if reason else "ok", "reason": reason, "repeats": [], "warmup": []}
    active = [t for t in tools if tools[t]["status"] == "ok"]

    def do(tool: str, rnd: int) -> None:
        rep = _one(ctx, sc, ds, tool, rnd)
        entry = tools[tool]
        (entry["warmup"] if rnd < 0 else entry["repeats"]).append(rep)
        if not _ok(rep):
            entry["status"] = "failed"
            entry["reason"] = rep.get("verify_error") or "failed"
            ctx.log(f"  {sc.name}: {tool} FAILED ({entry['reason']}); {rep.get('stderr_tail', '')[-300:]}")

    notes = list(sc.notes) if ctx.repeats_override is None else [f"{repeats} timed repeats (--repeats)"]
    for w in range(sc.warmup):
        t_round = time.perf_counter()
        for tool in active:
            if tools[tool]["status"] == "ok":
                do(tool, -(w + 1))
        round_s = time.perf_counter() - t_round
        line = ", ".join(f"{t} {tools[t]['warmup'][-1]['wall_s']:.2f}s" for t in active if tools[t]["warmup"])
        ctx.log(f"  {sc.name} warm-up: {line}")
    if sc.warmup and ctx.budget_s and ctx.repeats_override is None:
        # keep the profile's time budget: fewer timed rounds when one round is slow (never < min)
        fit = max(ctx.min_repeats, int(ctx.budget_s // max(round_s, 1e-3)))
        if fit < repeats:
            notes.append(
                f"{fit} timed repeats instead of {repeats}: one round took {round_s:.1f} s "
                f"and the scenario budget is {ctx.budget_s:.0f} s"
            )
            repeats = fit
    for rnd in range(repeats):  # A B A B: every tool once per round, same order each round
        for tool in active:
            if tools[tool]["status"] == "ok":
                do(tool, rnd)
        key = "repeats"
        line = ", ".join(f"{t} {tools[t][key][-1]['wall_s']:.2f}s" for t in active if tools[t][key])
        ctx.log(f"  {sc.name} {'warm-up' if rnd < 0 else f'round {rnd + 1}/{repeats}'}: {line}")

    for entry in tools.values():
        reps = entry["repeats"]
        if entry["status"] == "ok" and reps:
            entry["summary"] = {
                k: summary([r[k] for r in reps if r.get(k) is not None])
                for k in ("wall_s", "transfer_s", "rate_bytes_per_s", "files_per_s", "user_s", "sys_s",
                          "max_rss_bytes")
            }
    ratios: dict[str, Any] = {}
    escp_reps = {r["round"]: r for r in tools["escp"]["repeats"]}
    for tool in sc.peers:
        if tools["escp"]["status"] != "ok" or tools[tool]["status"] != "ok":
            continue
        per_round = [
            escp_reps[r["round"]]["wall_s"] / r["wall_s"]
            for r in tools[tool]["repeats"]
            if r["round"] in escp_reps and r["wall_s"] > 0
        ]
        # time ratio < 1 means escp is faster; speedup = 1 / ratio
        ratios[tool] = {"time_ratio_per_round": per_round, "summary": summary(per_round)}
        phase = [  # another escp (e.g. escp-traced): also the ratio of the data phases (throughput)
            escp_reps[r["round"]]["transfer_s"] / r["transfer_s"]
            for r in tools[tool]["repeats"]
            if r["round"] in escp_reps and r.get("transfer_s") and escp_reps[r["round"]].get("transfer_s")
        ]
        if phase:
            ratios[tool]["transfer_time_ratio_per_round"] = phase
            ratios[tool]["transfer_summary"] = summary(phase)

    instrumented = None
    if ctx.instrumented and not ctx.escp.plain and tools["escp"]["status"] == "ok":
        instrumented = _instrumented(ctx, sc, ds)

    return {
        "schema": results.SCHEMA,
        "kind": "escp-bench-scenario",
        "run_id": ctx.run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scenario": sc.to_dict(),
        "scenario_hash": sc.hash,
        "git": results.git_info(),
        "machine": results.machine_info(),
        "config": {
            "escp_command": ctx.escp.describe(),
            "escp_plain": ctx.escp.plain,
            "repeats": repeats,
            "warmup": sc.warmup,
            "budget_s": ctx.budget_s,
            "order": "round-robin " + " ".join(active),
            "sshd": "private loopback sshd" if ctx.sshd else f"unavailable: {ctx.sshd_reason}",
            "rss_source": "gnu-time" if peers.GNU_TIME else "wait4",
            **ctx.extra_config,
        },
        "dataset": {
            "name": ds.name,
            "spec": ds.spec,
            "bytes": ds.total_bytes,
            "files": ds.file_count,
        },
        "tools": tools,
        "ratios": ratios,
        "instrumented": instrumented,
        "notes": notes,
        "elapsed_s": round(time.perf_counter() - t_start, 2),
    }


def _instrumented(ctx: RunContext, sc: Scenario, ds: Dataset) -> dict[str, Any]:
    """One untimed escp run with --stats --trace, under py-spy when available; if the run under
    py-spy fails (e.g. no ptrace permission), it is repeated without py-spy."""
    trace = ctx.artifacts / sc.name / "escp-instr.trace.json"
    extra = ["--stats", "--trace", str(trace)]
    pyspy: dict[str, Any] | None = None
    rep: dict[str, Any] | None = None
    if ctx.pyspy and shutil.which("py-spy"):
        raw = ctx.artifacts / sc.name / "escp-instr.pyspy.txt"
        rep = _one(ctx, sc, ds, "escp", 0, extra=extra, pyspy_out=raw)
        if _ok(rep) and raw.exists():
            shares = attribute_samples([raw])
            pyspy = {"samples": shares.total, "shares": shares.shares(), "rate_hz": PYSPY_RATE,
                     "raw_file": str(raw.relative_to(ctx.artifacts.parent))}
        else:
            pyspy = {"error": (rep.get("stderr_tail") or rep.get("verify_error") or "no samples")[-300:]}
            shutil.rmtree(ctx.scratch / sc.name / "escp-instr", ignore_errors=True)
            rep = None
    if rep is None:
        rep = _one(ctx, sc, ds, "escp", 0, extra=extra)
    return {
        **rep,
        "trace_file": str(trace.relative_to(ctx.artifacts.parent)) if trace.exists() else None,
        "pyspy": pyspy,
    }


def cleanup_scratch(scratch: Path) -> None:
    delete_in_background(scratch)


__all__ = ["RunContext", "run_scenario", "verify", "cleanup_scratch", "tools_of"]
