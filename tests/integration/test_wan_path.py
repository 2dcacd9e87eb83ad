"""escp over an emulated long fat pipe (harness/pathemu.py: delay, window, bottleneck, stalls),
its data streams through the emulator with --connect-to: the copy completes intact through a
short stall and reports TCP_INFO per stream; a stall longer than --timeout ends the session with
a timeout error and leaves nothing under the final name. Real escp processes, real sockets on
127.0.0.1; rates of a few MB/s; no timing is asserted beyond the stall the test itself injects."""

from __future__ import annotations

import os
from pathlib import Path

from harness.pathemu import PathEmulator, PathSpec
from harness.wan import free_port
from tests.helpers import Run, random_file, run_escp

KiB = 1024


def escp_over(emu: PathEmulator, *args: str | os.PathLike[str]) -> Run:
    receiver = free_port()
    relay = emu.add_route(("127.0.0.1", receiver))
    return run_escp("--local", "--escp_port", str(receiver), "--escp_portrange", "1",
                    "--connect-to", f"127.0.0.1:{relay}", *args, timeout=90)


def test_copy_over_a_long_fat_pipe_survives_a_stall(tmp_path: Path) -> None:
    src = random_file(tmp_path / "src", 8 << 20)
    stall = 0.8
    spec = PathSpec(rtt_s=0.05, window_bytes=256 * KiB, rate_bytes_per_s=8e6, stalls=((0.3, stall),))
    with PathEmulator(spec) as emu:
        r = escp_over(emu, "-q", "-t", "3", "--stats", src, tmp_path / "dst")
        times = sorted(d.t for d in emu.deliveries() + emu.deliveries(direction="s2c"))
        crossed = sum(d.nbytes for d in emu.deliveries())
    assert r.code == 0, r.stderr
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()
    assert crossed >= 8 << 20  # every byte went through the emulated path
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) >= stall - 0.05  # the stall happened
    assert "TCP_INFO per stream" in r.stderr and "tx-3" in r.stderr


def test_a_stall_longer_than_the_timeout_ends_the_session(tmp_path: Path) -> None:
    src = random_file(tmp_path / "src", 8 << 20)
    dest_dir = tmp_path / "d"
    dest_dir.mkdir()
    spec = PathSpec(rtt_s=0.05, window_bytes=256 * KiB, rate_bytes_per_s=4e6, stalls=((0.3, 120.0),))
    with PathEmulator(spec) as emu:
        r = escp_over(emu, "--timeout", "2", "-t", "2", src, dest_dir / "copy")
    assert r.code == 1, r.stderr
    assert "timeout error" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(dest_dir.iterdir()) == []  # no partial file, under its name or a temporary one
