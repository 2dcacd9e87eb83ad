"""Like with like: escp goes over the private sshd when its peers do and --local otherwise, each
peer is compared with the escp run of its own route, the limit loop copies correctly, rounds are
shuffled and every run starts from the same state. Real sshd, real escp, real files; no timing
is asserted."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness import datasets, limit, peers, report, results, runner, sshd
from harness.scenarios import PULL, EscpOptions, Scenario
from harness.stats import spread_flag
from tests.helpers import random_file


@pytest.fixture(scope="module")
def private_sshd() -> Iterator[sshd.PrivateSshd]:
    reason = sshd.unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = sshd.PrivateSshd().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def big(tmp_path: Path) -> datasets.Dataset:
    spec = {"kind": "huge", "size": "3M", "content": "random"}
    return datasets.ensure_dataset(tmp_path / "ds", "big", spec, log=lambda _: None)


def _ctx(tmp_path: Path, server: sshd.PrivateSshd | None) -> runner.RunContext:
    return runner.RunContext(run_id="r1", escp=peers.EscpCommand(), scratch=tmp_path / "scratch",
                             artifacts=tmp_path / "reports" / "r1" / "artifacts", sshd=server,
                             sshd_reason=None if server else "not started", instrumented=False,
                             log=lambda _: None)


def _sc(peer_names: tuple[str, ...], name: str = "routes") -> Scenario:
    return Scenario(name=name, dataset="big", escp=EscpOptions(streams=2, blocksize="1M"), peers=peer_names,
                    repeats=2, warmup=0, ratio_peer=peer_names[0])


def test_escp_argv_per_route(tmp_path: Path, private_sshd: sshd.PrivateSshd) -> None:
    src = random_file(tmp_path / "f", 10)
    dest = tmp_path / "d"
    build = lambda tool, route: peers.build(tool, src, dest, escp=peers.EscpCommand(),  # noqa: E731
                                            opts=EscpOptions(), sshd=private_sshd, route=route)
    local = build("escp", peers.LOCAL).argv
    assert "--local" in local and local[-1] == str(dest)
    ssh = build("escp", peers.SSH).argv
    assert "--local" not in ssh and ssh[-1] == f"{private_sshd.host}:{dest}"
    i = ssh.index("-D")
    assert ssh[i + 1] == str(private_sshd.remote_escp) and os.access(ssh[i + 1], os.X_OK)
    assert ssh[ssh.index("-F") + 1] == str(private_sshd.client_config)
    assert "--local" in build("escp-local", peers.SSH).argv  # always local: the local peers' partner
    assert "--local" not in build("escp-dummy", peers.SSH).argv
    path = peers.PathPorts(data=("127.0.0.1", 5001), receiver_port=5002, ssh_port=5003)
    wan = peers.build("escp", src, dest, escp=peers.EscpCommand(), opts=EscpOptions(), sshd=private_sshd,
                      route=peers.SSH, path=path).argv
    for piece in (["-P", "5003"], ["--connect-to", "127.0.0.1:5001"], ["--escp_port", "5002"]):
        assert any(wan[k : k + 2] == piece for k in range(len(wan))), piece
    scp = peers.build("scp-gcm", src, dest, escp=peers.EscpCommand(), opts=EscpOptions(), sshd=private_sshd,
                      path=path).argv
    assert scp[scp.index("-P") + 1] == "5003"
    lim = peers.build("limit", src, dest, escp=peers.EscpCommand(), opts=EscpOptions(streams=3), sshd=None,
                      path=path).argv
    assert lim[lim.index("-t") + 1] == "3" and lim[lim.index("--connect-to") + 1] == "127.0.0.1:5001"


def test_escp_goes_over_ssh_like_its_peers(tmp_path: Path, big: datasets.Dataset,
                                           private_sshd: sshd.PrivateSshd) -> None:
    ctx = _ctx(tmp_path, private_sshd)
    rec = runner.run_scenario(ctx, _sc(("cp", "scp-gcm", "escp-local", "limit", "escp-dummy")), big)
    assert results.validate(rec) == []
    tools = rec["tools"]
    assert all(t["status"] == "ok" for t in tools.values()), {k: t.get("reason") for k, t in tools.items()}
    assert rec["config"]["escp_route"] == "ssh"
    assert {t: v["route"] for t, v in tools.items()} == {
        "escp": "ssh", "cp": "local", "scp-gcm": "ssh", "escp-local": "local", "limit": "local",
        "escp-dummy": "ssh"}
    assert all(r["verified"] for t in ("escp", "escp-local", "limit") for r in tools[t]["repeats"])
    escp_argv = tools["escp"]["repeats"][0]["argv"]
    assert "--local" not in escp_argv and escp_argv[-1].startswith(f"{private_sshd.host}:")
    ratios = rec["ratios"]
    assert ratios["scp-gcm"]["against"] == "escp" and ratios["scp-gcm"]["route"] == "escp ssh vs scp-gcm ssh"
    assert ratios["cp"]["against"] == "escp-local" and not ratios["cp"]["mixed_route"]
    assert ratios["limit"]["against"] == "escp-local" and ratios["limit"]["transfer_summary"]["n"] == 2
    assert ratios["escp-local"]["against"] == "escp" and ratios["escp-local"]["mixed_route"]
    for r in ratios.values():
        assert set(r["spread"]) == {"effect", "spread", "flagged"}
    # shuffled rounds: every tool once per round, its position recorded
    for rnd in range(2):
        positions = sorted(r["position"] for t in tools.values() for r in t["repeats"] if r["round"] == rnd)
        assert positions == list(range(len(tools)))
    run_dir = tmp_path / "reports" / "r1"
    results.write_json(results.scenario_path(run_dir, "routes"), rec)
    results.write_json(run_dir / results.RUN_FILE, {"run_id": "r1", "profile": "test"})
    text = report.render(run_dir).read_text()
    assert "escp ssh vs scp-gcm ssh" in text and "escp-local local vs cp local" in text
    assert "as % of the limit" in text


def test_a_pull_scenario_fetches_with_every_tool(tmp_path: Path, big: datasets.Dataset,
                                               private_sshd: sshd.PrivateSshd) -> None:
    sc = replace(_sc(("scp-gcm", "rsync-ssh"), name="pull"), direction=PULL)
    rec = runner.run_scenario(_ctx(tmp_path, private_sshd), sc, big)
    tools = rec["tools"]
    assert all(t["status"] == "ok" for t in tools.values()), {k: t.get("reason") for k, t in tools.items()}
    assert all(r["verified"] for t in tools.values() for r in t["repeats"])
    src = str(big.source())
    for tool in ("escp", "scp-gcm", "rsync-ssh"):
        argv = tools[tool]["repeats"][0]["argv"]
        assert argv[-2].removesuffix("/") == f"{private_sshd.host}:{src}", argv  # the host's file, fetched here
        assert not argv[-1].startswith(f"{private_sshd.host}:"), argv
    assert rec["ratios"]["scp-gcm"]["route"] == "escp ssh vs scp-gcm ssh"
    without = runner.run_scenario(_ctx(tmp_path / "no-sshd", None), replace(sc, name="pull2"), big)
    assert all(t["status"] == "skipped" and "sshd" in t["reason"] for t in without["tools"].values())


def test_without_sshd_only_local_peers(tmp_path: Path, big: datasets.Dataset) -> None:
    rec = runner.run_scenario(_ctx(tmp_path, None), _sc(("cp", "rsync-ssh", "scp", "escp-local")), big)
    tools = rec["tools"]
    assert rec["config"]["escp_route"] == "local"
    assert "rsync-ssh" not in tools and tools["rsync"]["status"] == "ok" and tools["rsync"]["route"] == "local"
    assert tools["scp"]["status"] == "skipped" and "sshd" in tools["scp"]["reason"]
    assert tools["escp-local"]["status"] == "skipped"
    assert set(rec["ratios"]) == {"cp", "rsync"}
    assert all(r["route"].startswith("escp local vs") for r in rec["ratios"].values())
    assert "--local" in tools["escp"]["repeats"][0]["argv"]


@pytest.mark.parametrize("streams,size", [(1, 5 * (1 << 20) + 12345), (3, 3 * (1 << 20)), (4, 100)])
def test_limit_loop_copies_the_file(tmp_path: Path, streams: int, size: int) -> None:
    src = random_file(tmp_path / "src", size)
    dest = tmp_path / "dest"
    seconds = limit.copy(src, dest, streams=streams, blocksize=1 << 20)
    assert seconds > 0 and dest.read_bytes() == src.read_bytes()
    into = tmp_path / "into"
    into.mkdir()
    assert limit.main(["-t", str(streams), "--json", str(tmp_path / "j"), str(src), str(into)]) == 0
    assert (into / "src").read_bytes() == src.read_bytes()  # a directory DEST gets SRC's name
    assert json.loads((tmp_path / "j").read_text())["bytes"] == size


def test_limit_fails_when_nothing_listens(tmp_path: Path) -> None:
    src = random_file(tmp_path / "src", 1000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, not listening: connections are refused
        assert limit.main(["--connect-to", f"127.0.0.1:{dead}", str(src), str(tmp_path / "d")]) == 1


def test_write_and_free_leaves_nothing(tmp_path: Path) -> None:
    runner._write_and_free(tmp_path / "ballast", 3 << 20)
    assert list(tmp_path.iterdir()) == []


def test_spread_flag() -> None:
    assert spread_flag([0.9, 1.0, 1.1]) == pytest.approx({"effect": 0.0, "spread": 0.2, "flagged": True})
    assert spread_flag([0.25, 0.26, 0.3])["flagged"] is False
    assert spread_flag([1.0, 2.0], relative=True) == {"spread": pytest.approx(2 / 3)}
    assert spread_flag([]) == {}
