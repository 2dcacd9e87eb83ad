"""The report's comparison tables: escp against each peer on the route both took, and escp
against the limit loop (harness/limit.py) as a percentage.

Every row names the two runs compared and their routes ("escp ssh vs scp ssh", "escp-local
local vs cp local"), the median speedup over rounds, the range over rounds, and a flag when the
rounds spread more than the effect they show (harness.stats.spread_flag): such a result says
nothing either way on this machine.
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]
FLAG = "spread > effect"


def _flag(spread: dict[str, Any] | None) -> str:
    if not spread:
        return "-"
    return f"{FLAG} ({spread['spread']:.2f} > {spread['effect']:.2f})" if spread.get("flagged") else "ok"


def _route(rec: Record, peer: str, entry: dict[str, Any]) -> str:
    """A record made before routes were named: escp's route from its argv, peers by their kind."""
    if entry.get("route"):
        return str(entry["route"]) + (" (mixed routes)" if entry.get("mixed_route") else "")
    return f"escp vs {peer} (routes not recorded)"


def ratio_rows(records: list[Record]) -> list[list[str]]:
    """scenario | comparison with routes | speedup | range | spread flag | rounds."""
    rows = []
    for r in records:
        for peer, v in r.get("ratios", {}).items():
            s = v.get("summary")
            if not s:
                continue
            rows.append([
                r["scenario"]["name"],
                _route(r, peer, v),
                f"{1 / s['median']:.2f}x",
                f"{1 / s['max']:.2f}..{1 / s['min']:.2f}",
                _flag(v.get("spread")),
                str(s["n"]),
            ])
    return rows


RATIO_HEADER = ["scenario", "compared (route)", "escp speedup (median)", "range over rounds",
                "spread vs effect", "rounds"]


def limit_rows(records: list[Record]) -> list[list[str]]:
    """escp as a percentage of the limit loop: data phase (escp's own `seconds` against the
    loop's) and wall time, medians over rounds with their ranges."""
    rows = []
    for r in records:
        v = r.get("ratios", {}).get("limit")
        if not v or not v.get("summary"):
            continue
        wall = v["summary"]
        phase = v.get("transfer_summary")
        o = r["scenario"]["escp"]
        rows.append([
            r["scenario"]["name"],
            f"{v.get('against', 'escp')} -t {o['streams']} --blocksize {o['blocksize']}",
            (f"{100 / phase['median']:.0f}% ({100 / phase['max']:.0f}..{100 / phase['min']:.0f}%)"
             if phase else "-"),
            f"{100 / wall['median']:.0f}% ({100 / wall['max']:.0f}..{100 / wall['min']:.0f}%)",
            _flag(v.get("transfer_spread") or v.get("spread")),
            str(wall["n"]),
        ])
    return rows


LIMIT_HEADER = ["scenario", "escp run", "data phase: escp throughput as % of the limit",
                "wall time: % of the limit", "spread vs effect", "rounds"]
LIMIT_TEXT = (
    "The limit is escp's data loop with nothing around it (harness/limit.py: preadv, xxh3-128, "
    "AES-GCM encrypt_into, send, recv_into, decrypt_into, verify, pwrite over the same number of "
    "loopback streams, between two processes). 100% means escp moves data as fast as that loop; the "
    "data phase compares escp's own transfer time (set-up to SESSION_DONE) with the loop's (first "
    "connect to the receiver's exit), the wall time adds start-up, ssh and the end of the session."
)
