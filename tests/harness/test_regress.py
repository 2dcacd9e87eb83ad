"""The regression check flags a real slowdown and ignores noise (deterministic seeds, no timing)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness import regress
from harness.stats import mann_whitney_greater, summary


def _sample(rng: random.Random, center: float, n: int = 6, sd: float = 0.03) -> list[float]:
    return [center * rng.lognormvariate(0, sd) for _ in range(n)]


def test_flags_synthetic_20_percent_slowdown() -> None:
    rng = random.Random(1234)
    base = _sample(rng, 0.80)
    new = _sample(rng, 0.80 * 1.20)
    c = regress.compare(base, new)
    assert c.change == pytest.approx(1.2, rel=0.08)
    assert c.p_value < 0.05
    assert c.regressed and not c.improved


@pytest.mark.parametrize("seed", range(20))
def test_same_distribution_not_flagged(seed: int) -> None:
    rng = random.Random(seed)
    base, new = _sample(rng, 1.0), _sample(rng, 1.0)
    assert not regress.compare(base, new).regressed


def test_big_change_without_significance_not_flagged() -> None:
    # one wild outlier moves nothing: medians stay, the test is not significant
    base = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0]
    new = [1.0, 1.01, 0.99, 1.02, 0.98, 5.0]
    assert not regress.compare(base, new).regressed


def test_significant_but_small_change_not_flagged() -> None:
    base = [1.00, 1.001, 1.002, 1.003, 1.004, 1.005]
    new = [1.05, 1.051, 1.052, 1.053, 1.054, 1.055]  # clearly different, only 5% slower
    c = regress.compare(base, new)
    assert c.p_value < 0.01 and not c.regressed


def test_improvement_reported() -> None:
    rng = random.Random(7)
    c = regress.compare(_sample(rng, 1.0), _sample(rng, 0.7))
    assert c.improved and not c.regressed


def test_mann_whitney_exact_and_ties() -> None:
    # complete separation, n = m = 3: p = 1 / C(6, 3) = 0.05
    u, p = mann_whitney_greater([6, 7, 8], [1, 2, 3])
    assert u == 9 and p == pytest.approx(0.05)
    u, p = mann_whitney_greater([1, 2, 3], [6, 7, 8])
    assert u == 0 and p == pytest.approx(1.0)
    # ties use the normal approximation and stay within [0, 1]
    _, p = mann_whitney_greater([2, 2, 3, 3], [1, 2, 2, 1])
    assert 0 < p < 0.5
    assert summary([1, 2, 3, 4])["median"] == 2.5


def _record(name: str, ratios: list[float]) -> dict:
    return {
        "schema": 1,
        "kind": "escp-bench-scenario",
        "run_id": "x",
        "scenario": {"name": name, "ratio_peer": "cp"},
        "scenario_hash": "h",
        "git": {},
        "machine": {},
        "config": {},
        "dataset": {},
        "tools": {},
        "ratios": {"cp": {"time_ratio_per_round": ratios}},
    }


def test_cli_exit_codes(tmp_path: Path) -> None:
    rng = random.Random(99)
    base_dir, same_dir, slow_dir = tmp_path / "baseline", tmp_path / "same", tmp_path / "slow"
    for d, center in ((base_dir, 1.0), (same_dir, 1.0), (slow_dir, 1.2)):
        d.mkdir()
        (d / "huge.json").write_text(json.dumps(_record("huge", _sample(rng, center))))
        (d / "run.json").write_text(json.dumps({"run_id": d.name}))
    assert regress.main([str(same_dir), "--baseline", str(base_dir)]) == 0
    assert regress.main([str(slow_dir), "--baseline", str(base_dir)]) == 1
