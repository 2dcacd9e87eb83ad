"""Synthetic recordings for the trace tests."""

from __future__ import annotations

from collections.abc import Mapping

from escp.trace.recorder import StageTotals, TraceData


def synthetic(role: str, workers: int, wall_s: float,
              stages: Mapping[str, tuple[float, float, float]], nbytes: int = 0) -> TraceData:
    """TraceData whose totals give each worker the same (busy, starved, blocked) seconds per stage
    as fractions of wall: stages = {"read": (0.8, 0, 0), ...}."""
    wall_ns = int(wall_s * 1e9)
    prefix = "tx" if role == "sender" else "rx"
    data = TraceData(role=role, pid=1, t_first_ns=10**9, t_last_ns=10**9 + wall_ns)  # type: ignore[arg-type]
    for i in range(workers):
        for stage, (busy, starved, blocked) in stages.items():
            data.totals[(f"{prefix}-{i}", stage)] = StageTotals(
                busy_ns=int(busy * wall_ns), starved_ns=int(starved * wall_ns), blocked_ns=int(blocked * wall_ns),
                nbytes=nbytes // workers, spans=100)
    return data
