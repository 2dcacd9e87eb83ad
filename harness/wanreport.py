"""The report's WAN section: throughput against streams (and block size) on each emulated path,
with the theoretical ceiling min(t x window/RTT, bottleneck) drawn on it, and a table per path.

Three measures per point, medians over rounds:
  escp       escp's own data phase (its --json `seconds`: set-up to SESSION_DONE), file bytes / s;
  on path    the rate at which escp's bytes crossed the emulated path while they flowed (the
             emulator's accounting, middle 90 % of the bytes: without stream set-up and the end);
  limit      the limit loop (harness/limit.py) through the same path, its own data phase.
The peers that go over ssh (scp, rsync) move one TCP connection; they are drawn as horizontal
lines (file bytes over wall time) from the scenario "<group>-peers" on the same path.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from harness import plots
from harness.datasets import parse_size
from harness.stats import median, quantile

Record = dict[str, Any]
MB = 1e6
PEER_STYLE = {"scp-gcm": ":", "scp": ":", "rsync-ssh": "-."}


def _path_key(rec: Record) -> tuple[float, int, float | None] | None:
    p = rec.get("path")
    return None if not p else (p["rtt_s"], p["window_bytes"], p["bottleneck_Bps"])


def _rates(rec: Record, tool: str, measure: str) -> list[float]:
    t = rec["tools"].get(tool) or {}
    if t.get("status") != "ok":
        return []
    out = []
    for r in t.get("repeats", []):
        if measure == "phase" and r.get("transfer_s"):
            out.append(rec["dataset"]["bytes"] / r["transfer_s"])
        elif measure == "path" and r.get("path"):
            out.append(r["path"]["data"]["steady_Bps"])
        elif measure == "wall" and r.get("wall_s"):
            out.append(rec["dataset"]["bytes"] / r["wall_s"])
    return [x for x in out if x > 0]


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{median(xs) / MB:.1f} ({min(xs) / MB:.0f}-{max(xs) / MB:.0f})"


def groups(records: list[Record]) -> dict[str, list[Record]]:
    """Sweep groups run on an emulated path, in run order."""
    out: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.get("path") and r["scenario"].get("group"):
            out[r["scenario"]["group"]].append(r)
    return dict(out)


def _peers_on(records: list[Record], key: tuple[float, int, float | None] | None) -> list[Record]:
    return [r for r in records if r.get("path") and not r["scenario"].get("group") and _path_key(r) == key]


def _x(rec: Record, param: str) -> float:
    x = rec["scenario"]["x"]
    return float(parse_size(x)) if param == "blocksize" else float(x)


def _param(recs: list[Record]) -> str:
    first, last = recs[0]["scenario"]["escp"], recs[-1]["scenario"]["escp"]
    return "streams" if first["streams"] != last["streams"] or len(recs) == 1 else "blocksize"


def _verdict(rec: Record) -> str:
    stats = ((rec.get("instrumented") or {}).get("escp_json") or {}).get("stats") or {}
    v = stats.get("verdict") if isinstance(stats, dict) else None
    return f"{v.get('kind')} ({v.get('stage')})" if isinstance(v, dict) else "-"


def _rwnd_share(rec: Record) -> str:
    """The streams' time limited by the receive window, as a share of their busy time (TCP_INFO)."""
    stats = ((rec.get("instrumented") or {}).get("escp_json") or {}).get("stats") or {}
    rows = stats.get("tcp") if isinstance(stats, dict) else None
    busy = sum(r.get("busy_us") or 0 for r in rows or [])
    limited = sum(r.get("rwnd_limited_us") or 0 for r in rows or [])
    return f"{100 * limited / busy:.0f}%" if busy > 0 else "-"


def table(recs: list[Record]) -> list[list[str]]:
    rows = []
    for r in recs:
        o, p = r["scenario"]["escp"], r["path"]
        ceiling = p["ceiling_Bps"]
        phase = _rates(r, "escp", "phase")
        rows.append([
            r["scenario"]["name"], str(o["streams"]), str(o["blocksize"]), f"{ceiling / MB:.1f}",
            _fmt(phase), f"{100 * median(phase) / ceiling:.0f}%" if phase else "-",
            _fmt(_rates(r, "escp", "path")), _fmt(_rates(r, "limit", "phase")), _verdict(r), _rwnd_share(r),
        ])
    return rows


TABLE_HEADER = ["scenario", "-t", "--blocksize", "ceiling MB/s", "escp MB/s (data phase)", "of ceiling",
                "escp on path MB/s", "limit MB/s", "verdict", "TCP rwnd-limited"]


