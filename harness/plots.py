"""Matplotlib (Agg) plots for a run: throughput per scenario, escp-vs-peer speedups, thread
scaling, block-size sweep, per-stage busy/wait bars with the verdict, throughput over time from
a Chrome trace, small-file rates. Each function takes result records, writes one small PNG and
returns its path (or None when the run has nothing to plot).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Record = dict[str, Any]
DPI = 80
COLORS = {
    "escp": "#1f77b4",
    "escp-dummy": "#aec7e8",
    "escp-traced": "#9edae5",
    "cp": "#7f7f7f",
    "scp": "#d62728",
    "scp-gcm": "#ff7f0e",
    "rsync-ssh": "#2ca02c",
}


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _ok_tools(rec: Record) -> dict[str, Record]:
    return {k: v for k, v in rec["tools"].items() if v.get("status") == "ok" and v.get("summary")}


def _err(s: dict[str, float], scale: float) -> tuple[float, float]:
    return ((s["median"] - s["q1"]) / scale, (s["q3"] - s["median"]) / scale)


def throughput(records: list[Record], path: Path) -> Path | None:
    recs = [r for r in records if not r["scenario"].get("group") and _ok_tools(r)]
    if not recs:
        return None
    tools = sorted(
        {t for r in recs for t in _ok_tools(r)}, key=lambda t: list(COLORS).index(t) if t in COLORS else 99
    )
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.45 * len(recs) * max(1, len(tools)) / 2))
    height = 0.8 / len(tools)
    for i, rec in enumerate(recs):
        ok = _ok_tools(rec)
        for j, t in enumerate(tools):
            if t not in ok:
                continue
            s = ok[t]["summary"]["rate_bytes_per_s"]
            lo, hi = _err(s, 1e9)
            y = i + j * height
            ax.barh(
                y,
                s["median"] / 1e9,
                height,
                xerr=[[lo], [hi]],
                color=COLORS.get(t),
                label=t if i == 0 else None,
            )
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(recs))])
    ax.set_yticklabels([r["scenario"]["name"] for r in recs])
    ax.invert_yaxis()
    ax.set_xlabel("throughput GB/s (median, IQR)")
    handles, labels = [], []
    for t in tools:
        handles.append(plt.Rectangle((0, 0), 1, 1, color=COLORS.get(t)))
        labels.append(t)
    ax.legend(handles, labels, fontsize=7, loc="lower right")
    ax.set_title("Throughput per scenario", fontsize=10)
    return _save(fig, path)


def speedups(records: list[Record], path: Path) -> Path | None:
    rows = [
        (r["scenario"]["name"], p, 1 / v["summary"]["median"])
        for r in records
        for p, v in r.get("ratios", {}).items()
        if v.get("summary") and v["summary"]["median"] > 0
    ]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.25 * len(rows)))
    labels = [f"{s} vs {p}" for s, p, _ in rows]
    ax.barh(range(len(rows)), [v for *_, v in rows], color=[COLORS.get(p, "#999") for _, p, _ in rows])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("speedup of escp = peer time / escp time (median per round; >1: escp faster)")
    ax.set_title("escp vs peers, same run", fontsize=10)
    return _save(fig, path)


def sweep(records: list[Record], group: str, xlabel: str, path: Path, *, xsize: bool = False) -> Path | None:
    recs = [r for r in records if r["scenario"].get("group") == group and "escp" in _ok_tools(r)]
    if not recs:
        return None

    def xval(r: Record) -> float:
        x = r["scenario"]["x"]
        if xsize:
            from harness.datasets import parse_size

            return parse_size(x)
        return float(x)

    recs.sort(key=xval)
    xs = [xval(r) for r in recs]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for tool in ("escp", "cp"):
        pts = [
            (x, _ok_tools(r)[tool]["summary"]["rate_bytes_per_s"])
            for x, r in zip(xs, recs, strict=True)
            if tool in _ok_tools(r)
        ]
        if not pts:
            continue
        ax.errorbar(
            [p[0] for p in pts],
            [p[1]["median"] / 1e9 for p in pts],
            yerr=[[_err(p[1], 1e9)[0] for p in pts], [_err(p[1], 1e9)[1] for p in pts]],
            marker="o",
            capsize=3,
            color=COLORS[tool],
            label=tool,
            ls="-" if tool == "escp" else ":",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(r["scenario"]["x"]) for r in recs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("GB/s (median, IQR)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title(f"{group} sweep ({recs[0]['dataset']['name']})", fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------- per-stage stats


def _seconds(key: str, value: float) -> float:
    k = key.lower()
    if k.endswith("_ns"):
        return value / 1e9
    if k.endswith("_us"):
        return value / 1e6
    if k.endswith("_ms"):
        return value / 1e3
    return value


def _classify(key: str) -> str | None:
    k = key.lower()
    if any(w in k for w in ("frac", "pct", "percent", "share", "count", "bytes", "n_", "util", "per_s")):
        return None
    if "busy" in k:
        return "busy"
    if "starv" in k:
        return "starved"
    if "block" in k or "backpress" in k:
        return "blocked"
    if "wait" in k:
        return "wait"
    return None


def _stage_figures(d: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for k, v in d.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            c = _classify(k)
            if c:
                out[c] += _seconds(k, float(v))
        elif isinstance(v, dict) and k.lower() in ("wait", "waits"):
            for k2, v2 in v.items():
                if isinstance(v2, int | float):
                    c = _classify(k2) or (
                        "starved" if "starv" in k2 else "blocked" if "block" in k2 else None
                    )
                    if c:
                        out[c] += _seconds(k2, float(v2))
    if "wait" in out and ("starved" in out or "blocked" in out):
        del out["wait"]  # a total of the two kinds (escp's wait_s = starved_s + blocked_s)
    return dict(out)


def stage_table(stats: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Normalise escp's --stats into {side: {stage: {busy, starved, blocked, wait}}} (seconds).

    Accepts {side: {stage: {...}}}, {side: {"stages": {stage: {...}}}}, {"sides": {...}} and a list
    {"stages": [{"side", "stage", ...}]}; figures are keys naming busy/starved/blocked/wait, in seconds
    unless suffixed _ms/_us/_ns."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    if isinstance(stats.get("stages"), list):
        for row in stats["stages"]:
            if isinstance(row, dict) and "stage" in row:
                figs = _stage_figures(row)
                if figs:
                    out.setdefault(str(row.get("side", "?")), {})[str(row["stage"])] = figs
        return out
    sides = stats.get("sides", stats)
    for side, body in sides.items():
        if side in ("verdict", "schema") or not isinstance(body, dict):
            continue
        stages = body.get("stages", body)
        if not isinstance(stages, dict):
            continue
        for stage, figs_raw in stages.items():
            if isinstance(figs_raw, dict):
                figs = _stage_figures(figs_raw)
                if figs:
                    out.setdefault(side, {})[stage] = figs
    return out


def stages(rec: Record, path: Path) -> Path | None:
    inst = rec.get("instrumented") or {}
    stats = (inst.get("escp_json") or {}).get("stats")
    if not isinstance(stats, dict):
        return None
    table = stage_table(stats)
    if not table:
        return None
    sides = list(table)
    fig, axes = plt.subplots(1, len(sides), figsize=(4 * len(sides), 3.2), squeeze=False)
    kinds = [("busy", "#1f77b4"), ("starved", "#ff7f0e"), ("blocked", "#d62728"), ("wait", "#bbbbbb")]
    for ax, side in zip(axes[0], sides, strict=True):
        names = list(table[side])
        bottom = [0.0] * len(names)
        for kind, color in kinds:
            vals = [table[side][n].get(kind, 0.0) for n in names]
            if any(vals):
                ax.bar(names, vals, bottom=bottom, color=color, label=kind)
                bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_title(side, fontsize=9)
        ax.set_ylabel("seconds (summed over workers)")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.legend(fontsize=7)
    verdict = stats.get("verdict") or {}
    if verdict:
        fig.suptitle(
            f"{rec['scenario']['name']}: {verdict.get('kind', '?')} — {verdict.get('side', '')} {verdict.get('stage', '')}",
            fontsize=9,
        )
    return _save(fig, path)


# ---------------------------------------------------------------- trace throughput


def trace_series(trace: Any, bin_s: float | None = None) -> dict[str, tuple[list[float], list[float]]]:
    """Bytes per second over time for each (process, stage) of a Chrome trace ('X' events with
    ts/dur in µs and args.bytes). Bytes are spread evenly over an event's duration. The bin
    width defaults to 1/100 of the traced time (at least 50 ms)."""
    events = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
    pnames: dict[Any, str] = {}
    xs = []
    for e in events:
        if not isinstance(e, dict):
            continue
        if e.get("ph") == "M" and e.get("name") == "process_name":
            pnames[e.get("pid")] = str((e.get("args") or {}).get("name", e.get("pid")))
        elif e.get("ph") == "X" and isinstance((e.get("args") or {}).get("bytes"), int | float):
            if e["args"]["bytes"] > 0:
                xs.append(e)
    if not xs:
        return {}
    t0 = min(float(e["ts"]) for e in xs)
    t_end = max(float(e["ts"]) + float(e.get("dur", 0)) for e in xs)
    if bin_s is None:
        bin_s = max(0.05, (t_end - t0) / 1e6 / 100)
    nbins = max(1, int((t_end - t0) / 1e6 / bin_s) + 1)
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * nbins)
    width_us = bin_s * 1e6
    for e in xs:
        key = f"{pnames.get(e.get('pid'), e.get('pid'))}/{e.get('name')}"
        start = float(e["ts"]) - t0
        dur = max(float(e.get("dur", 0)), 1.0)
        rate = float(e["args"]["bytes"]) / dur  # bytes per µs
        b = int(start // width_us)
        end = start + dur
        while b < nbins and b * width_us < end:
            lo, hi = max(start, b * width_us), min(end, (b + 1) * width_us)
            series[key][b] += rate * max(0.0, hi - lo)
            b += 1
    times = [i * bin_s for i in range(nbins)]
    return {k: (times, [v / bin_s for v in vals]) for k, vals in series.items()}


PREFERRED = ("write", "read", "send", "recv")  # file bytes first (send/recv carry compressed bytes)


def _one_per_process(series: dict[str, tuple[list[float], list[float]]]) -> list[str]:
    """One line per process: the stage that handles file bytes (read / write) when present."""
    by_proc: dict[str, list[str]] = defaultdict(list)
    for k in series:
        by_proc[k.rsplit("/", 1)[0]].append(k)
    out = []
    for keys in by_proc.values():
        stages = {k.rsplit("/", 1)[1]: k for k in keys}
        pick = next((stages[s] for s in PREFERRED if s in stages), None)
        out.append(pick or max(keys, key=lambda k: sum(series[k][1])))
    return out[:8]


def trace_throughput(trace_file: Path, path: Path, title: str = "") -> Path | None:
    try:
        trace = json.loads(trace_file.read_text())
    except (OSError, ValueError):
        return None
    series = trace_series(trace)
    if not series:
        return None
    top = _one_per_process(series)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for k in top:
        t, v = series[k]
        ax.plot(t, [x / 1e9 for x in v], lw=1, label=k)
    ax.set_xlabel("seconds since first span")
    ax.set_ylabel("GB/s")
    ax.legend(fontsize=7)
    ax.set_title(f"Throughput over time from the trace {title}", fontsize=10)
    return _save(fig, path)


def small_files(records: list[Record], path: Path, min_files: int = 100) -> Path | None:
    recs = [r for r in records if r["dataset"]["files"] >= min_files and _ok_tools(r)]
    if not recs:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.8 + 0.6 * len(recs)))
    labels, vals, colors = [], [], []
    for r in recs:
        for t, v in _ok_tools(r).items():
            labels.append(f"{r['scenario']['name']}: {t}")
            vals.append(v["summary"]["files_per_s"]["median"])
            colors.append(COLORS.get(t, "#999"))
    ax.barh(range(len(vals)), vals, color=colors)
    ax.set_yticks(range(len(vals)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("files/s (median)")
    ax.set_title("Small-file rate", fontsize=10)
    return _save(fig, path)
