"""HP-15 .. HP-19 and HP-32: a hostile RECEIVER against the real sender, plus the
'hostile basics' of the remote start (fake ssh modes missing/banner/junk/refuse/hang).

The real `python -m escp` sender runs tests/hostile/rx_peer.py as its ssh program
(`-S`), which plays the receiver (real handshake, real keys) and misbehaves.
Oracles: E (clear one-line error, right exit code, no traceback, escaped), never a
success exit for a file the receiver did not truly verify, T (process gone in time).
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.cases import case
from tests.faults.util import fixed_port, private_loopback, wait_for
from tests.helpers import escp_argv, free_port_base
from tests.hostile.oracles import check_e, check_t
from tests.hostile.peer import child_env
from tests.hostile.proxy import FrameProxy

CTRL_RAW = ("\x1b", "\x07", "\x9b", "\r")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    p = tmp_path / "src.bin"
    p.write_bytes(os.urandom(600_000))
    return p


@case("HP-15")
def test_honest_hostile_receiver_baseline(hostile_rx, src: Path) -> None:  # type: ignore[no-untyped-def]
    """The harness itself: an honest scripted receiver gives success (so failures below are real)."""
    r, rec = hostile_rx(src, "honest", "--blocksize", "256K", "-t", "2")
    assert r.code == 0, (r.stderr, rec)


@case("HP-15")
@pytest.mark.parametrize("scenario", ["ok_unknown", "ok_twice", "ok_early", "session_done_early"])
def test_impossible_success_reports(hostile_rx, src: Path, scenario: str) -> None:  # type: ignore[no-untyped-def]
    r, rec = hostile_rx(src, scenario, "--blocksize", "256K", "-t", "2", "--timeout", "5")
    check_e(r.code, r.stderr, cause=("protocol", "integrity"), codes=(1, 3))
    assert "Complete:" not in r.stderr


@case("HP-16")
def test_success_with_a_digest_that_differs(hostile_rx, src: Path) -> None:  # type: ignore[no-untyped-def]
    r, rec = hostile_rx(src, "bad_digest", "--blocksize", "256K")
    assert not rec.get("peer_errors"), rec["peer_errors"]
    # named where the bad copy is: the destination (DEST's name, as the receiver renamed src.bin)
    line = check_e(r.code, r.stderr, cause="integrity", codes=(1,), name="hostile.invalid:")
    assert "digest" in line and line.split(": ")[2].endswith("/ignored"), line


@case("HP-17", "HP-14")
def test_huge_error_with_control_characters(hostile_rx, src: Path) -> None:  # type: ignore[no-untyped-def]
    r, rec = hostile_rx(src, "huge_error", "--blocksize", "256K")
    check_e(r.code, r.stderr, cause="I/O", codes=(1,), name="hostile.invalid:")  # the receiver's failure
    assert len(r.stderr) < 20_000, "a peer's error message must be cut"
    assert not any(c in r.stderr for c in CTRL_RAW)
    assert "\\x1b" in r.stderr


@case("HP-17", "HP-14")
def test_abort_with_control_characters(hostile_rx, src: Path) -> None:  # type: ignore[no-untyped-def]
    r, _ = hostile_rx(src, "ctrl_abort")
    line = check_e(r.code, r.stderr, cause="connection", codes=(1,))
    assert "receiver says" in line and "\\x1b" in line


@case("HP-17")
def test_malformed_messages_from_receiver(hostile_rx, src: Path) -> None:  # type: ignore[no-untyped-def]
    r, _ = hostile_rx(src, "malformed")
    check_e(r.code, r.stderr, cause="protocol", codes=(1,))


@case("HP-17", "HP-12")
def test_keepalive_flood_from_receiver(hostile_rx, src: Path) -> None:  # type: ignore[no-untyped-def]
    r, rec = hostile_rx(src, "keepalive_flood", "--blocksize", "256K", count=100_000)
    assert not rec.get("peer_errors"), rec["peer_errors"]
    assert r.code == 0, r.stderr  # processed, bounded (the flood is just slow noise)


@case("HP-18")
@pytest.mark.parametrize("scenario", ["zero_window", "silent"])
def test_receiver_that_never_reads_or_never_replies(hostile_rx, tmp_path: Path, scenario: str) -> None:  # type: ignore[no-untyped-def]
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 << 20)  # more than any socket buffer: the sender must block, then time out
    t0 = time.monotonic()
    r, _ = hostile_rx(big, scenario, "--timeout", "1", timeout=60)
    assert time.monotonic() - t0 < 40
    line = check_e(r.code, r.stderr, cause="timeout", codes=(1,))
    assert "progress" in line


@case("HP-19")
@pytest.mark.parametrize("scenario", ["banner", "junk_magic"])
def test_junk_instead_of_the_greeting(hostile_rx, src: Path, scenario: str) -> None:  # type: ignore[no-untyped-def]
    r, rec = hostile_rx(src, scenario, "--timeout", "5")
    line = check_e(r.code, r.stderr, cause="protocol", codes=(1,))
    key = bytes.fromhex(rec["key"])
    for form in _key_forms(key):
        assert form not in r.stderr
    if scenario == "banner":
        assert "unexpected output" in line and "Welcome" in line


@case("HP-18", "HP-19")
def test_a_server_waiting_forever_for_a_port_is_not_waited_for_forever(hostile_rx, src: Path) -> None:  # type: ignore[no-untyped-def]
    """A waiting server proves it lives with SetupProgress (protocol.md §2.11), but each one
    only extends the set-up deadline up to the longest wait the initiator allowed: a server
    that claims an endless wait still ends in a timeout, named as a wait. Its words reach the
    user's terminal (-v, the error) escaped."""
    r, _ = hostile_rx(src, "waiting_forever", "-v", "--timeout", "1")
    line = check_e(r.code, r.stderr, cause="timeout", codes=(1,))  # also: no raw control characters
    assert "did not answer" in line and "waiting" in line and "busy" in line
    assert "escp: receiver: every port in 1-65535 on \\x1b[31mRED" in r.stderr


