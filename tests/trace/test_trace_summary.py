"""Stage summary and bottleneck verdicts on synthetic recordings of each class."""

from __future__ import annotations

import json
from typing import Any

import pytest
from trace_helpers import synthetic

from escp.trace.recorder import RecordingTracer
from escp.trace.summary import StageSummary, summarize


def test_stage_summary_figures() -> None:
    s = StageSummary("sender", "encrypt", workers=4, busy_s=2.0, starved_s=0.5, blocked_s=0.25,
                     nbytes=4_000_000_000, count=4000, wall_s=1.0)
    assert s.wait_s == 0.75
    assert s.mb_per_s == pytest.approx(2000.0)
    assert s.utilisation == pytest.approx(0.5)
    assert StageSummary("sender", "meta", 1, 0.0, 0.0, 0.0, 0, 0, 1.0).mb_per_s is None
    assert StageSummary("sender", "x", 0, 1.0, 0.0, 0.0, 1, 1, 0.0).utilisation == 0.0


def test_rows_aggregate_workers_in_stage_order() -> None:
    snd = synthetic("sender", 4, 2.0, {"send": (0.1, 0, 0.5), "read": (0.2, 0, 0), "encrypt": (0.1, 0, 0)},
                    nbytes=8 << 30)
    summ = summarize(snd, None)
    assert [s.stage for s in summ.stages] == ["read", "encrypt", "send"]
    read = summ.stages[0]
    assert (read.side, read.workers, read.nbytes) == ("sender", 4, 8 << 30)
    assert read.busy_s == pytest.approx(4 * 0.2 * 2.0)
    assert read.utilisation == pytest.approx(0.2)
    assert summ.shares["sender"]["send+blocked"] == pytest.approx(0.6)
    assert summ.shares["sender"]["untraced"] == pytest.approx(0.1)  # 1 - (0.6 + 0.2 + 0.1)
    assert summ.nbytes == 8 << 30


SENDER_BLOCKED = {"read": (0.08, 0, 0), "checksum": (0.02, 0, 0), "encrypt": (0.05, 0, 0), "send": (0.05, 0, 0.78)}

CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, str, str]]] = [
    ("network", SENDER_BLOCKED,
     {"recv": (0.15, 0.7, 0), "decrypt": (0.05, 0, 0), "verify": (0.02, 0, 0), "write": (0.06, 0, 0)},
     ("network-bound", "send", "sender")),
    ("disk write (back-pressure)", SENDER_BLOCKED,
     {"recv": (0.1, 0.05, 0), "decrypt": (0.05, 0, 0), "verify": (0.02, 0, 0), "write": (0.75, 0, 0)},
     ("disk-bound", "write", "receiver")),
    ("disk read", {"read": (0.8, 0, 0), "checksum": (0.02, 0, 0), "encrypt": (0.05, 0, 0), "send": (0.1, 0, 0)},
     {"recv": (0.1, 0.8, 0), "decrypt": (0.04, 0, 0), "write": (0.05, 0, 0)},
     ("disk-bound", "read", "sender")),
    ("cpu compress", {"read": (0.05, 0, 0), "compress": (0.75, 0, 0), "encrypt": (0.03, 0, 0), "send": (0.05, 0, 0.1)},
     {"recv": (0.05, 0.85, 0), "decompress": (0.05, 0, 0), "write": (0.03, 0, 0)},
     ("cpu-bound", "compress", "sender")),
    ("cpu encrypt", {"read": (0.1, 0, 0), "encrypt": (0.7, 0, 0), "send": (0.1, 0, 0.05)},
     {"recv": (0.1, 0.75, 0), "decrypt": (0.05, 0, 0), "write": (0.05, 0, 0)},
     ("cpu-bound", "encrypt", "sender")),
    ("cpu decrypt on receiver", SENDER_BLOCKED,
     {"recv": (0.1, 0.0, 0), "decrypt": (0.7, 0, 0), "write": (0.1, 0, 0)},
     ("cpu-bound", "decrypt", "receiver")),
    ("balanced sender", {"read": (0.3, 0, 0), "encrypt": (0.3, 0, 0), "send": (0.05, 0, 0.3)},
     {"recv": (0.1, 0.8, 0), "write": (0.05, 0, 0)},
     ("balanced", "send", "sender")),
    ("receiver busy but split", SENDER_BLOCKED,
     {"recv": (0.1, 0.1, 0), "decrypt": (0.35, 0, 0), "write": (0.4, 0, 0)},
     ("balanced", "write", "receiver")),
    ("mostly untraced", {"read": (0.1, 0, 0), "encrypt": (0.05, 0, 0), "send": (0.05, 0, 0.05)},
     {"recv": (0.05, 0.1, 0), "write": (0.05, 0, 0)},
     ("balanced", "untraced", "sender")),
]


