"""WAN scenarios: loaded from scenarios.toml with their emulated path, selected by `--only wan`,
run through the path emulator (escp with --connect-to, the limit loop), accounted, and drawn
against the ceiling in the report. Real escp, real sockets; no timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import datasets, peers, publish, report, results, runner, scenarios, wanreport
from harness.scenarios import EscpOptions, PathOptions, Scenario


def test_profiles_carry_the_wan_scenarios() -> None:
    quick = scenarios.load(profile="quick").scenarios
    default = [s for s in quick if not s.on_demand]
    assert [s.name for s in default if s.path] == [f"wan-quick-s{t}" for t in (1, 2, 4, 8, 16)]
    wan = [s for s in quick if s.matches("wan")]
    for rtt in (20, 60, 150):
        names = {s.name for s in wan if s.path and s.path.rtt_ms == rtt}
        assert {f"wan-rtt{rtt}-s{t}" for t in (1, 2, 4, 8, 16)} <= names
        assert {f"wan-rtt{rtt}-bs-b{b}" for b in ("256K", "1M", "4M", "16M")} <= names
        assert f"wan-rtt{rtt}-peers" in names
    for s in wan:
        assert s.path is not None and s.path.window == "4M" and s.path.bottleneck == "1Gbit"
        spec = s.path.spec()
        assert spec.rate_bytes_per_s == 125e6 and spec.window_bytes == 4 << 20
        assert "limit" in s.peers
    assert not [s for s in quick if s.on_demand and not s.path]
    assert all(s.matches("wan") for s in scenarios.load(profile="full").scenarios if s.path)


def test_path_options_and_hash() -> None:
    opts = PathOptions.from_dict({"rtt_ms": 150, "window": "4M", "bottleneck": "1Gbit", "stalls": [[1, 0.5]]})
    spec = opts.spec()
    assert spec.rtt_s == 0.15 and spec.stalls == ((1.0, 0.5),)
    assert spec.ceiling(1) == pytest.approx((4 << 20) / 0.15) and spec.ceiling(16) == 125e6
    assert opts.spec(user_space_rate=False).rate_bytes_per_s is None
    base = Scenario(name="w", dataset="d", escp=EscpOptions(), peers=("limit",), repeats=1, warmup=0,
                    ratio_peer="limit")
    with_path = Scenario(**{**base.__dict__, "path": opts})
    assert base.hash != with_path.hash
    assert Scenario(**{**base.__dict__, "tags": ("wan",), "on_demand": True}).hash == base.hash


def test_a_wan_scenario_runs_through_the_emulator(tmp_path: Path) -> None:
    ds = datasets.ensure_dataset(tmp_path / "ds", "w", {"kind": "huge", "size": "2M", "content": "random"},
                                 log=lambda _: None)
    path = PathOptions(rtt_ms=20, window="256K", bottleneck="40M")  # 12.8 MB/s a stream, 40 MB/s in all
    sc = Scenario(name="wan-t-s2", dataset="w", escp=EscpOptions(streams=2, blocksize="256K"), peers=("limit",),
                  repeats=1, warmup=0, ratio_peer="limit", group="wan-t", x=2, path=path, tags=("wan",))
    run_dir = tmp_path / "reports" / "r1"
    ctx = runner.RunContext(run_id="r1", escp=peers.EscpCommand(), scratch=tmp_path / "scratch",
                            artifacts=run_dir / "artifacts", log=lambda _: None, pyspy=False)
    rec = runner.run_scenario(ctx, sc, ds)
    assert results.validate(rec) == []
    assert {t: v["status"] for t, v in rec["tools"].items()} == {"escp": "ok", "limit": "ok"}
    for tool in ("escp", "limit"):
        rep = rec["tools"][tool]["repeats"][0]
        assert rep["verified"] and rep["transfer_s"] > 0
        data = rep["path"]["data"]
        assert data["bytes"] >= ds.total_bytes  # every byte crossed the emulated path
        assert data["connections"] == (3 if tool == "escp" else 2)  # escp adds its metadata stream
        assert "--connect-to" in rep["argv"]
    assert rec["path"]["ceiling_Bps"] == pytest.approx(2 * (256 << 10) / 0.02)
    inst = rec["instrumented"]["escp_json"]["stats"]
    assert [row["worker"] for row in inst["tcp"]] == ["tx-1", "tx-2"]  # TCP_INFO of both streams
    results.write_json(results.scenario_path(run_dir, sc.name), rec)
    results.write_json(run_dir / results.RUN_FILE, {"run_id": "r1", "profile": "test"})
    text = report.render(run_dir).read_text()
    assert "WAN: throughput against streams" in text and "plots/wan-wan-t.png" in text
    assert (run_dir / "plots" / "wan-wan-t.png").stat().st_size > 0
    (row,) = wanreport.table([rec])
    assert row[0] == "wan-t-s2" and row[3] == f"{rec['path']['ceiling_Bps'] / 1e6:.1f}"
    # published for git: report, plots and slim records that still render the WAN section
    dest = publish.publish(run_dir, tmp_path / "example")
    assert (dest / "report.md").read_text() == text and (dest / "plots" / "wan-wan-t.png").exists()
    assert not (dest / "artifacts").exists()
    (slim,) = results.load_records(dest)
    rep = slim["tools"]["escp"]["repeats"][0]
    assert "argv" not in rep and set(rep["escp_json"]) <= set(publish.ESCP_JSON_KEPT) and rep["path"]
    assert slim["instrumented"]["escp_json"]["stats"]["tcp"] and slim["path"] == rec["path"]
    assert "WAN: throughput against streams" in report.render(dest).read_text()