# --- issue-2 hostile basics: the remote start fails in every way (fake ssh) -------------------


@case("HP-19")
@pytest.mark.parametrize("mode,cause,text", [
    ("missing", "connection", "not found"),
    ("refuse", "auth", "Permission denied"),  # ssh reached the host but could not log in
    ("junk", "protocol", "unexpected output"),
    ("banner", "protocol", "unexpected output"),
    ("exit0", "connection", "exited"),
    ("hang", "timeout", "did not answer"),
])
def test_remote_start_failures(fake_ssh, remote_escp, tmp_path: Path, src: Path, tag: str,  # type: ignore[no-untyped-def]
                               mode: str, cause: str, text: str) -> None:
    fake_ssh.set_mode(mode)
    fake_ssh.monkeypatch.setenv("ESCP_FAKESSH_HANG_SECONDS", "20")
    t0 = time.monotonic()
    p = subprocess.run(escp_argv("-q", "-D", str(remote_escp), "--timeout", "2", "--escp_port",
                                 str(free_port_base()), src, f"localhost:{tmp_path / 'out'}"),
                       capture_output=True, timeout=60, env=child_env(), text=True)
    assert time.monotonic() - t0 < 25, "the sender must not wait past its set-up deadline (10 s)"
    line = check_e(p.returncode, p.stderr, cause=cause, codes=(1,))
    assert text in line, line
    assert not (tmp_path / "out").exists()
    check_t(tag)


# --- HP-32 the session key never leaves the ssh pipe ---------------------------------------------


def _key_forms(key: bytes) -> list[str]:
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), base64.b64encode(key).decode().rstrip("="),
            repr(key)[2:-1]]


def _proc_blobs(pid: int) -> bytes:
    out = b""
    for what in ("cmdline", "environ"):
        try:
            out += Path(f"/proc/{pid}/{what}").read_bytes() + b"\n"
        except OSError:
            pass
    return out


@case("HP-32")
def test_session_key_not_in_argv_env_or_logs(tmp_path: Path, tag: str) -> None:
    import json
    import shlex
    import sys

    from tests.hostile.conftest import RX_PEER

    wrapper = tmp_path / "relay-ssh"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.join([sys.executable, str(RX_PEER)])} \"$@\"\n")
    wrapper.chmod(0o755)
    record = tmp_path / "rec.json"
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    out = tmp_path / "out"
    out.mkdir()
    addr, port = private_loopback(), fixed_port()  # the receiver binds only there (see private_loopback)
    log = tmp_path / "escp.log"
    env = child_env({"ESCP_HOSTILE_RX": json.dumps({"scenario": "relay", "record": str(record)})})
    with FrameProxy((addr, port), throttle=1_500_000) as proxy:
        p = subprocess.Popen(escp_argv("-v", "--logfile", str(log), "-S", str(wrapper), "--escp_port", str(port),
                                       "--escp_portrange", "1", "--bind", addr, "--connect-to", proxy.connect_to,
                                       "--blocksize", "256K", "-t", "1", "--json", str(tmp_path / "r.json"),
                                       src, f"host.invalid:{out}"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        seen: dict[int, bytes] = {}

        def both_ends() -> list[int]:
            try:
                rec = json.loads(record.read_text())
            except (OSError, ValueError):  # not written yet, or half written
                return []
            return [p.pid, rec["pid"], rec["receiver_pid"]] if "receiver_pid" in rec else []

        wait_for(lambda: both_ends() and proxy.frames_seen.get((1, "c2s"), 0) > 1 or p.poll() is not None, 30,
                 "data flowing between both ends")
        proxy.pause()  # the session cannot end while both ends are looked at
        try:
            for pid in both_ends():
                blob = _proc_blobs(int(pid))
                if blob:
                    seen[int(pid)] = blob
        finally:
            proxy.resume()
        stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr
    rec = json.loads(record.read_text())
    assert {p.pid, rec["pid"], rec["receiver_pid"]} <= set(seen), "could not observe both ends while running"
    key = bytes.fromhex(rec["key"])
    texts = [stdout + stderr, (tmp_path / "r.json").read_bytes()]
    texts += [f.read_bytes() for f in tmp_path.glob("escp.log*")]
    for blob in list(seen.values()) + texts:
        assert key not in blob
        for form in _key_forms(key):
            assert form.encode() not in blob
    assert (out / "src.bin").read_bytes() == src.read_bytes()
    check_t(tag)
