"""Idle deadlines and keepalives over real loopback transfers (docs/protocol.md §9.10).

OP-13: a data stream that carries nothing while only small files travel (on the metadata
stream) is legitimate as long as the session makes progress. OP-14: the sender's keepalive
interval follows the receiver's effective idle timeout, so a receiver started with a short
`--timeout` does not time out on a quiet metadata stream. OP-15: the sender's own
keepalives do not count as its progress.

Slow phases are made with the ESCP_FAULT `open:delay` / `read:delay` hook on the sender
(escp/engine/faults.py); every run is bounded by the subprocess timeout.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import FakeSsh
from tests.faults.util import check_error
from tests.helpers import assert_same_tree, free_port_base, run_escp

B = 256 * 1024


def fault_env(spec: str) -> dict[str, str]:
    return {**os.environ, "ESCP_FAULT": spec}


def test_small_file_phase_longer_than_idle_timeout_completes(tmp_path: Path) -> None:
    """OP-13: ~7 s of small files (each open delayed 300 ms) with a 5 s idle deadline: the
    data streams stay silent all along, the session progresses, so it must complete."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(24):
        (src / f"s{i:02d}").write_bytes(os.urandom(1000 + i))
    dest = tmp_path / "dest"
    r = run_escp("--local", "-q", "-r", "--escp_port", str(free_port_base()), "-t", "2", "--timeout", "5",
                 src, dest, env=fault_env("open:delay:ms=300:times=inf"), timeout=60)
    assert r.code == 0, r.stderr.strip()
    assert_same_tree(src, dest)


def test_receiver_short_timeout_gets_sender_keepalives(tmp_path: Path, fake_ssh: FakeSsh,
                                                       remote_escp: Path) -> None:
    """OP-14: the receiver runs with --timeout 5, the sender with the default 60 s. While a
    big file streams slowly (~7 s) the metadata stream carries only keepalives; the sender
    must send them often enough for the receiver's idle timeout."""
    src = tmp_path / "big"
    src.write_bytes(os.urandom(10 * B))
    dest = tmp_path / "out"
    r = run_escp("-q", "--escp_port", str(free_port_base()), "-D", f"{remote_escp} --timeout 5", "-t", "1",
                 "--blocksize", "256K", src, f"localhost:{dest}",
                 env=fault_env("read:delay:ms=700:times=inf:match=big"), timeout=60)
    assert r.code == 0, r.stderr.strip()
    assert dest.read_bytes() == src.read_bytes()


def test_sender_keepalives_are_not_progress(tmp_path: Path) -> None:
    """OP-15: a source read that hangs for 14 s with --timeout 2: nothing advances, and the
    sender's own keepalives must not hold its idle deadline off. The receiver's keepalives
    stretch it to 5 x 2 s at most (KEEPALIVE_GRACE), so the sender ends with a timeout well
    before the read returns (without the fix the transfer completes after 14 s)."""
    src = tmp_path / "big"
    src.write_bytes(os.urandom(2 * B))
    dest = tmp_path / "out"
    r = run_escp("--local", "-q", "--escp_port", str(free_port_base()), "-t", "1", "--blocksize", "256K",
                 "--timeout", "2", src, dest, env=fault_env("read:delay:ms=14000:match=big"), timeout=60)
    check_error(r.code, r.stderr, [1], causes=["timeout"])
    assert "no progress for" in r.stderr, r.stderr
