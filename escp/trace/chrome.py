"""Chrome Trace Event export of a merged sender + receiver recording.

Produces the JSON object format ({"traceEvents": [...]}) that Perfetto and
chrome://tracing open:

- one process per side (pid 1 = sender, pid 2 = receiver), named by 'M' metadata;
- one track (tid) per worker ("tx-0", "rx-3", "meta"), named and ordered by 'M' metadata;
- busy spans as 'X' complete events named after the stage, wait spans as 'X' events named
  "<stage> starved" / "<stage> blocked" (category wait.starved / wait.blocked);
- counters as 'C' events, instants as 'i' events on their worker's track.

Timestamps are µs (floats with ns resolution) relative to the earliest event of both
sides. The receiver's times are shifted by receiver_offset_ns first (0 when both sides
ran on one host, since both use CLOCK_MONOTONIC).

Guarantee: events on one track never overlap (not even nested). Events of a worker are
laid out greedily in start order; an event that would overlap the previous one on the
worker's track goes to an extra lane track "tx-0 #2" (or "tx-0 wait" tracks when
separate_wait_tracks=True). With a well-behaved engine every worker uses a single lane.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ..errors import EscpError
from .recorder import TraceData, _jsonable

PIDS = {"sender": 1, "receiver": 2}
_WAIT_CNAME = {"starved": "grey", "blocked": "yellow"}


class TraceExportError(EscpError):
    """The Chrome trace could not be written (the transfer itself is unaffected)."""

    cause = "trace"


def _worker_key(name: str) -> tuple[int, str, int]:
    """Natural order: tx-2 before tx-10; "meta" after the stream workers."""
    m = re.fullmatch(r"(.*?)(\d+)", name)
    prefix, num = (m.group(1), int(m.group(2))) if m else (name, -1)
    return (1 if name.startswith("meta") else 0, prefix, num)


def _assign_lanes(items: list[tuple[int, int, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Greedy interval partitioning: lanes whose events never overlap (touching is fine)."""
    lanes: list[list[dict[str, Any]]] = []
    ends: list[int] = []
    for t0, t1, ev in sorted(items, key=lambda it: (it[0], it[1])):
        for i, end in enumerate(ends):
            if end <= t0:
                lanes[i].append(ev)
                ends[i] = t1
                break
        else:
            lanes.append([ev])
            ends.append(t1)
    return lanes


def chrome_trace(
    sender: TraceData | None,
    receiver: TraceData | None,
    *,
    receiver_offset_ns: int = 0,
    separate_wait_tracks: bool = False,
) -> dict[str, Any]:
    """Merge both sides into a Chrome Trace Event JSON object (a dict ready for json.dump)."""
    sides: list[tuple[TraceData, int]] = []
    if sender is not None:
        sides.append((sender, 0))
    if receiver is not None:
        sides.append((receiver, receiver_offset_ns))
    starts = [
        t + off
        for data, off in sides
        for t in (
            [e.t0 for e in data.spans] + [e.t0 for e in data.waits]
            + [e.ts for e in data.counters] + [e.ts for e in data.instants]
        )
    ]
    base = min(starts) if starts else 0

    def us(t_ns: int) -> float:
        return (t_ns - base) / 1000.0

    out: list[dict[str, Any]] = []
    for data, off in sides:
        pid = PIDS[data.role]
        out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "ts": 0,
                    "args": {"name": data.role}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "ts": 0,
                    "args": {"sort_index": pid}})
        if data.dropped:
            out.append({"ph": "M", "name": "process_labels", "pid": pid, "tid": 0, "ts": 0,
                        "args": {"labels": f"{data.dropped} events dropped from the timeline (totals exact)"}})

        # group: track name -> [(t0, t1, event)]
        groups: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
        for s in data.spans:
            t0 = s.t0 + off
            ev = {"ph": "X", "name": s.stage, "cat": "busy", "pid": pid, "ts": us(t0),
                  "dur": (s.t1 - s.t0) / 1000.0, "args": {"bytes": s.nbytes}}
            groups.setdefault(s.worker, []).append((t0, s.t1 + off, ev))
        for w in data.waits:
            t0 = w.t0 + off
            ev = {"ph": "X", "name": f"{w.stage} {w.kind}", "cat": f"wait.{w.kind}", "pid": pid,
                  "ts": us(t0), "dur": (w.t1 - w.t0) / 1000.0, "cname": _WAIT_CNAME[w.kind]}
            track = f"{w.worker} wait" if separate_wait_tracks else w.worker
            groups.setdefault(track, []).append((t0, w.t1 + off, ev))
        for i in data.instants:
            groups.setdefault(i.worker, [])

        tid = 0
        first_tid: dict[str, int] = {}
        for track in sorted(groups, key=lambda n: (_worker_key(n.removesuffix(" wait")), n)):
            lanes = _assign_lanes(groups[track]) or [[]]
            for n, lane in enumerate(lanes):
                tid += 1
                name = track if n == 0 else f"{track} #{n + 1}"
                first_tid.setdefault(track, tid)
                out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "ts": 0,
                            "args": {"name": name}})
                out.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "ts": 0,
                            "args": {"sort_index": tid}})
                for ev in lane:
                    ev["tid"] = tid
                    out.append(ev)
        for i in data.instants:
            out.append({"ph": "i", "s": "t", "name": i.name, "pid": pid, "tid": first_tid[i.worker],
                        "ts": us(i.ts + off), "args": _jsonable(i.args)})
        for c in data.counters:
            out.append({"ph": "C", "name": c.name, "pid": pid, "tid": 0, "ts": us(c.ts + off),
                        "args": {c.name: c.value}})

    return {
        "traceEvents": out,
        "displayTimeUnit": "ms",
        "otherData": {
            "producer": "escp",
            "clock": "CLOCK_MONOTONIC",
            "base_ns": base,
            "receiver_offset_ns": receiver_offset_ns,
        },
    }


def write_chrome_trace(
    path: str | os.PathLike[str],
    sender: TraceData | None,
    receiver: TraceData | None,
    *,
    receiver_offset_ns: int = 0,
    separate_wait_tracks: bool = False,
) -> Path:
    """Write the merged trace to path (atomically). Raises TraceExportError on failure."""
    target = Path(path)
    doc = chrome_trace(sender, receiver, receiver_offset_ns=receiver_offset_ns,
                       separate_wait_tracks=separate_wait_tracks)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # dumps, not dump: only the one-shot encoder is the C one (several times faster)
            fh.write(json.dumps(doc, separators=(",", ":"), allow_nan=False))
        os.replace(tmp, target)
        tmp = None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TraceExportError(f"cannot write trace file {target}: {reason}", path=str(target)) from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return target


__all__ = ["chrome_trace", "write_chrome_trace", "TraceExportError", "PIDS"]
