"""scp's habits that need no ssh (issue 13), with a local receiver (--local): a local DEST that
starts with `~`, -l as one limit for the whole transfer, -q never hiding a failed file, the
mode of a `.part` file while it is partial, `--json -`, and scp's flags in the configuration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from escp.cli import build_parser, config_from_args
from tests.faults.util import Proc, wait_for
from tests.helpers import free_port_base, local, random_file, run_escp

MB = 1_000_000


def test_local_dest_starting_with_tilde_is_a_name(tmp_path: Path) -> None:
    # the shell leaves a quoted '~' alone: for a local DEST it is a file name, as for cp
    src = tmp_path / "f.txt"
    src.write_bytes(b"tilde")
    r = local(src, "~", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert (tmp_path / "~").read_bytes() == b"tilde"
    r = local(src, "~x/", cwd=tmp_path)  # and a trailing slash makes it a directory
    assert r.code == 0, r.stderr
    assert (tmp_path / "~x" / "f.txt").read_bytes() == b"tilde"


def test_limit_5000_is_accepted_and_shared_by_all_streams(tmp_path: Path) -> None:
    """-l 8Mbit is 1 MB/s for the whole transfer: 3 MB over 4 streams cannot take less than
    about 3 s (the pacer's schedule; a slower machine only takes longer). Per stream it would
    have been 4 MB/s, under a second. A lower bound that holds on any machine, not a speed."""
    src = random_file(tmp_path / "big.bin", 3 * MB)
    out = tmp_path / "out"
    out.mkdir()
    report = tmp_path / "r.json"
    r = local("-l", "8Mbit", "-t", "4", "--blocksize", "256K", "--json", report, src, out)
    assert r.code == 0, r.stderr
    assert (out / "big.bin").read_bytes() == src.read_bytes()
    burst = 64 * 1024  # what an idle pacer lets go at once
    assert json.loads(report.read_text())["seconds"] >= (3 * MB - burst) / MB * 0.95
    r = local("-l", "5000", src, out)  # scp's Kbit/s: 5 Mbit/s
    assert r.code == 0, r.stderr


def test_a_limit_below_one_block_per_idle_deadline_is_refused_with_advice(tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"x")
    r = run_escp("--local", "-l", "100", src, tmp_path / "copy.txt")  # 100 Kbit/s = 12.5 kB/s
    assert r.code == 2, r.stderr
    assert "lower --blocksize or raise --timeout" in r.stderr
    r = local("-l", "100", "--blocksize", "256K", src, tmp_path / "copy.txt")
    assert r.code == 0, r.stderr


def test_quiet_still_names_every_failed_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_bytes(b"good")
    (src / "bad.txt").write_bytes(b"bad")
    out = tmp_path / "out"
    out.mkdir()
    r = local("-r", src, out, env={**os.environ, "ESCP_FAULT": "create:EACCES:match=bad.txt"})
    assert r.code == 3, r.stderr
    assert r.stderr.splitlines() == [f"escp: I/O error: {out}/src/bad.txt: cannot create file: Permission denied"]
    assert (out / "src" / "good.txt").read_bytes() == b"good"


def test_part_file_is_0600_while_partial_then_takes_its_final_mode(tmp_path: Path) -> None:
    src = random_file(tmp_path / "data.bin", 3 * 256 * 1024)
    src.chmod(0o644)
    out = tmp_path / "out"
    out.mkdir()
    gate = tmp_path / "gate"
    env = {**os.environ, "ESCP_FAULT": f"read:hold:after=1:times=inf:file={gate}"}
    p = Proc("--local", "-q", "--escp_port", str(free_port_base()), "-t", "1", "--blocksize", "256K",
             src, out, env=env)
    try:
        wait_for(lambda: any(n.endswith(".part") for n in os.listdir(out)), 30, "the temp file")
        temp = next(out / n for n in os.listdir(out) if n.endswith(".part"))
        assert temp.stat().st_mode & 0o7777 == 0o600
    finally:
        gate.touch()
    assert p.wait() == 0, p.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "data.bin").stat().st_mode & 0o7777 == 0o644 & ~umask
    assert (out / "data.bin").read_bytes() == src.read_bytes()


def test_json_dash_writes_the_report_to_stdout(tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"12345")
    r = run_escp("--local", "--escp_port", str(free_port_base()), "--json", "-", src, tmp_path / "copy.txt",
                 cwd=tmp_path)
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["bytes"] == 5 and doc["files"] == 1
    assert r.stderr.startswith("Complete: 5 B in 1 files at ")  # the human line stays on stderr
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(("flags", "relay"), [([], False), (["-3"], True), (["-R"], False), (["-3", "-R"], False)])
def test_relay_flags_reach_the_configuration(flags: list[str], relay: bool) -> None:
    cfg = config_from_args(build_parser().parse_args([*flags, "a", "host:b"]))
    assert cfg.relay is relay


def test_batch_mode_is_an_ssh_option() -> None:
    cfg = config_from_args(build_parser().parse_args(["-B", "-o", "Port=22", "a", "host:b"]))
    assert cfg.ssh.options == ("Port=22", "BatchMode=yes")


def test_x_takes_a_value_as_in_scp() -> None:
    r = run_escp("-X")
    assert r.code == 2 and r.stderr.startswith("escp: usage error: ")
