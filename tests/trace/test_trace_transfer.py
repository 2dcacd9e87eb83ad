"""The tracer on real loopback transfers: one merged Chrome trace with both sides' stages,
separate starved/blocked waits, counters and file instants; the --stats summary and the
--json report carry the same figures."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from tests.helpers import local
from tests.trace.test_trace_chrome import check_no_overlap, check_valid

SENDER_STAGES = {"read", "checksum", "encrypt", "send"}
RECEIVER_STAGES = {"recv", "decrypt", "verify", "write"}


def _events(doc: dict[str, Any]) -> tuple[dict[int, str], list[dict[str, Any]]]:
    procs = {ev["pid"]: ev["args"]["name"] for ev in doc["traceEvents"]
             if ev["ph"] == "M" and ev["name"] == "process_name"}
    return procs, [ev for ev in doc["traceEvents"] if ev["ph"] != "M"]


def test_trace_of_a_real_transfer_has_both_sides_waits_counters_and_instants(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom(6 << 20)
    (src / "big.bin").write_bytes(big)
    (src / "small.txt").write_bytes(b"hello\n")
    trace, report = tmp_path / "t.json", tmp_path / "r.json"
    # -l keeps the sender waiting on the (emulated) link: blocked waits must show up
    r = local("-r", "-t", "2", "--blocksize", "256K", "-l", "16M", "--stats", "--trace", trace,
              "--json", report, src, tmp_path / "dst")
    assert r.code == 0, r.stderr
    assert (tmp_path / "dst" / "big.bin").read_bytes() == big
    assert (tmp_path / "dst" / "small.txt").read_bytes() == b"hello\n"

    doc = json.loads(trace.read_text())
    check_valid(doc)
    check_no_overlap(doc)
    procs, events = _events(doc)
    by_role = {name.split()[0].lower(): pid for pid, name in procs.items()}
    assert {"sender", "receiver"} <= {k for k in by_role}, procs
    spans = Counter((ev["pid"], ev["name"]) for ev in events if ev["ph"] == "X" and ev.get("cat") == "busy")
    snd, rcv = by_role["sender"], by_role["receiver"]
    assert SENDER_STAGES <= {name for pid, name in spans if pid == snd}
    assert RECEIVER_STAGES <= {name for pid, name in spans if pid == rcv}
    # the big file is read and written once per 256 KiB block; the small one goes inline on the
    # metadata stream (read by the walker, untraced) and is written once
    assert spans[(snd, "read")] == (6 << 20) // (256 << 10)
    assert spans[(rcv, "write")] == spans[(snd, "read")] + 1
    waits = {(ev["pid"], ev["cat"]) for ev in events if ev["ph"] == "X" and ev.get("cat", "").startswith("wait.")}
    assert (snd, "wait.blocked") in waits and (rcv, "wait.starved") in waits
    counters = {ev["name"] for ev in events if ev["ph"] == "C"}
    assert {"sender bytes sent", "receiver bytes written"} <= counters
    assert any(name.endswith("bytes in flight") for name in counters)
    instants = Counter(ev["name"] for ev in events if ev["ph"] == "i")
    assert instants["file start"] == instants["file done"] == 3  # the directory and its two files

    stats = json.loads(report.read_text())["stats"]
    rows = {(s["side"], s["stage"]): s for s in stats["stages"]}
    assert rows[("sender", "send")]["blocked_s"] > 0 and rows[("receiver", "recv")]["starved_s"] > 0
    assert rows[("receiver", "write")]["nbytes"] == len(big) + 6
    assert stats["verdict"]["kind"] == "network-bound" and stats["verdict"]["stage"] == "send"
    assert "verdict: network-bound" in r.stderr + r.stdout
