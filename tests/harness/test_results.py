"""A scenario run with a stand-in escp (`cp -r`) yields a valid result record and a report;
wrong copies are marked failed; plots parse escp stats and traces. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import datasets, peers, plots, report, results, runner
from harness.scenarios import EscpOptions, Scenario


def _scenario(name: str = "tiny-test") -> Scenario:
    return Scenario(
        name=name, dataset="tiny", escp=EscpOptions(), peers=("cp",), repeats=2, warmup=1, ratio_peer="cp"
    )


@pytest.fixture
def tiny(tmp_path: Path) -> datasets.Dataset:
    spec = {"kind": "tiny", "files": 30, "max_size": "2K", "files_per_dir": 10}
    return datasets.ensure_dataset(tmp_path / "ds", "tiny", spec, log=lambda _: None)


def _ctx(tmp_path: Path, escp: peers.EscpCommand) -> runner.RunContext:
    run_dir = tmp_path / "reports" / "r1"
    return runner.RunContext(
        run_id="r1",
        escp=escp,
        scratch=tmp_path / "scratch",
        artifacts=run_dir / "artifacts",
        log=lambda _: None,
    )


def test_record_schema_and_report(tmp_path: Path, tiny: datasets.Dataset) -> None:
    ctx = _ctx(tmp_path, peers.EscpCommand(["cp", "-r"], plain=True))
    rec = runner.run_scenario(ctx, _scenario(), tiny)
    assert results.validate(rec) == []
    assert rec["schema"] == results.SCHEMA
    assert rec["tools"]["escp"]["status"] == "ok" and rec["tools"]["cp"]["status"] == "ok"
    assert len(rec["tools"]["escp"]["repeats"]) == 2 and len(rec["tools"]["escp"]["warmup"]) == 1
    assert all(r["verified"] for r in rec["tools"]["cp"]["repeats"])
    assert rec["ratios"]["cp"]["summary"]["n"] == 2
    for key in ("cpu_count", "kernel", "python", "memory_bytes"):
        assert key in rec["machine"]
    run_dir = tmp_path / "reports" / "r1"
    results.write_json(results.scenario_path(run_dir, rec["scenario"]["name"]), rec)
    results.write_json(run_dir / results.RUN_FILE, {"run_id": "r1", "profile": "test"})
    loaded = results.load_records(run_dir)
    assert loaded[0]["scenario_hash"] == rec["scenario_hash"]
    md = report.render(run_dir)
    text = md.read_text()
    assert "Performance targets" in text and "tiny-test" in text
    assert (run_dir / "index.html").exists()


def test_wrong_copy_marks_failed(tmp_path: Path, tiny: datasets.Dataset) -> None:
    # a "copy" tool that drops one file must be reported failed, not timed
    script = tmp_path / "badcp.sh"
    script.write_text('#!/bin/sh\ncp -r "$1" "$2" && rm "$(find "$2" -type f | head -n 1)"\n')
    script.chmod(0o755)
    ctx = _ctx(tmp_path, peers.EscpCommand([str(script)], plain=True))
    rec = runner.run_scenario(ctx, _scenario("bad"), tiny)
    escp = rec["tools"]["escp"]
    assert escp["status"] == "failed" and "missing" in escp["reason"]
    assert "summary" not in escp and "cp" not in rec["ratios"]
    assert results.validate(rec) == []


def test_escp_argv_contract(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    opts = EscpOptions(streams=8, blocksize="4M", compress=True, sparse=True)
    inv = peers.build(
        "escp",
        src,
        tmp_path / "d",
        escp=peers.EscpCommand(),
        opts=opts,
        sshd=None,
        json_report=tmp_path / "r.json",
    )
    assert inv.argv[1:5] == ["-m", "escp", "-q", "--local"]
    for piece in (
        ["-r"],
        ["-t", "8"],
        ["--blocksize", "4M"],
        ["-C"],
        ["--sparse"],
        ["--json", str(tmp_path / "r.json")],
    ):
        assert any(inv.argv[i : i + len(piece)] == piece for i in range(len(inv.argv)))
    assert inv.argv[-2:] == [str(src), str(tmp_path / "d")]
    dummy = peers.build("escp-dummy", src, tmp_path / "d", escp=peers.EscpCommand(), opts=opts, sshd=None)
    assert "dummy" in dummy.argv and not dummy.verify
    traced = peers.build("escp-traced", src, tmp_path / "d", escp=peers.EscpCommand(), opts=opts, sshd=None)
    trace_at = traced.argv.index("--trace") + 1
    assert "--stats" in traced.argv and traced.verify
    assert Path(traced.argv[trace_at]).parent == tmp_path  # beside the destination, not inside it


def test_stage_table_shapes() -> None:
    nested = {
        "sender": {"read": {"busy_s": 1.0, "wait_starved_s": 0.5, "wait_blocked_ms": 250}},
        "receiver": {"stages": {"write": {"busy_ns": 2e9}}},
        "verdict": {"kind": "disk-bound"},
    }
    t = plots.stage_table(nested)
    assert t["sender"]["read"] == {"busy": 1.0, "starved": 0.5, "blocked": 0.25}
    assert t["receiver"]["write"]["busy"] == pytest.approx(2.0)
    flat = {"stages": [{"side": "sender", "stage": "encrypt", "busy_s": 3, "wait": {"starved_s": 1}}]}
    assert plots.stage_table(flat)["sender"]["encrypt"] == {"busy": 3.0, "starved": 1.0}


def test_trace_series_bins_bytes(tmp_path: Path) -> None:
    trace = {
        "traceEvents": [
            {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "sender"}},
            {
                "ph": "X",
                "name": "send",
                "pid": 1,
                "tid": 1,
                "ts": 0,
                "dur": 100_000,
                "args": {"bytes": 1_000_000},
            },
            {
                "ph": "X",
                "name": "send",
                "pid": 1,
                "tid": 2,
                "ts": 100_000,
                "dur": 100_000,
                "args": {"bytes": 3_000_000},
            },
            {"ph": "X", "name": "wait", "pid": 1, "tid": 2, "ts": 0, "dur": 10},
        ]
    }
    series = plots.trace_series(trace, bin_s=0.1)
    times, rates = series["sender/send"]
    assert sum(r * 0.1 for r in rates) == pytest.approx(4_000_000)
    assert rates[0] == pytest.approx(10_000_000) and rates[1] == pytest.approx(30_000_000)
    f = tmp_path / "t.json"
    f.write_text(json.dumps(trace))
    assert plots.trace_throughput(f, tmp_path / "t.png") is not None


def test_budget_reduces_repeats_and_says_so(tmp_path: Path, tiny: datasets.Dataset) -> None:
    ctx = _ctx(tmp_path, peers.EscpCommand(["cp", "-r"], plain=True))
    ctx.budget_s, ctx.min_repeats = 1e-6, 1
    sc = Scenario(
        name="b", dataset="tiny", escp=EscpOptions(), peers=("cp",), repeats=4, warmup=1, ratio_peer="cp"
    )
    rec = runner.run_scenario(ctx, sc, tiny)
    assert len(rec["tools"]["escp"]["repeats"]) == 1
    assert any("instead of 4" in n for n in rec["notes"])


def test_stage_share_rows_put_tracer_and_pyspy_side_by_side() -> None:
    stats = {"stages": [
        {"side": "sender", "stage": "encrypt", "busy_s": 1.0},
        {"side": "receiver", "stage": "decrypt", "busy_s": 1.0},
        {"side": "receiver", "stage": "write", "busy_s": 2.0},
    ]}
    rows = report.stage_share_rows(stats, {"shares": {"write": 0.5, "other": 0.3, "encrypt": 0.2}})
    table = {r[0]: r[1:] for r in rows}
    assert table["write"] == ["50%", "50%"] and table["encrypt"] == ["25%", "20%"]
    assert table["decrypt"] == ["25%", "-"] and table["other"] == ["-", "30%"]
    assert [r[0] for r in rows] == ["encrypt", "decrypt", "write", "other"]  # pipeline order
    assert report.stage_share_rows(stats, None) == [] and report.stage_share_rows(stats, {"error": "x"}) == []


def test_tracer_overhead_is_judged_on_escps_own_data_phase(tmp_path: Path, tiny: datasets.Dataset) -> None:
    """Real escp against escp-traced: both runs' JSON `seconds` give a per-round ratio of the
    data phases (throughput), beside the wall ratio; the report's target is judged on it."""
    ctx = _ctx(tmp_path, peers.EscpCommand())
    sc = Scenario(name="traced-test", dataset="tiny", escp=EscpOptions(), peers=("escp-traced",), repeats=2,
                  warmup=0, ratio_peer="escp-traced")
    rec = runner.run_scenario(ctx, sc, tiny)
    assert results.validate(rec) == []
    for tool in ("escp", "escp-traced"):
        assert all(r["transfer_s"] == r["escp_json"]["seconds"] > 0 for r in rec["tools"][tool]["repeats"])
    ratio = rec["ratios"]["escp-traced"]
    assert len(ratio["transfer_time_ratio_per_round"]) == 2 and ratio["transfer_summary"]["n"] == 2
    (target,) = [t for t in report.targets([rec]) if t.key == "tracer_overhead"]
    assert target.status in ("met", "not met")
    assert "throughput" in target.evidence and "wall time" in target.evidence and "traced-test" in target.evidence
    del ratio["transfer_summary"], ratio["transfer_time_ratio_per_round"]  # a record from before the data phase
    (old,) = [t for t in report.targets([rec]) if t.key == "tracer_overhead"]
    assert old.status in ("met", "not met") and "data-phase times not recorded" in old.evidence
