"""Render reports/<run-id>/report.md and index.html (with PNG plots) from the stored results.

The report states escp's ratios against the peers measured in the same run, checks the
performance targets (met / not met / not measured), and shows per-stage busy/wait with the
verdict from escp's --stats. `python -m harness report [RUN_DIR]` re-renders an existing run.
"""

from __future__ import annotations

import argparse
import html
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from escp.trace.summary import STAGE_ORDER as SUMMARY_STAGE_ORDER
from harness import comparisons, plots, results, wanreport
from harness.datasets import parse_size

Record = dict[str, Any]
MiB = 1 << 20


@dataclass
class Target:
    key: str
    text: str
    status: str  # met | not met | not measured
    evidence: str


def _speedup(rec: Record, peer: str) -> float | None:
    r = rec.get("ratios", {}).get(peer, {}).get("summary")
    return 1 / r["median"] if r and r.get("median") else None


TRACER_TARGET = "tracer on (--stats --trace) costs <= 3% throughput"


def _tracer_overhead_target(records: list[Record]) -> Target:
    """The tracer's cost, judged on throughput (escp's data phase, both runs' own `seconds`);
    the wall-time cost, which adds start-up noise and writing the trace file, is shown too.
    Records made before the data phase was recorded are judged on wall time, and say so."""
    rows = []
    for r in records:
        ratio = r.get("ratios", {}).get("escp-traced", {})
        wall, phase = ratio.get("summary"), ratio.get("transfer_summary")
        if wall and wall.get("median"):
            rows.append((r, wall, phase if phase and phase.get("median") else None))
    if not rows:
        return Target("tracer_overhead", TRACER_TARGET, "not measured", "no scenario with the escp-traced peer")
    r, wall, phase = max(rows, key=lambda row: 1 / (row[2] or row[1])["median"])
    wall_cost = 1 / wall["median"] - 1
    name = f"{r['scenario']['name']} ({_size_note(r)})"
    if phase is None:
        return Target("tracer_overhead", TRACER_TARGET, "met" if wall_cost <= 0.03 else "not met",
                      f"{name}: wall time {100 * wall_cost:+.1f}% (median over {wall['n']} rounds; "
                      "data-phase times not recorded in this run)")
    cost = 1 / phase["median"] - 1
    lo, hi = 1 / phase["max"] - 1, 1 / phase["min"] - 1
    flagged = (r["ratios"]["escp-traced"].get("transfer_spread") or {}).get("flagged")
    return Target(
        "tracer_overhead", TRACER_TARGET, "met" if cost <= 0.03 else "not met",
        f"{name}: throughput {100 * cost:+.1f}% (rounds {100 * lo:+.0f}% to {100 * hi:+.0f}%); wall time "
        f"{100 * wall_cost:+.1f}% including start-up and writing the trace (medians over {phase['n']} "
        "alternated rounds)" + ("; the rounds spread more than the effect: not conclusive" if flagged else ""),
    )


def _tagged(records: list[Record], tag: str) -> list[Record]:
    return [r for r in records if tag in r["scenario"].get("targets", [])]


def _under_load(machine: dict[str, Any]) -> bool:
    """Other work competed for the CPUs: the 1-minute load average was above 1.5 x CPUs + 1 (the
    harness's own runs, sender and receiver on every CPU, keep it near the CPU count)."""
    load, cpus = machine.get("loadavg"), machine.get("cpu_count")
    return bool(load and cpus and load[0] > 1.5 * cpus + 1)


def _size_note(rec: Record) -> str:
    return f"{rec['dataset']['bytes'] / 2**30:.1f} GiB, {rec['dataset']['files']} files"