def plot(recs: list[Record], peer_recs: list[Record], path: Path) -> Path | None:
    """Throughput against the swept parameter, with the ceiling (and the ssh peers as lines)."""
    recs = sorted(recs, key=lambda r: _x(r, _param(recs)))
    param = _param(recs)
    p = recs[0]["path"]
    xs = [_x(r, param) for r in recs]
    fig, ax = plots.plt.subplots(figsize=(6.5, 4))
    for tool, measure, label, style in (
        ("escp", "phase", "escp (data phase)", "-o"),
        ("escp", "path", "escp bytes on the path (steady)", "--s"),
        ("limit", "phase", "limit loop (data phase)", ":^"),
    ):
        pts = [(x, _rates(r, tool, measure)) for x, r in zip(xs, recs, strict=True)]
        pts = [(x, v) for x, v in pts if v]
        if not pts:
            continue
        mids = [median(v) / MB for _x, v in pts]
        lo = [m - quantile(v, 0.25) / MB for m, (_x, v) in zip(mids, pts, strict=True)]
        hi = [quantile(v, 0.75) / MB - m for m, (_x, v) in zip(mids, pts, strict=True)]
        ax.errorbar([x for x, _v in pts], mids, yerr=[lo, hi], fmt=style, capsize=3, label=label,
                    color=plots.COLORS.get(tool, "#9467bd"))
    if param == "streams":
        dense = [1 + i * (max(xs) - 1) / 200 for i in range(201)]
        per, cap = p["per_stream_Bps"], p["bottleneck_Bps"]
        ax.plot(dense, [min(t * per, cap or float("inf")) / MB for t in dense], color="k", lw=1,
                label="ceiling min(t x window/RTT, bottleneck)")
    else:
        ax.axhline(p["ceiling_Bps"] / MB, color="k", lw=1, label=f"ceiling at -t {recs[0]['scenario']['escp']['streams']}")
    for pr in peer_recs:
        for tool in ("scp-gcm", "scp", "rsync-ssh"):
            rates = _rates(pr, tool, "wall")
            if rates:
                ax.axhline(median(rates) / MB, color=plots.COLORS.get(tool), ls=PEER_STYLE[tool], lw=1,
                           label=f"{tool} over ssh (1 connection, wall)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(r["scenario"]["x"]) for r in recs])
    ax.set_xlabel("streams (-t)" if param == "streams" else "block size (--blocksize)")
    ax.set_ylabel("MB/s (median, IQR)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{recs[0]['scenario']['group']}: {p['describe'].split(';')[0]}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=plots.DPI)
    plots.plt.close(fig)
    return path


def section(doc: Any, records: list[Record], plot_dir: Path, run_dir: Path) -> None:
    """The WAN section of the report (nothing when the run had no WAN scenario)."""
    found = groups(records)
    if not found:
        return
    doc.h(2, "WAN: throughput against streams on an emulated long fat pipe")
    doc.p(TEXT)
    for name, recs in found.items():
        doc.h(3, f"{name}: {recs[0]['path']['describe']}")
        doc.img(plot(recs, _peers_on(records, _path_key(recs[0])), plot_dir / f"wan-{name}.png"),
                f"throughput vs {_param(recs)} on {name}", run_dir)
        doc.table(TABLE_HEADER, table(recs))
    peer_recs = [r for r in records if r.get("path") and not r["scenario"].get("group")]
    if peer_recs:
        doc.h(3, "The peers on the same paths (over an ssh forwarded over the emulator)")
        rows = []
        for r in peer_recs:
            for tool in r["tools"]:
                rates = _rates(r, tool, "wall")
                phase = _rates(r, tool, "phase")
                rows.append([r["scenario"]["name"], f"{tool} ({r['tools'][tool].get('route', '?')})",
                             _fmt(rates), _fmt(phase)])
        doc.table(["scenario", "tool (route)", "MB/s over wall time", "MB/s data phase"], rows)


TEXT = (
    "Each path is emulated on loopback by harness/pathemu.py: every connection gets the RTT as a delay "
    "line and at most the window in flight, so one stream moves at most window/RTT, and all connections "
    "share the bottleneck. The black line is the ceiling min(t x window/RTT, bottleneck). escp is escp's "
    "own data phase (file bytes over its --json seconds: set-up, stream connections and the end of the "
    "session included); 'on path' is the rate at which its bytes crossed the path while they flowed (the "
    "emulator's accounting, middle 90 % of the bytes); limit is the bare loop through the same path. "
    "TCP rwnd-limited is the share of the sender's TCP busy time its streams were stopped by the receive "
    "window (TCP_INFO of the instrumented run: with the emulator, its window shows up there)."
)
