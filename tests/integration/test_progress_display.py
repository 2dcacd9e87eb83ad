"""The progress display of real transfers (issue 13): on a terminal (a pty), the redrawn status
line; elsewhere (a pipe), plain lines every --progress-interval. Each transfer is held open
by the fault hook (`read:hold` on the second file until a gate file exists), so the status
must show while the transfer runs; the test reads until it saw what it looks for (bounded),
then opens the gate. Assertions are on content (a total, a %, a file name), never on timing.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from tests.conftest import FakeSsh
from tests.helpers import REPO, free_port_base, random_file

DEADLINE = 60.0  # seconds for each wait below; a held transfer never ends by itself before it
MiB = 1024 * 1024


def held_transfer(tmp_path: Path) -> tuple[list[str], dict[str, str], Path, Path]:
    """argv and environment of a --local transfer of tree/{a,b}.bin whose reads of b.bin hold
    after its first two blocks until `gate` exists; and (gate, destination)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    random_file(tree / "a.bin", 1 * MiB)
    random_file(tree / "b.bin", 2 * MiB)
    gate = tmp_path / "gate"
    dest = tmp_path / "out"
    dest.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "ESCP_FAULT": f"read:hold:after=2:times=inf:match=b.bin:file={gate}"}
    argv = [sys.executable, "-m", "escp", "--local", "--escp_port", str(free_port_base()), "-r", "-t", "2",
            "--blocksize", "256K", str(tree), str(dest)]
    return argv, env, gate, dest


def read_until(fd: int, seen: bytearray, done: object, what: str) -> None:
    """Read fd into seen until done(seen) (or EOF); fail after DEADLINE."""
    end = time.monotonic() + DEADLINE
    while not done(seen):  # type: ignore[operator]
        left = end - time.monotonic()
        assert left > 0, f"timed out waiting for {what}; got {bytes(seen)!r}"
        if not select.select([fd], [], [], min(left, 0.5))[0]:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the pty's other side is closed
            chunk = b""
        if not chunk:
            return
        seen += chunk


def status_seen(text: str) -> bool:
    """A status line with the total (3 MiB = 3.15 MB, the walk is complete), a % and the file."""
    return "%" in text and "/3.15 MB" in text and "b.bin" in text and "files" in text


def test_status_line_on_a_terminal(tmp_path: Path) -> None:
    argv, env, gate, dest = held_transfer(tmp_path)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env,
                         start_new_session=True)
    os.close(slave)
    out = bytearray()
    try:
        read_until(master, out, lambda b: any(status_seen(seg) for seg in b.decode(errors="replace")
                                              .split("\r\x1b[K")), "a status line")
    finally:
        gate.touch()
        try:
            read_until(master, out, lambda b: b"Complete:" in b, "the end of the transfer")
            assert p.wait(timeout=DEADLINE) == 0, out
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            os.close(master)
    text = out.decode(errors="replace")
    segments = text.split("\r\x1b[K")
    status = next(seg for seg in segments if status_seen(seg))
    assert "\n" not in status and len(status) < 160  # redrawn in place, within the terminal's width
    assert "1/2 files" in status or "0/2 files" in status, status
    # the status line is erased before the summary, which is in the same units
    assert segments[-1].lstrip("\r\n").startswith("Complete: 3.15 MB in 2 files at ") and " MB/s in " in text
    assert (dest / "tree" / "b.bin").stat().st_size == 2 * MiB


def test_plain_status_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    argv, env, gate, dest = held_transfer(tmp_path)
    p = subprocess.Popen([*argv, "--progress-interval", "0.2"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    assert p.stderr is not None
    err = bytearray()
    try:
        # the transfer is held: at least one status line must appear before it can complete
        read_until(p.stderr.fileno(), err, lambda b: any(status_seen(ln) for ln in b.decode().splitlines()),
                   "a plain status line")
    finally:
        gate.touch()
        try:
            read_until(p.stderr.fileno(), err, lambda b: False, "the end of stderr")
            assert p.wait(timeout=DEADLINE) == 0, err
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    lines = err.decode().splitlines()
    assert "\r" not in err.decode() and "\x1b" not in err.decode()  # nothing redrawn in a log
    status = [ln for ln in lines if ln.startswith("progress ")]
    held = next(ln for ln in status if status_seen(ln))
    assert held.endswith("b.bin") and "files" in held, held
    assert lines[-1].startswith("Complete: 3.15 MB in 2 files at "), lines
    assert all(ln.startswith(("progress ", "Complete: ")) for ln in lines), lines


def test_no_progress_in_a_pipe_unless_asked(tmp_path: Path) -> None:
    argv, env, gate, _dest = held_transfer(tmp_path)
    gate.touch()  # not held: nothing to watch
    r = subprocess.run(argv, capture_output=True, env=env, timeout=DEADLINE)
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode().splitlines() == [ln for ln in r.stderr.decode().splitlines()
                                              if ln.startswith("Complete: ")]


def test_plain_status_lines_of_a_pull(fake_ssh: FakeSsh, remote_escp: Path, tmp_path: Path) -> None:
    """A pulling escp (the receiver) shows the same figures: what arrived of what the remote
    announced, the file count, and the file being written."""
    argv, env, gate, dest = held_transfer(tmp_path)
    tree = argv[-2]
    argv = [sys.executable, "-m", "escp", "-D", str(remote_escp), "--escp_port", str(free_port_base()), "-r",
            "-t", "2", "--blocksize", "256K", "--progress-interval", "0.2", f"localhost:{tree}", str(dest)]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=fake_ssh.env(ESCP_FAULT=env["ESCP_FAULT"], PYTHONPATH=str(REPO)),
                         start_new_session=True)
    assert p.stderr is not None
    err = bytearray()

    def pulled_status(text: str) -> bool:  # the remote's walk is complete once both files are announced
        return any("/3.15 MB" in ln and "files" in ln and "b.bin" in ln for ln in text.splitlines())

    try:
        read_until(p.stderr.fileno(), err, lambda b: pulled_status(b.decode()), "a plain status line of the pull")
    finally:
        gate.touch()
        try:
            read_until(p.stderr.fileno(), err, lambda b: False, "the end of stderr")
            assert p.wait(timeout=DEADLINE) == 0, err
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    lines = err.decode().splitlines()
    held = next(ln for ln in lines if pulled_status(ln))
    assert held.startswith("progress ") and held.endswith("tree/b.bin"), held
    assert lines[-1].startswith("Complete: 3.15 MB in 2 files at "), lines
    assert (dest / "tree" / "b.bin").stat().st_size == 2 * MiB
