"""py-spy helper: stage attribution of collapsed stacks and record command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.pyspy import attribute_lines, attribute_samples, parse_frame, record_command, stage_of_stack

BOOT = "Thread._bootstrap (threading.py:1002);Thread._bootstrap_inner (threading.py:1045);Thread.run (threading.py:982)"
SENDER = 'process 101:"python -m escp src host:dst"'
RECEIVER = 'process 202:"python -m escp --server"'

# The shape py-spy writes with --format raw --subprocesses --threads (checked against py-spy 0.3).
RAW = f"""\
{SENDER};thread (0x7f01): tx-0;{BOOT};worker_loop (escp/engine/sender.py:40);read_block (escp/engine/reader.py:22) 40
{SENDER};thread (0x7f01): tx-0;{BOOT};worker_loop (sender.py:41);block_digest (checksum.py:12) 5
{SENDER};thread (0x7f01): tx-0;{BOOT};worker_loop (sender.py:42);compress_block (compress.py:30) 20
{SENDER};thread (0x7f01): tx-0;{BOOT};worker_loop (sender.py:43);seal (cipher.py:50);AESGCM.encrypt_into (cryptography/hazmat/primitives/ciphers/aead.py:10) 10
{SENDER};thread (0x7f01): tx-0;{BOOT};worker_loop (sender.py:44);send_frame (stream.py:80) 15
{SENDER};thread (0x7f02): meta;{BOOT};run (meta.py:10);Queue.get (queue.py:171);Condition.wait (threading.py:324) 3
{SENDER};<module> (cli.py:5);main (cli.py:50) 7
{RECEIVER};thread (0x7f03): rx-0;{BOOT};worker_loop (receive.py:30);recv_into_exact (stream.py:99) 25
{RECEIVER};thread (0x7f03): rx-0;{BOOT};worker_loop (receive.py:31);open_frame (cipher.py:70) 8
{RECEIVER};thread (0x7f03): rx-0;{BOOT};worker_loop (receive.py:32);decompress_block (compress.py:60) 6
{RECEIVER};thread (0x7f03): rx-0;{BOOT};worker_loop (receive.py:33);verify_block (checksum.py:40) 4
{RECEIVER};thread (0x7f03): rx-0;{BOOT};worker_loop (receive.py:34);write_block (writer.py:15) 30
{RECEIVER};thread (0x7f03): rx-0;{BOOT};worker_loop (receive.py:35);Sender.run_sender_loop (other.py:1) 2
this line is broken
"""


def test_attribution_of_a_collapsed_stack_file(tmp_path: Path) -> None:
    path = tmp_path / "profile.txt"
    path.write_text(RAW)
    shares = attribute_samples([path])
    assert dict(shares.counts) == {
        "read": 40, "checksum": 5, "compress": 20, "encrypt": 10, "send": 15, "wait": 3, "other": 9,
        "recv": 25, "decrypt": 8, "decompress": 6, "verify": 4, "write": 30,
    }
    assert shares.total == 175 and shares.bad_lines == 1
    frac = shares.shares()
    assert list(frac)[0] == "read" and frac["read"] == pytest.approx(40 / 175)
    assert sum(frac.values()) == pytest.approx(1.0)
    rx = shares.by_root[f"{RECEIVER};thread (0x7f03): rx-0"]
    assert rx["write"] == 30 and rx["read"] == 0
    assert shares.by_root[SENDER]["other"] == 7  # main thread, no thread label


def test_several_files_accumulate(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("w (writer.py:1) 3\n")
    b.write_text("x (reader.py:1) 2\nsock_sendall (socketmodule.c:4000) 5\n")
    assert dict(attribute_samples([a, b]).counts) == {"write": 3, "read": 2, "send": 5}


@pytest.mark.parametrize("frames,stage", [
    (["main (cli.py:1)", "Sender.run (sender.py:3)"], "other"),  # 'sender' is not 'send'
    (["x (reader.py:1)", "sendall (socket.py:1)"], "send"),  # leaf wins
    (["x (sender.py:1)", "libc_recv (libc.so)"], "recv"),
    (["x (writer.py:1)", "Lock.acquire (threading.py:1)"], "wait"),
    (["x (crypto.py:9)"], "encrypt"),
    (["AESGCM.decrypt_into (aead.py:1)"], "decrypt"),
    (["thread (0x1): tx-0"], "other"),
    (["worker_loop (receive.py:1)", "open_frame (cipher.py:1)"], "decrypt"),  # direction from the stack
    (["worker_loop (receive.py:1)", "digest (checksum.py:1)"], "verify"),
    (["worker_loop (sender.py:1)", "digest (checksum.py:1)"], "checksum"),
])
def test_stage_of_stack_rules(frames: list[str], stage: str) -> None:
    assert stage_of_stack(frames) == stage


def test_parse_frame() -> None:
    assert parse_frame("read_block (escp/engine/reader.py:22)") == ("read_block", "reader.py")
    assert parse_frame("read_block (reader.py)") == ("read_block", "reader.py")  # --nolineno
    assert parse_frame("<module> (<frozen site>:616)") == ("<module>", "<frozen site>")
    assert parse_frame("weird") == ("weird", "")


def test_attribute_lines_ignores_blank_and_bad() -> None:
    s = attribute_lines(["", "x (writer.py:1) nope", " 5", "x (writer.py:1) 2"])
    assert dict(s.counts) == {"write": 2} and s.bad_lines == 2


def test_record_command_lines() -> None:
    assert record_command("/tmp/p.txt", pid=1234, rate=250) == [
        "py-spy", "record", "--format", "raw", "-o", "/tmp/p.txt", "--rate", "250", "--pid", "1234",
        "--nonblocking", "--threads"]
    cmd = record_command("out.json", command=["python", "-m", "escp", "a", "h:b"], fmt="speedscope",
                         subprocesses=True, threads=False, duration=30)
    assert cmd[:4] == ["py-spy", "record", "--format", "speedscope"]
    assert "--subprocesses" in cmd and "--threads" not in cmd and "--pid" not in cmd
    assert cmd[cmd.index("--duration") + 1] == "30"
    assert cmd[cmd.index("--") + 1:] == ["python", "-m", "escp", "a", "h:b"]
    with pytest.raises(ValueError):
        record_command("x", pid=1, command=["y"])
    with pytest.raises(ValueError):
        record_command("x")
    with pytest.raises(ValueError):
        record_command("x", pid=1, rate=0)
