"""Shared machinery of the fault tests: a scene with sentinels, the 6.0 oracles, and
escp run as a real background process we can signal.

Oracles (reliability-tests.md 6.0):
  E  check_error(): expected exit code, one `escp: ... error:` line naming the file, no traceback
  L  Scene.check_lost(): source unchanged; pre-existing destination files unchanged or
     replaced by the complete new copy
  C  Scene.check_contained(): sentinel siblings dest2/, dest_backup/ and the parent unchanged,
     the destination root's mode and owner unchanged
  P  Scene.check_partial(): no temp file left, and every file under its final name complete
  T  Proc.wait_gone() / no_listener(): both processes gone within a deadline, no listening port
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import REPO, free_port_base

DEADLINE = 30.0  # T: every process must be gone within this many seconds
TEMP_MARK = b".escp-"


def fixed_port() -> int:
    """A random port for a receiver that may bind only this one port (--escp_portrange 1),
    below the kernel's ephemeral port range when there is room: an outgoing connection of
    any test, open or recently closed (TIME_WAIT), holding that port as its local port makes
    the receiver's bind fail with "Address already in use"."""
    try:
        lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    if lo - 10 > 20000:
        return random.randrange(20000, lo - 10, 10)
    return free_port_base()


def private_loopback() -> str:
    """A random address in 127.0.0.0/8 other than 127.0.0.1 and 127.0.0.2 (the tests' second
    host), for a receiver pinned to one port (`--bind ADDR --escp_portrange 1`). On 127.0.0.1
    any other listener on that port number (another test, another test run on this machine)
    made the receiver fail with "no free port" before a single byte flowed (FT-2 failed so
    once: the transfer failed, but not at the proxy's cut); on its own address it cannot."""
    return f"127.{random.randrange(100, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def snapshot(root: Path, skip: Iterable[str] = ()) -> dict[bytes, tuple[int, int, str, int]]:
    """rel name -> (mode, size, sha256, mtime_ns) of root and everything below (no following)."""
    out: dict[bytes, tuple[int, int, str, int]] = {}
    broot = os.fsencode(root)
    skipped = {os.fsencode(s) for s in skip}
    st = os.lstat(broot)
    out[b"."] = (st.st_mode, 0, "", 0)  # the root itself: mode only (entries change its mtime)
    for dirpath, dirnames, filenames in os.walk(broot):
        rel_dir = os.path.relpath(dirpath, broot)
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in skipped]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.relpath(full, broot))
            if rel in skipped:
                continue
            st = os.lstat(full)
            digest = ""
            if stat.S_ISREG(st.st_mode):
                assert st.st_size <= 256 * 1024 * 1024, f"snapshot of a huge file {full!r}: freeze() earlier"
                digest = hashlib.sha256(Path(os.fsdecode(full)).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(full).hex()
            mtime = 0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            out[rel] = (st.st_mode, st.st_size, digest, mtime)
    return out


def temp_files(root: Path) -> list[bytes]:
    found = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        found += [os.path.join(dirpath, n) for n in filenames + dirnames if TEMP_MARK in n and n.endswith(b".part")]
    return found


@dataclass
class Scene:
    """tmp/src (the source tree) and tmp/t/{dest,dest2,dest_backup,parent-file} (sentinels);
    addr:port is where a receiver pinned with `pinned(sc)` listens."""

    tmp: Path
    src: Path = field(init=False)
    top: Path = field(init=False)
    dest: Path = field(init=False)
    port: int = field(default_factory=fixed_port)
    addr: str = field(default_factory=private_loopback)
    before_src: dict[bytes, tuple[int, int, str, int]] = field(default_factory=dict)
    before_top: dict[bytes, tuple[int, int, str, int]] = field(default_factory=dict)
    before_dest: dict[bytes, tuple[int, int, str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.src = self.tmp / "src"
        self.top = self.tmp / "t"
        self.dest = self.top / "dest"
        self.src.mkdir()
        self.dest.mkdir(parents=True)
        for sib in ("dest2", "dest_backup"):
            (self.top / sib).mkdir()
            (self.top / sib / "x").write_bytes(b"sentinel " + sib.encode())
        (self.top / "parent-file").write_bytes(b"sentinel parent")

    @property
    def upstream(self) -> tuple[str, int]:
        """Where a receiver started with pinned(self) listens: a fault proxy's upstream."""
        return (self.addr, self.port)

    def freeze(self) -> None:
        """Record the state the oracles compare against (call after building the scene)."""
        self.before_src = snapshot(self.src)
        self.before_top = snapshot(self.top, skip=["dest"])
        self.before_dest = snapshot(self.dest)

    def check_contained(self) -> None:
        assert snapshot(self.top, skip=["dest"]) == self.before_top, "C: something outside dest changed"
        st = os.lstat(self.dest)
        assert st.st_mode == self.before_dest[b"."][0], "C: destination root's mode changed"

    def check_lost(self) -> None:
        assert snapshot(self.src) == self.before_src, "L: the source changed"
        now = snapshot(self.dest)
        for rel, old in self.before_dest.items():
            if rel == b".":
                continue
            new = now.get(rel)
            assert new is not None, f"L: pre-existing {rel!r} disappeared"
            if new[2] != old[2]:  # replaced: must be the complete new copy
                self._assert_complete_copy(rel, new)

    def _source_for(self, rel: bytes) -> Path | None:
        """The source file a destination name comes from (dest gets src's top-level names)."""
        for cand in (os.path.join(os.fsencode(self.src), rel), os.path.join(os.fsencode(self.tmp), rel)):
            if os.path.isfile(cand):
                return Path(os.fsdecode(cand))
        return None

    def _assert_complete_copy(self, rel: bytes, new: tuple[int, int, str, int]) -> None:
        source = self._source_for(rel)
        assert source is not None, f"P: {rel!r} under its final name has no source"
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        assert new[2] == digest, f"P/L: {rel!r} under its final name is not a complete copy"

    def check_partial(self) -> None:
        left = temp_files(self.dest)
        assert not left, f"P: temp files left: {left[:5]}"
        for rel, entry in snapshot(self.dest).items():
            if rel == b"." or not stat.S_ISREG(entry[0]):
                continue
            if self.before_dest.get(rel, (0, 0, None, 0))[2] == entry[2]:
                continue  # pre-existing and unchanged
            self._assert_complete_copy(rel, entry)

    def check_all(self) -> None:
        self.check_contained()
        self.check_lost()
        self.check_partial()


def pinned(sc: Scene) -> list[str]:
    """escp options that pin the receiver to exactly sc.addr:sc.port (a proxy's upstream)."""
    return ["--escp_port", str(sc.port), "--escp_portrange", "1", "--bind", sc.addr]


def check_error(code: int, stderr: str, expect_codes: Iterable[int], names: Iterable[str] = (),
                causes: Iterable[str] = ()) -> None:
    """E: exit code, an error line naming each file / cause class, no traceback."""
    expect = tuple(expect_codes)
    assert code in expect, f"E: exit code {code}, expected {expect}; stderr:\n{stderr}"
    assert "Traceback" not in stderr, f"E: traceback on stderr:\n{stderr}"
    lines = [ln for ln in stderr.splitlines() if ln.startswith("escp: ") and " error: " in ln]
    if code != 0:
        assert lines, f"E: no 'escp: ... error:' line on stderr:\n{stderr}"
    for n in names:
        assert any(n in ln for ln in lines), f"E: no error line names {n!r}:\n{stderr}"
    for c in causes:
        assert any(c in ln for ln in lines), f"E: no error line with cause {c!r}:\n{stderr}"


# --- processes --------------------------------------------------------------------------
def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries ESCP_TEST_TAG=tag (sender and local receiver)."""
    needle = f"ESCP_TEST_TAG={tag}".encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{d}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env.split(b"\0") and state != b"Z":
            pids.append(int(d))
    return pids


def receiver_pids(tag: str) -> list[int]:
    out = []
    for pid in tagged_pids(tag):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"--server" in f.read().split(b"\0"):
                    out.append(pid)
        except OSError:
            pass
    return out


def process_gone(pid: int) -> bool:
    """True once pid has exited: no /proc entry, or a zombie its parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def listening_ports(lo: int, hi: int) -> list[int]:
    """TCP ports in [lo, hi) in LISTEN state on this host (IPv4 and IPv6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            port = int(cols[1].rsplit(":", 1)[1], 16)
            if cols[3] == "0A" and lo <= port < hi:
                found.append(port)
    return found


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Proc:
    """`python -m escp` in the background, tagged so its local receiver can be found."""

    def __init__(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None,
                 preexec_fn: object = None, cwd: Path | None = None, close_fds: bool = True,
                 prefix: tuple[str, ...] = ()) -> None:
        self.tag = uuid.uuid4().hex
        e = dict(os.environ if env is None else env)
        e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
        e["ESCP_TEST_TAG"] = self.tag
        self.argv = [*prefix, sys.executable, "-m", "escp", *map(str, args)]
        self.p = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                                  cwd=cwd, start_new_session=True, preexec_fn=preexec_fn,
                                  close_fds=close_fds)  # type: ignore[arg-type]
        self.stdout = ""
        self.stderr = ""

    @property
    def pid(self) -> int:
        return self.p.pid

    def receivers(self) -> list[int]:
        return receiver_pids(self.tag)

    def wait_receiver(self, timeout: float = 20.0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pids = self.receivers()
            if pids:
                return pids[0]
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no receiver process appeared; sender rc={self.p.poll()}")

    def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for the sender (T); kill everything and fail when it outlives timeout."""
        try:
            out, err = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            out, err = self.p.communicate()
            raise AssertionError(f"T: sender still running after {timeout} s; stderr:\n"
                                 f"{err.decode(errors='replace')}") from None
        self.stdout, self.stderr = out.decode(errors="replace"), err.decode(errors="replace")
        return self.p.returncode

    def wait_gone(self, timeout: float = DEADLINE) -> None:
        """T: no process of this run (sender or receiver) is left after timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not tagged_pids(self.tag):
                return
            time.sleep(0.05)
        left = tagged_pids(self.tag)
        self.kill_all()
        raise AssertionError(f"T: processes left after {timeout} s: {left}")

    def kill_all(self) -> None:
        for pid in tagged_pids(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except OSError:
            pass
        for pid in tagged_pids(self.tag):  # SIGCONT stopped ones so SIGKILL lands
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass


def no_listener(port: int, span: int = 10, timeout: float = 10.0) -> None:
    """T: nothing listens in [port, port+span) once the run is over."""
    end = time.monotonic() + timeout
    while listening_ports(port, port + span) and time.monotonic() < end:
        time.sleep(0.05)
    assert not listening_ports(port, port + span), f"T: port left listening in {port}-{port + span - 1}"


def wait_for(pred: object, timeout: float, what: str, step: float = 0.01) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")
