"""--resume (FT-16): a copy killed at a known point (the fault hook holds the receiver's
writes after N blocks) and run again with --resume ends byte-identical and sends at most
what the killed run had not verified (plus one block per stream); anything inconsistent
(a flipped byte in the kept temp file, a damaged record, a changed source, another block
size, another file's record) restarts the file from zero, never splices.

Victims: the sender (the local escp), the receiver (its child, SIGKILL: no clean-up at
all) and the ssh channel (a stand-in ssh relay between them, SIGKILLed).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from escp.engine import resume
from tests.cases import case
from tests.conftest import FakeSsh
from tests.faults.test_ssh_faults import RELAY
from tests.faults.util import DEADLINE, Proc, process_gone, wait_for
from tests.helpers import free_port_base, local, run_escp

BS = 256 * 1024
BLOCKS = 40
SIZE = BLOCKS * BS - 1000  # the last block short
STREAMS = 2
KILL_POINTS = [4, 7, 10, 13, 17, 21, 25, 29, 33, 37]  # blocks written when the receiver is held
COMMON = ["--resume", "--blocksize", "256K", "-t", str(STREAMS)]


def record_bytes(out: Path, name: str = "src.bin") -> int:
    """Bytes the resume record next to out/name lists (0 without a readable one)."""
    try:
        r = resume.decode((out / f".{name}.escp-resume").read_bytes())
    except OSError:
        return 0
    return 0 if r is None else sum(k.length for k in r.ranges)


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def interrupt(tmp_path: Path, point: int, victim: str, remote_escp: Path | None = None) -> int:
    """Run the copy until the receiver has written `point` blocks (then its writes wait for
    a gate, and so do the sender's reads a few blocks later: however the machine schedules
    them, the copy cannot finish before the kill), kill the victim, open the gate, wait for
    every process to end; the blocks the
    record lists afterwards (what the next run may keep), in bytes."""
    src, out, gate = tmp_path / "src.bin", tmp_path / "out", tmp_path / "gate"
    hold = f"hold:times=inf:file={gate}:ms=60000"
    env = dict(os.environ, ESCP_FAULT=f"write:{hold}:after={point};read:{hold}:after={min(point + 2 * STREAMS, BLOCKS - 2)}")
    if victim == "ssh":
        assert remote_escp is not None
        relay = tmp_path / "relay-ssh"
        relay.write_text(RELAY.format(python=sys.executable, pidfile=str(tmp_path / "receiver.pid")))
        relay.chmod(0o755)
        p = Proc("-q", "-S", relay, "-D", remote_escp, "--escp_port", free_port_base(), *COMMON,
                 "--timeout", "20", src, f"localhost:{out}/", env=env)
    else:
        p = Proc("--local", "-q", "--escp_port", free_port_base(), *COMMON, "--timeout", "20", src, f"{out}/",
                 env=env)
    try:
        # the record follows the writes: once it lists the last multiple of its step below
        # `point`, the receiver has written that much and its next writes are held
        wait_for(lambda: p.p.poll() is not None or record_bytes(out) >= recorded_at(point), 2 * DEADLINE,
                 f"a record of {point} blocks")
        assert p.p.poll() is None, f"the copy ended before the kill: {p.p.communicate()[1]!r}"
        if victim == "sender":
            os.kill(p.pid, signal.SIGKILL)
        elif victim == "receiver":
            os.kill(p.wait_receiver(), signal.SIGKILL)
            gate.touch()  # the sender's reads go on: it meets the dead receiver
        else:
            for relay_pid in children(p.pid):
                os.kill(relay_pid, signal.SIGKILL)
        p.wait()
        gate.touch()  # only now: a sender that lived on could otherwise still finish the copy
        p.wait_gone()
        if victim == "ssh":
            wait_for(lambda: process_gone(int((tmp_path / "receiver.pid").read_text())), DEADLINE, "receiver exit")
    finally:
        gate.touch()
        p.kill_all()
    return record_bytes(out)


def recorded_at(point: int) -> int:
    """What the record lists at the latest once `point` blocks are written (it is renewed
    every RECORD_MIN_BLOCKS blocks, this early in a file)."""
    return point // resume.RECORD_MIN_BLOCKS * resume.RECORD_MIN_BLOCKS * BS - (BLOCKS * BS - SIZE)


def scene(tmp_path: Path) -> bytes:
    data = os.urandom(SIZE)
    (tmp_path / "src.bin").write_bytes(data)
    (tmp_path / "out").mkdir()
    return data


def rerun(tmp_path: Path, *extra: str) -> dict:
    j = tmp_path / "r.json"
    r = local(*COMMON, *extra, "--json", j, tmp_path / "src.bin", f"{tmp_path / 'out'}/")
    assert r.code == 0, r.stderr
    return json.loads(j.read_text())


def leftovers(out: Path) -> list[str]:
    return [n for n in os.listdir(out) if n != "src.bin"]


@case("FT-16")
@pytest.mark.parametrize("victim", ["sender", "receiver", "ssh"])
@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_then_resume_is_identical_and_sends_only_the_rest(tmp_path: Path, remote_escp: Path, point: int,
                                                               victim: str) -> None:
    data = scene(tmp_path)
    kept = interrupt(tmp_path, point, victim, remote_escp)
    left = os.listdir(tmp_path / "out")
    assert kept >= recorded_at(point), (kept, left)
    if victim != "receiver":  # the receiver outlived its peer: its last record lists every block written
        assert kept >= (point - STREAMS) * BS, (kept, left)
    rep = rerun(tmp_path)
    assert (tmp_path / "out" / "src.bin").read_bytes() == data
    assert SIZE - rep["bytes_sent"] >= kept - STREAMS * BS, rep
    assert rep["bytes_resumed"] == kept and rep["outcomes"][0]["status"] == "resumed", (kept, rep)
    assert leftovers(tmp_path / "out") == []  # temp file and record gone with the publish


def restarted(rep: dict) -> bool:
    return rep["bytes_sent"] == SIZE and rep["files_resumed"] == 0 and rep["outcomes"][0]["status"] == "copied"


@case("FT-16")
@pytest.mark.parametrize("damage", ["flipped byte", "truncated record", "garbled record", "changed source",
                                    "other block size", "record of another file"])
def test_anything_inconsistent_restarts_the_file_from_zero(tmp_path: Path, damage: str) -> None:
    data = scene(tmp_path)
    out = tmp_path / "out"
    assert interrupt(tmp_path, 20, "receiver") == 20 * BS
    temp, record = out / ".src.bin.escp-resume.part", out / ".src.bin.escp-resume"
    extra: tuple[str, ...] = ()
    if damage == "flipped byte":
        with open(temp, "r+b") as f:
            f.seek(5 * BS + 17)
            byte = f.read(1)
            f.seek(5 * BS + 17)
            f.write(bytes([byte[0] ^ 0x40]))
    elif damage == "truncated record":
        record.write_bytes(record.read_bytes()[:-9])
    elif damage == "garbled record":
        raw = bytearray(record.read_bytes())
        raw[30] ^= 1
        record.write_bytes(bytes(raw))
    elif damage == "changed source":
        data = os.urandom(SIZE)
        (tmp_path / "src.bin").write_bytes(data)
    elif damage == "other block size":
        extra = ("--blocksize", "512K")
    else:  # the record and temp file of src.bin, taken for another file's
        data = (tmp_path / "src.bin").read_bytes()
        (tmp_path / "src.bin").rename(tmp_path / "other.bin")
        os.rename(temp, out / ".other.bin.escp-resume.part")
        os.rename(record, out / ".other.bin.escp-resume")
        rep = rerun_named(tmp_path, "other.bin")
        assert restarted(rep) and (out / "other.bin").read_bytes() == data
        return
    rep = rerun(tmp_path, *extra)
    assert (out / "src.bin").read_bytes() == data
    if damage == "other block size":
        assert rep["bytes_sent"] == SIZE and rep["files_resumed"] == 0
    else:
        assert restarted(rep), rep
    assert leftovers(out) == []


def rerun_named(tmp_path: Path, name: str) -> dict:
    j = tmp_path / "r.json"
    r = local(*COMMON, "--json", j, tmp_path / name, f"{tmp_path / 'out'}/")
    assert r.code == 0, r.stderr
    return json.loads(j.read_text())


@case("FT-16")
def test_a_source_changed_in_place_keeps_only_the_ranges_that_still_match(tmp_path: Path) -> None:
    """Same size and mtime, another byte inside a kept range: the sender's re-hash refuses
    that range (hash-gated), the others are kept; the copy is the new source."""
    scene(tmp_path)
    assert interrupt(tmp_path, 20, "receiver") == 20 * BS
    src = tmp_path / "src.bin"
    st = os.stat(src)
    with open(src, "r+b") as f:
        f.seek(2 * BS)
        f.write(b"changed")
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    rep = rerun(tmp_path)
    assert (tmp_path / "out" / "src.bin").read_bytes() == src.read_bytes()
    assert rep["bytes_resumed"] < 20 * BS  # the range that holds the change is sent again
    assert rep["bytes_sent"] + rep["bytes_resumed"] == SIZE


def test_without_resume_the_temp_file_is_removed_and_no_record_written(tmp_path: Path) -> None:
    scene(tmp_path)
    gate = tmp_path / "gate"
    env = dict(os.environ, ESCP_FAULT=f"write:hold:after=8:times=inf:file={gate}:ms=60000")
    p = Proc("--local", "-q", "--escp_port", free_port_base(), "--blocksize", "256K", "-t", "2", "--timeout", "20",
             tmp_path / "src.bin", f"{tmp_path / 'out'}/", env=env)
    try:
        wait_for(lambda: any(n.endswith(".part") for n in os.listdir(tmp_path / "out")), DEADLINE, "a temp file")
        os.kill(p.pid, signal.SIGKILL)
        gate.touch()
        p.wait()
        p.wait_gone()
    finally:
        p.kill_all()
    assert os.listdir(tmp_path / "out") == []


def test_resume_usage_errors(tmp_path: Path) -> None:
    for extra in (["--nochecksum"], ["--sparse"]):
        r = local("--resume", *extra, tmp_path, tmp_path / "x")
        assert r.code == 2 and "--resume" in r.stderr


@case("FT-16")
@pytest.mark.parametrize("mode", ["pull", "direct", "relay"])
def test_resume_in_the_other_directions(tmp_path: Path, remote_escp: Path, fake_ssh: FakeSsh, mode: str) -> None:
    """Pull, and remote to remote directly or with -3 (over the fake ssh): every process of
    the run is SIGKILLed while the receiver is held; the re-run keeps what the receiver's
    record lists and sends the rest."""
    data = scene(tmp_path)
    out, gate = tmp_path / "out", tmp_path / "gate"
    src = f"localhost:{tmp_path / 'src.bin'}"
    dest = f"{out}/" if mode == "pull" else f"127.0.0.2:{out}/"
    extra = ["-3"] if mode == "relay" else []
    base = ["-D", str(remote_escp), "--escp_port", str(free_port_base()), *extra, *COMMON]
    hold = f"hold:times=inf:file={gate}:ms=60000"
    env = fake_ssh.env(ESCP_FAULT=f"write:{hold}:after=16;read:{hold}:after=20")
    p = Proc("-q", *base, "--timeout", "20", src, dest, env=env)
    try:
        wait_for(lambda: record_bytes(out) >= recorded_at(16), DEADLINE, "a record of 16 blocks")
    finally:
        p.kill_all()
        gate.touch()
        p.wait()
        p.wait_gone()
    kept = record_bytes(out)
    assert kept >= recorded_at(16)
    j = tmp_path / "r.json"
    r = run_escp(*base, "-q", "--json", j, src, dest, env=fake_ssh.env())
    assert r.code == 0, r.stderr
    rep = json.loads(j.read_text())
    assert (out / "src.bin").read_bytes() == data and leftovers(out) == []
    assert rep["bytes_resumed"] == kept, rep  # a direct copy: from A's report
    if mode != "direct":  # a direct copy has no wire bytes of its own (the servers' session)
        assert SIZE - rep["bytes_sent"] >= kept - STREAMS * BS, rep
