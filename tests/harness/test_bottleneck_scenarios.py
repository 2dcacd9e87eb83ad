"""EscpOptions.limit / .fault: the escp argv (-l) and environment (ESCP_FAULT) the harness builds,
the scenario hash, and the bottleneck-* scenarios of the full profile. No transfer is run."""

from __future__ import annotations

from pathlib import Path

import pytest

from escp.engine import faults
from escp.units import parse_rate
from harness import peers, scenarios
from harness.scenarios import EscpOptions, Scenario

FAULT = "write:delay:ms=10:times=inf"


def _has(argv: list[str], piece: list[str]) -> bool:
    return any(argv[i : i + len(piece)] == piece for i in range(len(argv)))


def _build(tool: str, opts: EscpOptions, tmp_path: Path) -> peers.Invocation:
    src = tmp_path / "src"
    src.write_bytes(b"x")
    return peers.build(tool, src, tmp_path / "d", escp=peers.EscpCommand(), opts=opts, sshd=None)


def test_limit_is_passed_as_l(tmp_path: Path) -> None:
    opts = EscpOptions(limit="100M")
    assert _has(opts.argv(), ["-l", "100M"])
    assert opts.environment() == {}
    for tool in peers.ESCP_TOOLS:
        inv = _build(tool, opts, tmp_path)
        assert _has(inv.argv, ["-l", "100M"]), tool
    assert "-l" not in EscpOptions().argv()


def test_fault_goes_into_the_escp_environment_only(tmp_path: Path) -> None:
    opts = EscpOptions(fault=FAULT)
    assert opts.environment() == {"ESCP_FAULT": FAULT}
    assert not any(FAULT in a for a in opts.argv())  # never on the command line
    for tool in peers.ESCP_TOOLS:
        inv = _build(tool, opts, tmp_path)
        assert inv.env is not None and inv.env["ESCP_FAULT"] == FAULT, tool
        assert inv.env["PYTHONPATH"].startswith(str(peers.REPO))  # still the harness's escp
    assert _build("cp", opts, tmp_path).env is None  # peers are not slowed down


def test_no_fault_clears_an_inherited_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCP_FAULT", "read:EIO")
    inv = _build("escp", EscpOptions(), tmp_path)
    assert inv.env is not None and "ESCP_FAULT" not in inv.env
    inv = _build("escp", EscpOptions(fault=FAULT), tmp_path)
    assert inv.env is not None and inv.env["ESCP_FAULT"] == FAULT


def _scenario(opts: EscpOptions) -> Scenario:
    return Scenario(name="x", dataset="tiny", escp=opts, peers=("cp",), repeats=2, warmup=1, ratio_peer="cp")


def test_hash_unchanged_without_limit_or_fault_and_covers_them() -> None:
    # the digest of this scenario before limit/fault existed: baselines keep matching
    assert _scenario(EscpOptions()).hash == "8e3ebd829e76f2cf"
    hashes = {
        _scenario(o).hash
        for o in (EscpOptions(), EscpOptions(limit="100M"), EscpOptions(limit="200M"),
                  EscpOptions(fault=FAULT), EscpOptions(fault="read:delay:ms=10:times=inf"))
    }
    assert len(hashes) == 5


def test_bottleneck_scenarios_full_profile_only() -> None:
    full = {s.name: s for s in scenarios.load(profile="full").scenarios}
    names = ["bottleneck-network", "bottleneck-cpu", "bottleneck-disk-write", "bottleneck-disk-read"]
    for name in names:
        sc = full[name]
        assert sc.peers == ("cp",) and sc.repeats == 3, name
        assert sc.dataset in ("huge-random-2g", "huge-text-1g"), name
        if sc.escp.fault:
            faults.parse(sc.escp.fault)  # a spec escp accepts (UsageError otherwise)
        if sc.escp.limit:
            assert parse_rate(sc.escp.limit) > 0
    assert full["bottleneck-network"].escp.limit
    assert full["bottleneck-cpu"].escp.compress and full["bottleneck-cpu"].dataset == "huge-text-1g"
    assert full["bottleneck-disk-write"].escp.fault.startswith("write:delay")  # type: ignore[union-attr]
    assert full["bottleneck-disk-read"].escp.fault.startswith("read:delay")  # type: ignore[union-attr]
    for profile in ("quick", "ci"):
        assert not [s for s in scenarios.load(profile=profile).scenarios if s.name.startswith("bottleneck")]