def targets(records: list[Record]) -> list[Target]:
    out = []

    def ratio_target(key: str, text: str, tag: str, peer: str, threshold: float, unit: str) -> None:
        recs = _tagged(records, tag)
        vals: list[tuple[Record, float]] = []
        for rec in recs:
            sp = _speedup(rec, peer)
            if sp is not None:
                vals.append((rec, sp))
        if not vals:
            why = "scenario not run" if not recs else f"no successful escp and {peer} runs"
            out.append(Target(key, text, "not measured", why))
            return
        r, v = min(vals, key=lambda rv: rv[1])
        status = "met" if v >= threshold else "not met"
        ratio = r["ratios"][peer]
        s = ratio["summary"]
        out.append(Target(key, text, status, f"{r['scenario']['name']} ({_size_note(r)}): {v:.2f}x "
                          f"{unit + ' ' if unit else ''}(rounds {1 / s['max']:.2f}..{1 / s['min']:.2f}; {ratio.get('route', 'routes not recorded')})"))

    ratio_target(
        "huge_vs_scp_gcm", "2 GiB random file >= 4x scp -c aes128-gcm", "huge_vs_scp_gcm", "scp-gcm", 4.0, ""
    )
    ratio_target("huge_vs_cp", "2 GiB random file >= 0.7x cp", "huge_vs_cp", "cp", 0.7, "")
    ratio_target(
        "tiny_vs_rsync",
        "10k tiny files >= 1.5x rsync -a over ssh (files/s)",
        "tiny_vs_rsync",
        "rsync-ssh",
        1.5,
        "files/s ratio",
    )
    out.append(_tracer_overhead_target(records))
    recs = [r for r in _tagged(records, "compress_rate") if r["tools"]["escp"].get("summary")]
    if recs:
        r = recs[0]
        rate = r["tools"]["escp"]["summary"]["rate_bytes_per_s"]["median"]
        out.append(
            Target(
                "compress_rate",
                "-C on compressible data >= 0.7 GB/s",
                "met" if rate >= 0.7e9 else "not met",
                f"{r['scenario']['name']} ({_size_note(r)}): {rate / 1e9:.2f} GB/s",
            )
        )
    else:
        out.append(
            Target(
                "compress_rate", "-C on compressible data >= 0.7 GB/s", "not measured", "no successful run"
            )
        )
    worst = None
    for r in records:
        escp = r["tools"].get("escp", {})
        if escp.get("status") != "ok" or not escp.get("repeats"):
            continue
        o = r["scenario"]["escp"]
        limit = 100 * MiB + int(o["streams"]) * 4 * parse_size(o["blocksize"])
        peak = max(x["max_rss_bytes"] for x in escp["repeats"])
        margin = peak / limit
        if worst is None or margin > worst[0]:
            worst = (margin, r, peak, limit)
    if worst:
        margin, r, peak, limit = worst
        out.append(
            Target(
                "peak_rss",
                "peak RSS <= 100 MiB + streams x 4 x block size",
                "met" if margin <= 1 else "not met",
                f"worst: {r['scenario']['name']} {peak / MiB:.0f} MiB of {limit / MiB:.0f} MiB allowed "
                f"(per process, {r['config'].get('rss_source')})",
            )
        )
    else:
        out.append(
            Target(
                "peak_rss", "peak RSS <= 100 MiB + streams x 4 x block size", "not measured", "no escp run"
            )
        )
    return out


# ---------------------------------------------------------------- document model


