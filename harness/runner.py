"""Run one scenario: warm-up, then timed rounds in which every tool runs once, in an order
shuffled per round; verify every destination against the dataset manifest, summarise, and build
the result record.

Routes: escp goes over the private sshd (like scp and rsync-ssh) in a scenario that has an ssh
peer and when an sshd runs; otherwise escp runs --local, and an ssh peer is skipped (rsync-ssh
becomes local rsync). Each peer is compared with the escp run of its own route: a local peer
(cp, rsync, limit) with escp-local when the scenario has it. Every ratio names both routes.

The state before every run is the same: the previous run's destination was just freed and the
page cache synced (this VM returns freed memory to the host, and writing into fresh page-cache
pages then costs up to 4x more). Destinations go to fresh directories
(scratch/<scenario>/<tool>-r<round>/out); big files are unlinked right after verification; after
a run that writes nothing (escp-dummy) the harness writes and frees as many bytes itself.
Small files are kept until the session ends and are then deleted in the background (creating
files right after deleting many is slow on this machine). A repeat with a non-zero exit or a
wrong copy marks the tool failed: its numbers are kept for diagnosis but never summarised.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import peers, results, wan
from harness.datasets import Dataset, FileEntry, file_digest
from harness.pyspy import attribute_samples, record_command
from harness.scenarios import PULL, Scenario
from harness.sshd import PrivateSshd
from harness.stats import spread_flag, summary

BIG_FILE = 1 << 20  # unlink files at least this big right after verification
BALLAST_CHUNK = 16 << 20  # write size of the bytes written and freed after a run that wrote nothing
LOCAL_STAND_IN = {"rsync-ssh": "rsync"}  # without an sshd, an ssh peer that has a local form runs locally
PYSPY_RATE = 100  # samples per second of the instrumented run under py-spy
STATE_POLICY = (
    "freed: before every run the previous run's destination (or, after a run that writes nothing, "
    "as many bytes written by the harness) was unlinked and synced"
)

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
    ssh_route: bool = True  # escp goes over the sshd in scenarios with ssh peers (False: always --local)
    shuffle: bool = True  # a new random order of the tools in every timed round
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
    route: str = peers.LOCAL,
    path: wan.WanPath | None = None,
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
    reporter = "escp" if tool.startswith("escp") else tool  # the tools that write a --json report
    json_report = art / f"{tool}-{suffix}.{reporter}.json" if reporter in ("escp", "limit") else None
    inv = peers.build(
        tool,
        ds.source(),
        dest,
        escp=ctx.escp,
        opts=sc.escp,
        sshd=ctx.sshd,
        json_report=json_report,
        extra=extra,
        route=route,
        path=path.ports if path else None,
        pull=sc.direction == PULL,
    )
    if pyspy_out is not None:  # sampled by py-spy, both processes (the receiver is a subprocess)
        inv.argv = record_command(pyspy_out, command=inv.argv, subprocesses=True, rate=PYSPY_RATE)
    tool_route = peers.tool_route(tool, route)
    use_sshd = ctx.sshd if tool_route == peers.SSH else None
    if path is not None:
        path.run_accounting()  # what crossed the path before this run is not this run's
    m = peers.measure(inv, base / "log.txt", sshd=use_sshd)
    rep: dict[str, Any] = {"round": rnd, **m.to_dict(), "argv": inv.argv, "route": tool_route}
    if path is not None:
        rep["path"] = path.run_accounting()
    rep["rate_bytes_per_s"] = ds.total_bytes / m.wall_s if m.wall_s > 0 else None
    rep["files_per_s"] = ds.file_count / m.wall_s if m.wall_s > 0 else None
    escp_doc = _read_escp_json(json_report)
    if escp_doc is not None:
        rep["escp_json" if reporter == "escp" else "tool_json"] = escp_doc
        seconds = escp_doc.get("seconds")
        if isinstance(seconds, int | float) and seconds > 0:
            rep["transfer_s"] = seconds  # the data phase: escp's set-up to SESSION_DONE (the limit loop's own)
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
    if not inv.verify:
        _write_and_free(base / "ballast", ds.total_bytes)
    if ctx.sync:
        os.sync()  # flush what remains so the next timed run does not pay for this one's writeback
    return rep


def _write_and_free(path: Path, nbytes: int) -> None:
    """Write nbytes into a new file and unlink it: after a run that wrote nothing, the next run
    starts from the same state as after any other (freshly freed page-cache pages)."""
    if nbytes < BIG_FILE:
        return
    chunk = bytes(BALLAST_CHUNK)
    with open(path, "wb") as f:
        for start in range(0, nbytes, BALLAST_CHUNK):
            f.write(chunk[: min(BALLAST_CHUNK, nbytes - start)])
    path.unlink()


def _ok(rep: dict[str, Any]) -> bool:
    return rep["exit_code"] == 0 and rep["verified"] is not False


# ---------------------------------------------------------------- a scenario


def tools_of(sc: Scenario) -> list[str]:
    return ["escp", *sc.peers]


def escp_route(ctx: RunContext, sc: Scenario) -> str:
    """ssh when a peer of the scenario goes over ssh and escp can too, else local."""
    if ctx.sshd is None or not ctx.ssh_route or ctx.escp.local_only:
        return peers.LOCAL
    return peers.SSH if any(p in peers.SSH_PEERS for p in sc.peers) else peers.LOCAL


def _skip_reason(ctx: RunContext, sc: Scenario, tool: str, route: str, ds: Dataset) -> str | None:
    if sc.direction == PULL and peers.tool_route(tool, route) != peers.SSH:
        return "a pull fetches over the loopback sshd, which this run does not have" if ctx.sshd is None \
            else "a pull goes over ssh, and this run keeps escp --local"
    if tool in peers.SSH_PEERS and ctx.sshd is None:
        return f"no loopback sshd: {ctx.sshd_reason or 'not started'}"
    if tool in ("escp-dummy", "escp-traced", "escp-local") and ctx.escp.plain:
        return f"escp stand-in has no {tool.removeprefix('escp-')} mode"
    if tool == "escp-local" and route == peers.LOCAL:
        return "escp itself runs --local in this scenario"
    if tool == "limit" and not ds.single_file:
        return "the limit loop copies one file"
    return None


def reference_of(peer: str, route: str, ok: set[str]) -> str:
    """The escp run a peer is compared with: escp-local for a local peer when escp goes over ssh."""
    if peer != "escp-local" and peers.tool_route(peer, route) != route and "escp-local" in ok:
        return "escp-local"
    return "escp"


def _ratios(tools: dict[str, dict[str, Any]], peer_names: list[str], route: str) -> dict[str, Any]:
    """Per peer: its reference's time / the peer's time, per round (wall, and data phase when both
    runs report one), with the routes named and a flag when the spread exceeds the effect."""
    ok = {t for t, v in tools.items() if v["status"] == "ok"}
    out: dict[str, Any] = {}
    for tool in peer_names:
        ref = reference_of(tool, route, ok)
        if ref not in ok or tool not in ok:
            continue
        ref_reps = {r["round"]: r for r in tools[ref]["repeats"]}
        pairs = [(ref_reps[r["round"]], r) for r in tools[tool]["repeats"] if r["round"] in ref_reps]
        per_round = [a["wall_s"] / b["wall_s"] for a, b in pairs if b["wall_s"] > 0]
        a_route, b_route = peers.tool_route(ref, route), peers.tool_route(tool, route)
        # time ratio < 1 means escp is faster; speedup = 1 / ratio
        entry: dict[str, Any] = {
            "against": ref,
            "route": f"{ref} {a_route} vs {tool} {b_route}",
            "mixed_route": a_route != b_route,
            "time_ratio_per_round": per_round,
            "summary": summary(per_round),
            "spread": spread_flag(per_round),
        }
        # both report a data phase (escp's own seconds, the limit loop's): the ratio of throughputs
        phase = [a["transfer_s"] / b["transfer_s"] for a, b in pairs if a.get("transfer_s") and b.get("transfer_s")]
        if phase:
            entry["transfer_time_ratio_per_round"] = phase
            entry["transfer_summary"] = summary(phase)
            entry["transfer_spread"] = spread_flag(phase)
        out[tool] = entry
    return out


def run_scenario(ctx: RunContext, sc: Scenario, ds: Dataset) -> dict[str, Any]:
    """Run a scenario (on its emulated WAN path when it has one) and build its record."""
    if sc.path is None:
        return _run_scenario(ctx, sc, ds, None)
    with wan.open_path(sc.path, ctx.sshd) as path:
        for note in path.notes:
            ctx.log(f"  {sc.name}: {note}")
        return _run_scenario(ctx, sc, ds, path)


def _run_scenario(ctx: RunContext, sc: Scenario, ds: Dataset, path: wan.WanPath | None) -> dict[str, Any]:
    repeats = ctx.repeats_override or sc.repeats
    t_start = time.perf_counter()
    route = escp_route(ctx, sc)
    names = [LOCAL_STAND_IN.get(t, t) if ctx.sshd is None else t for t in tools_of(sc)]
    tools: dict[str, dict[str, Any]] = {}
    for tool in names:
        reason = _skip_reason(ctx, sc, tool, route, ds)
        tools[tool] = {"status": "skipped" if reason else "ok", "reason": reason, "repeats": [], "warmup": [],
                       "route": peers.tool_route(tool, route)}
    active = [t for t in tools if tools[t]["status"] == "ok"]

    def do(tool: str, rnd: int, position: int) -> None:
        rep = _one(ctx, sc, ds, tool, rnd, route=route, path=path)
        rep["position"] = position
        entry = tools[tool]
        (entry["warmup"] if rnd < 0 else entry["repeats"]).append(rep)
        if not _ok(rep):
            entry["status"] = "failed"
            entry["reason"] = rep.get("verify_error") or "failed"
            ctx.log(f"  {sc.name}: {tool} FAILED ({entry['reason']}); {rep.get('stderr_tail', '')[-300:]}")

    def round_of(rnd: int, order: list[str]) -> float:
        t_round = time.perf_counter()
        for i, tool in enumerate(order):
            if tools[tool]["status"] == "ok":
                do(tool, rnd, i)
        key = "warmup" if rnd < 0 else "repeats"
        line = ", ".join(f"{t} {tools[t][key][-1]['wall_s']:.2f}s" for t in order if tools[t][key])
        ctx.log(f"  {sc.name} {'warm-up' if rnd < 0 else f'round {rnd + 1}/{repeats}'}: {line}")
        return time.perf_counter() - t_round

    notes = list(sc.notes) if ctx.repeats_override is None else [f"{repeats} timed repeats (--repeats)"]
    round_s = 0.0
    for w in range(sc.warmup):
        round_s = round_of(-(w + 1), active)
    if sc.warmup and ctx.budget_s and ctx.repeats_override is None:
        # keep the profile's time budget: fewer timed rounds when one round is slow (never < min)
        fit = max(ctx.min_repeats, int(ctx.budget_s // max(round_s, 1e-3)))
        if fit < repeats:
            notes.append(
                f"{fit} timed repeats instead of {repeats}: one round took {round_s:.1f} s "
                f"and the scenario budget is {ctx.budget_s:.0f} s"
            )
            repeats = fit
    seed = f"{ctx.run_id}/{sc.name}"
    rng = random.Random(seed)
    for rnd in range(repeats):  # every tool once per round, in a new random order each round
        order = list(active)
        if ctx.shuffle:
            rng.shuffle(order)
        round_of(rnd, order)

    for entry in tools.values():
        reps = entry["repeats"]
        if entry["status"] == "ok" and reps:
            entry["summary"] = {
                k: summary([r[k] for r in reps if r.get(k) is not None])
                for k in ("wall_s", "transfer_s", "rate_bytes_per_s", "files_per_s", "user_s", "sys_s",
                          "max_rss_bytes")
            }
            entry["spread"] = spread_flag([r["wall_s"] for r in reps], relative=True)
    ratios = _ratios(tools, [t for t in tools if t != "escp"], route)

    instrumented = None
    if ctx.instrumented and not ctx.escp.plain and tools["escp"]["status"] == "ok":
        instrumented = _instrumented(ctx, sc, ds, route, path)

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
            "escp_route": route,
            "repeats": repeats,
            "warmup": sc.warmup,
            "budget_s": ctx.budget_s,
            "order": (f"shuffled within every timed round (seed {seed!r}); warm-up: " if ctx.shuffle
                      else "round-robin ") + " ".join(active),
            "state": STATE_POLICY,
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
        "notes": notes + (path.notes if path else []),
        "path": None if path is None else {
            "describe": path.describe(),
            "rtt_s": path.spec.rtt_s,
            "window_bytes": path.spec.window_bytes,
            "bottleneck_Bps": path.spec.rate_bytes_per_s,
            "per_stream_Bps": path.spec.per_stream(),
            "ceiling_Bps": path.spec.ceiling(sc.escp.streams),
            "kernel_tbf": path.kernel_rate is not None,
        },
        "elapsed_s": round(time.perf_counter() - t_start, 2),
    }


def _instrumented(ctx: RunContext, sc: Scenario, ds: Dataset, route: str,
                  path: wan.WanPath | None) -> dict[str, Any]:
    """One untimed escp run with --stats --trace, under py-spy when available; if the run under
    py-spy fails (e.g. no ptrace permission), it is repeated without py-spy."""
    trace = ctx.artifacts / sc.name / "escp-instr.trace.json"
    extra = ["--stats", "--trace", str(trace)]
    pyspy: dict[str, Any] | None = None
    rep: dict[str, Any] | None = None
    if ctx.pyspy and shutil.which("py-spy"):
        raw = ctx.artifacts / sc.name / "escp-instr.pyspy.txt"
        rep = _one(ctx, sc, ds, "escp", 0, route=route, path=path, extra=extra, pyspy_out=raw)
        if _ok(rep) and raw.exists():
            shares = attribute_samples([raw])
            pyspy = {"samples": shares.total, "shares": shares.shares(), "rate_hz": PYSPY_RATE,
                     "raw_file": str(raw.relative_to(ctx.artifacts.parent))}
        else:
            pyspy = {"error": (rep.get("stderr_tail") or rep.get("verify_error") or "no samples")[-300:]}
            shutil.rmtree(ctx.scratch / sc.name / "escp-instr", ignore_errors=True)
            rep = None
    if rep is None:
        rep = _one(ctx, sc, ds, "escp", 0, route=route, path=path, extra=extra)
    return {
        **rep,
        "trace_file": str(trace.relative_to(ctx.artifacts.parent)) if trace.exists() else None,
        "pyspy": pyspy,
    }


def cleanup_scratch(scratch: Path) -> None:
    delete_in_background(scratch)


__all__ = ["RunContext", "run_scenario", "verify", "cleanup_scratch", "tools_of", "escp_route", "reference_of"]