@pytest.mark.parametrize("name,snd,rcv,expect", CASES, ids=[c[0] for c in CASES])
def test_verdicts(name: str, snd: dict[str, Any], rcv: dict[str, Any], expect: tuple[str, str, str]) -> None:
    summ = summarize(synthetic("sender", 4, 2.0, snd, nbytes=4 << 30),
                     synthetic("receiver", 4, 2.0, rcv, nbytes=4 << 30))
    v = summ.verdict
    assert (v.kind, v.stage, v.side) == expect, v
    assert v.evidence and "%" in v.evidence and "\n" not in v.evidence
    assert v.hint


def test_hints_say_what_to_try() -> None:
    def verdict_of(snd: dict[str, Any], rcv: dict[str, Any]) -> Any:
        return summarize(synthetic("sender", 2, 1.0, snd), synthetic("receiver", 2, 1.0, rcv)).verdict

    assert "without -C" in verdict_of(CASES[3][1], CASES[3][2]).hint
    assert "-t" in verdict_of(CASES[0][1], CASES[0][2]).hint
    assert "posix::dummy" in verdict_of(CASES[1][1], CASES[1][2]).hint
    assert "cpumask" in verdict_of(CASES[4][1], CASES[4][2]).hint


def test_missing_sides() -> None:
    only_sender = summarize(synthetic("sender", 2, 1.0, SENDER_BLOCKED), None).verdict
    assert only_sender.kind == "network-bound" and "receiver back-pressure is not ruled out" in only_sender.evidence
    only_receiver = summarize(None, synthetic("receiver", 2, 1.0, {"recv": (0.1, 0, 0), "write": (0.8, 0, 0)}))
    assert (only_receiver.verdict.kind, only_receiver.verdict.stage) == ("disk-bound", "write")
    nothing = summarize(None, None)
    assert nothing.verdict.kind == "balanced" and nothing.stages == []
    assert "verdict: balanced" in nothing.render_text()


def test_meta_worker_is_shown_but_not_counted() -> None:
    snd = synthetic("sender", 2, 1.0, {"read": (0.8, 0, 0), "send": (0.1, 0, 0)})
    snd.totals[("meta", "meta")] = type(snd.totals[("tx-0", "read")])(busy_ns=10**9, spans=3)
    summ = summarize(snd, None)
    assert summ.workers["sender"] == 2
    assert summ.shares["sender"]["read"] == pytest.approx(0.8)
    assert any(s.stage == "meta" for s in summ.stages)


def test_text_and_dict_rendering() -> None:
    summ = summarize(synthetic("sender", 4, 2.0, CASES[1][1], nbytes=4 << 30),
                     synthetic("receiver", 4, 2.0, CASES[1][2], nbytes=4 << 30))
    text = summ.render_text()
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["side", "stage", "wkr"]
    assert any(line.startswith("receiver write") for line in lines)
    assert "verdict: disk-bound (write, receiver)" in text
    assert lines[-1].startswith("hint: ")
    d = json.loads(json.dumps(summ.to_dict()))
    assert d["verdict"]["kind"] == "disk-bound" and d["verdict"]["stage"] == "write"
    row = next(r for r in d["stages"] if r["side"] == "receiver" and r["stage"] == "write")
    assert set(row) >= {"busy_s", "starved_s", "blocked_s", "wait_s", "nbytes", "mb_per_s", "utilisation", "workers"}
    assert d["bytes"] == 4 << 30


def test_end_to_end_through_the_recorder(clock: Any) -> None:
    """Recorder -> export -> load -> summary, on a fake clock: a write-bound receiver. The CPU
    accounting reads the real thread clocks, which a fake clock cannot move: off here (its rules
    are tested on recorded inputs in test_verdict_rules.py)."""
    snd = RecordingTracer("sender", cpu_accounting=False)
    rcv = RecordingTracer("receiver", cpu_accounting=False)
    for _ in range(50):
        for w in ("0", "1"):
            t0 = clock.t
            clock.advance(100_000)
            snd.span(f"tx-{w}", "read", t0, 1 << 20)
            rcv.span(f"rx-{w}", "recv", t0, 1 << 20)
            t0 = clock.t
            clock.advance(900_000)
            snd.wait(f"tx-{w}", "send", t0, "blocked")
            rcv.span(f"rx-{w}", "write", t0, 1 << 20)
    shipped = RecordingTracer.load(json.loads(json.dumps(rcv.export(include_events=False))))
    v = summarize(snd.snapshot(), shipped).verdict
    assert (v.kind, v.stage, v.side) == ("disk-bound", "write", "receiver")