class Doc:
    """A tiny document: headings, paragraphs, tables and images, rendered to Markdown and HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def img(self, path: Path | None, alt: str, base: Path) -> None:
        if path is not None:
            self.blocks.append(("img", (path.relative_to(base).as_posix(), alt)))

    def markdown(self) -> str:
        out = []
        for kind, b in self.blocks:
            if kind == "h":
                out.append("#" * b[0] + " " + b[1])
            elif kind == "p":
                out.append(b)
            elif kind == "ul":
                out.append("\n".join(f"- {x}" for x in b))
            elif kind == "table":
                header, rows = b
                lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(r) + " |" for r in rows]
                out.append("\n".join(lines))
            elif kind == "img":
                out.append(f"![{b[1]}]({b[0]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape

        def cell(x: str) -> str:
            cls = "met" if x == "met" else "not" if x == "not met" else ""
            return f"<td class='{cls}'>{e(x)}</td>"

        out = [
            f"<!doctype html><meta charset='utf-8'><title>{e(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
            "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
            "td:first-child{text-align:left}.met{color:green}.not{color:#c00}</style>",
        ]
        for kind, b in self.blocks:
            if kind == "h":
                out.append(f"<h{b[0]}>{e(b[1])}</h{b[0]}>")
            elif kind == "p":
                out.append(f"<p>{e(b)}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b) + "</ul>")
            elif kind == "table":
                header, rows = b
                out.append(
                    "<table><tr>"
                    + "".join(f"<th>{e(x)}</th>" for x in header)
                    + "</tr>"
                    + "".join("<tr>" + "".join(cell(x) for x in r) + "</tr>" for r in rows)
                    + "</table>"
                )
            elif kind == "img":
                out.append(f"<p><img src='{e(b[0])}' alt='{e(b[1])}'></p>")
        return "\n".join(out) + "\n"


def _fmt_rate(s: dict[str, float] | None) -> str:
    return f"{s['median'] / 1e9:.3f}" if s else "-"


def _scenario_rows(rec: Record) -> list[list[str]]:
    rows = []
    for name, t in rec["tools"].items():
        tool = f"{name} ({t['route']})" if t.get("route") else name
        s = t.get("summary") or {}
        w = s.get("wall_s")
        if t["status"] != "ok" or not w:
            rows.append([tool, t["status"].upper(), "-", "-", "-", "-", "-", "-", "-", t.get("reason") or ""])
            continue
        cpu = (s["user_s"]["median"] if s.get("user_s") else 0) + (
            s["sys_s"]["median"] if s.get("sys_s") else 0
        )
        server = [r.get("server_cpu_s") for r in t["repeats"] if r.get("server_cpu_s") is not None]
        peak = max(r["max_rss_bytes"] for r in t["repeats"])
        rows.append(
            [
                tool,
                "ok",
                f"{w['median']:.3f}",
                f"{w['iqr']:.3f} [{w['min']:.3f}, {w['max']:.3f}]",
                _fmt_rate(s.get("rate_bytes_per_s")),
                f"{s['files_per_s']['median']:.0f}" if s.get("files_per_s") else "-",
                f"{cpu:.2f}" + (f" (+{sorted(server)[len(server) // 2]:.2f} sshd)" if server else ""),
                f"{peak / MiB:.0f}",
                str(len(t["repeats"])),
                "",
            ]
        )
    return rows


def stage_share_rows(stats: Any, pyspy: Any) -> list[list[str]]:
    """Rows of stage | tracer busy share | py-spy sample share (empty without py-spy shares)."""
    if not isinstance(pyspy, dict) or not pyspy.get("shares"):
        return []
    busy: dict[str, float] = {}
    for row in (stats or {}).get("stages", []) if isinstance(stats, dict) else []:
        busy[row["stage"]] = busy.get(row["stage"], 0.0) + float(row.get("busy_s", 0.0))
    total = sum(busy.values())
    spy: dict[str, float] = pyspy["shares"]
    order = [s for s in STAGE_ORDER if s in busy or s in spy] + sorted(set(spy) - set(STAGE_ORDER))
    return [
        [
            s,
            f"{100 * busy[s] / total:.0f}%" if total > 0 and s in busy else "-",
            f"{100 * spy[s]:.0f}%" if s in spy else "-",
        ]
        for s in order
    ]


# the tracer's pipeline order, then py-spy's two catch-all groups
STAGE_ORDER = (*SUMMARY_STAGE_ORDER, "wait", "other")


def render(run_dir: Path) -> Path:
    meta, records = results.load_run(run_dir)
    plot_dir = run_dir / "plots"
    doc = Doc()
    doc.h(1, f"escp benchmark {meta.get('run_id', run_dir.name)}")
    machine = meta.get("machine") or (records[0]["machine"] if records else {})
    git = meta.get("git") or {}
    doc.ul(
        [
            f"profile: {meta.get('profile', '?')}; started {meta.get('started', '?')}; total {meta.get('elapsed_s', '?')} s "
            f"(dataset generation {meta.get('datasets_s', '?')} s)",
            f"commit {git.get('commit', '?')} ({git.get('branch', '?')}{', dirty' if git.get('dirty') else ''})",
            f"machine: {machine.get('cpu_count')} CPUs ({machine.get('cpu_model')}), "
            f"{(machine.get('memory_bytes') or 0) / 2**30:.1f} GiB, kernel {machine.get('kernel')}, Python {machine.get('python')}; "
            f"load average at start {machine.get('loadavg', '?')}"
            + (f", at end {records[-1]['machine'].get('loadavg')}" if records else ""),
            f"escp command: {meta.get('escp_command', '?')}",
            f"ssh peers: {meta.get('sshd', '?')}",
            f"escp route: {meta.get('escp_route', 'not recorded (escp ran --local)')}",
        ]
    )
    if any(r["config"].get("escp_plain") for r in records):
        doc.p("NOTE: escp was a stand-in command for this run; the escp figures are not escp's.")
    loaded = [r["scenario"]["name"] for r in records if _under_load(r["machine"])]
    if loaded or _under_load(machine):
        doc.p(
            f"NOTE: measured under load (the 1-minute load average exceeded 1.5 x CPUs + 1: other work ran on "
            f"this machine). Loopback figures, which are CPU-bound, are skewed by it; WAN figures are bound by the "
            f"emulated delay only while the machine keeps up (compare escp's rate on the path with the ceiling). "
            f"Scenarios that ended under load: {', '.join(loaded) or '-'}."
        )
    doc.p(
        "All ratios compare escp with peers measured in the same run: every tool once per round, in a "
        "new random order each timed round, after a warm-up round; before every run the previous run's "
        "destination was freed and synced (after a run that writes nothing the harness writes and frees "
        "as many bytes), so each tool starts from the same state; medians over the timed repeats; "
        "speedup = peer time / escp time per round, median over rounds. Every destination is verified "
        "against the dataset manifest (size + xxh3-128); a failed or wrong copy is reported as FAILED, not timed."
    )

    doc.h(2, "Performance targets")
    doc.table(["target", "status", "evidence"], [[t.text, t.status, t.evidence] for t in targets(records)])
    small = [
        r
        for r in records
        if r["scenario"].get("targets") and r["dataset"]["bytes"] < 2 * 2**30 and r["dataset"]["files"] == 1
    ]
    if small:
        doc.p(
            f"The big-file targets are stated for 2 GiB; this run measured {_size_note(small[0])} "
            f"({meta.get('profile')} profile)."
        )

    doc.h(2, "Ratios against peers (same run)")
    doc.p(
        "Each peer is compared with the escp run that took the same route: over the private sshd "
        "(ssh) like scp and rsync-ssh, or on this host (local) like cp and rsync. A flag marks a ratio "
        "whose rounds spread more than the effect it shows (max - min of the per-round ratios > "
        "|median - 1|): on this VM such a ratio is noise."
    )
    doc.table(comparisons.RATIO_HEADER, comparisons.ratio_rows(records))
    limit = comparisons.limit_rows(records)
    if limit:
        doc.h(3, "escp against the limit of this machine")
        doc.p(comparisons.LIMIT_TEXT)
        doc.table(comparisons.LIMIT_HEADER, limit)
    doc.img(plots.speedups(records, plot_dir / "speedups.png"), "escp speedup vs peers", run_dir)
    doc.img(plots.throughput(records, plot_dir / "throughput.png"), "throughput per scenario", run_dir)
    doc.img(
        plots.sweep(records, "threads", "streams (-t)", plot_dir / "threads.png"), "thread scaling", run_dir
    )
    doc.img(
        plots.sweep(records, "blocksize", "block size", plot_dir / "blocksize.png", xsize=True),
        "block-size sweep",
        run_dir,
    )
    doc.img(plots.small_files(records, plot_dir / "small_files.png"), "small-file rate", run_dir)

    doc.h(2, "Scenarios")
    header = [
        "tool",
        "status",
        "wall s (median)",
        "IQR [min, max]",
        "GB/s",
        "files/s",
        "CPU s",
        "peak RSS MiB",
        "repeats",
        "note",
    ]
    for r in records:
        sc = r["scenario"]
        doc.h(3, sc["name"])
        opts = sc["escp"]
        doc.p(
            f"dataset {r['dataset']['name']} ({_size_note(r)}); escp -t {opts['streams']} --blocksize {opts['blocksize']}"
            + (" -C" if opts.get("compress") else "")
            + (" --sparse" if opts.get("sparse") else "")
            + f"; {r['config']['repeats']} timed repeats after {r['config']['warmup']} warm-up; "
            f"scenario hash {r['scenario_hash']}; load average at its end {r['machine'].get('loadavg', '?')}"
        )
        for note in r.get("notes", []):
            doc.p(f"Note: {note}.")
        doc.table(header, _scenario_rows(r))
        inst = r.get("instrumented") or {}
        stats = (inst.get("escp_json") or {}).get("stats") or {}
        verdict = stats.get("verdict") if isinstance(stats, dict) else None
        if verdict:
            doc.p(
                f"Verdict ({sc['name']}, instrumented run): {verdict.get('kind')} — stage {verdict.get('stage')} "
                f"on the {verdict.get('side')}; evidence: {verdict.get('evidence')}; hint: {verdict.get('hint')}"
            )
        rows = stage_share_rows(stats, inst.get("pyspy"))
        if rows:
            doc.p(
                "Where the time goes, two instruments on the same (instrumented) run: the tracer's busy "
                "time per stage (both sides, share of all busy time) beside py-spy's samples per stage "
                "(both processes, every thread; `wait` = threads blocked in locks or queues, `other` = "
                "start-up, metadata and anything outside the stages)."
            )
            doc.table(["stage", "tracer: share of busy time", "py-spy: share of samples"], rows)
        elif isinstance(inst.get("pyspy"), dict) and inst["pyspy"].get("error"):
            doc.p(f"py-spy: not recorded ({inst['pyspy']['error'].strip().splitlines()[-1][:200]}).")
        doc.img(plots.stages(r, plot_dir / f"stages-{sc['name']}.png"), f"stages {sc['name']}", run_dir)
        if inst.get("trace_file"):
            doc.img(
                plots.trace_throughput(
                    run_dir / inst["trace_file"], plot_dir / f"trace-{sc['name']}.png", sc["name"]
                ),
                f"trace {sc['name']}",
                run_dir,
            )

    wanreport.section(doc, records, plot_dir, run_dir)
    md = run_dir / "report.md"
    md.write_text(doc.markdown())
    (run_dir / "index.html").write_text(doc.html(f"escp benchmark {meta.get('run_id', run_dir.name)}"))
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness report", description="re-render a run's report and plots"
    )
    ap.add_argument("run_dir", nargs="?", type=Path, help="reports/<run-id> (default: the latest run)")
    ap.add_argument("--reports", type=Path, default=Path(__file__).resolve().parent.parent / "reports")
    args = ap.parse_args(argv)
    run_dir = args.run_dir or results.latest_run(args.reports)
    if run_dir is None:
        print("no run found", file=sys.stderr)
        return 1
    print(f"report: {render(run_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
