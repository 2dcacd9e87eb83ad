"""FT-3/FT-4 support: stale temp files of killed sessions are swept, live ones never;
a receiver that gets SIGTERM cleans up its own temp files."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

from escp.engine.writer import sweep_stale
from tests.faults.cases import case
from tests.faults.util import Proc, Scene, check_error, no_listener, temp_files, wait_for

OLD = time.time() - 3600


def make(d: Path, name: str, old: bool = True) -> Path:
    p = d / name
    p.write_bytes(b"partial")
    if old:
        os.utime(p, (OLD, OLD))
    return p


@case("FT-3", "LD-5")
def test_sweep_removes_only_unlocked_old_foreign_temp_files(tmp_path: Path) -> None:
    stale = make(tmp_path, ".a.bin.escp-00000000000000aa.part")
    fresh = make(tmp_path, ".b.bin.escp-00000000000000bb.part", old=False)
    locked = make(tmp_path, ".c.bin.escp-00000000000000cc.part")
    mine = make(tmp_path, ".d.bin.escp-00000000000000dd.part")
    lookalike = make(tmp_path, ".e.bin.escp-notahexsession.part")
    final = make(tmp_path, "a.bin")
    target = make(tmp_path, "target")
    link = tmp_path / ".f.bin.escp-00000000000000ff.part"
    link.symlink_to(target)
    os.mkdir(tmp_path / ".g.escp-00000000000000ee.part")
    holder = os.open(locked, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert sweep_stale(dfd, b"00000000000000dd") == 1
    finally:
        os.close(dfd)
        os.close(holder)
    assert not stale.exists()
    for p in (fresh, locked, mine, lookalike, final, target):
        assert p.exists(), p
    assert link.is_symlink() and (tmp_path / ".g.escp-00000000000000ee.part").is_dir()


@case("FT-4")
def test_receiver_sigterm_removes_its_temp_files(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    (sc.src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (sc.dest / "big.bin").write_bytes(b"old")
    sc.freeze()
    # reads after the second wait for the gate: the file cannot complete first. The gate stays
    # shut until the sender has exited: released reads would race their frames against the
    # receiver's abort, and the sender could report the broken pipe instead of the signal
    gate = tmp_path / "gate"
    env = {**os.environ, "ESCP_FAULT": f"read:hold:after=2:times=inf:file={gate}"}
    p = Proc("--local", "-q", "--escp_port", str(sc.port), "--blocksize", "256K", "-t", "2", sc.src / "big.bin",
             sc.dest, env=env)
    try:
        wait_for(lambda: any(os.path.getsize(t) > 0 for t in temp_files(sc.dest)), 20, "a temp file with data")
        os.kill(p.wait_receiver(), signal.SIGTERM)
        code = p.wait()
    finally:
        gate.touch()
    check_error(code, p.stderr, [1], causes=["connection"])
    assert "signal SIGTERM" in p.stderr, p.stderr
    p.wait_gone()
    no_listener(sc.port)
    sc.check_all()  # temp removed by the receiver itself, old file intact
