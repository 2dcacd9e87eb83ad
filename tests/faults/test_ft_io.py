"""FT-9..FT-15: disk full, fsync and write errors, short writes, permission denied,
few file descriptors, little memory, clock jumps.

Write-side faults use real limits where this machine has them (a 1 MiB tmpfs mounted by
the test, chattr +i, setrlimit) and the ESCP_FAULT hook (escp/engine/faults.py) for the
rest (fsync EIO, EDQUOT, short writes, EINTR, EAGAIN).
"""

from __future__ import annotations

import ast
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from escp.net.control import SessionControl
from tests.faults.cases import case
from tests.faults.util import Proc, Scene, check_error, no_listener, private_loopback, wait_for
from tests.helpers import REPO, assert_same_tree

B = 256 * 1024


def run(sc: Scene, *extra: str, env: dict[str, str] | None = None, preexec_fn: object = None,
        sources: list[Path] | None = None, timeout: float = 60) -> Proc:
    srcs = [str(s) for s in (sources or [sc.src])]
    e = dict(os.environ if env is None else env)
    p = Proc("--local", "-q", "--escp_port", str(sc.port), "--blocksize", "256K", *extra, *srcs, str(sc.dest),
             env=e, preexec_fn=preexec_fn)
    p.wait(timeout)
    p.wait_gone()
    no_listener(sc.port)
    return p


def fault_env(spec: str) -> dict[str, str]:
    return {**os.environ, "ESCP_FAULT": spec}


def files_scene(tmp_path: Path, sizes: dict[str, int], old: dict[str, bytes] | None = None) -> Scene:
    sc = Scene(tmp_path)
    for name, size in sizes.items():
        (sc.src / name).parent.mkdir(parents=True, exist_ok=True)
        (sc.src / name).write_bytes(os.urandom(size))
    for name, data in (old or {}).items():
        (sc.dest / name).parent.mkdir(parents=True, exist_ok=True)
        (sc.dest / name).write_bytes(data)
    return sc


# --- FT-9: disk full -----------------------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at tmp_path/t/dest (root only); unmounted afterwards."""
    mnt = tmp_path / "t" / "dest"
    mnt.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=755", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        mnt.rmdir()
        (tmp_path / "t").rmdir()
        pytest.skip(f"FT-9 needs root to mount a 1 MiB tmpfs: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def tmpfs_scene(tmp_path: Path, sizes: dict[str, int], old: dict[str, bytes]) -> Scene:
    """Scene whose dest is the mounted tmpfs (Scene.__post_init__ tolerates the existing dir)."""
    sc = Scene.__new__(Scene)
    sc.tmp = tmp_path
    sc.src, sc.top, sc.dest = tmp_path / "src", tmp_path / "t", tmp_path / "t" / "dest"
    from tests.helpers import free_port_base

    sc.port, sc.addr = free_port_base(), private_loopback()
    sc.src.mkdir()
    for sib in ("dest2", "dest_backup"):
        (sc.top / sib).mkdir()
        (sc.top / sib / "x").write_bytes(b"sentinel")
    (sc.top / "parent-file").write_bytes(b"sentinel parent")
    for name, size in sizes.items():
        (sc.src / name).write_bytes(os.urandom(size))
    for name, data in old.items():
        (sc.dest / name).write_bytes(data)
    sc.freeze()
    return sc


@case("FT-9")
def test_disk_full_mid_file_keeps_old_file_and_says_no_space(tiny_fs: Path, tmp_path: Path) -> None:
    sc = tmpfs_scene(tmp_path, {"big.bin": 3 * 1024 * 1024, "small.txt": 1000}, {"big.bin": b"old big"})
    t0 = time.monotonic()
    p = run(sc, "-t", "4", sources=[sc.src / "small.txt", sc.src / "big.bin"])  # small first: it fits
    assert time.monotonic() - t0 < 30
    check_error(p.p.returncode, p.stderr, [3], names=["big.bin"], causes=["I/O"])
    assert "no space left on device" in p.stderr
    assert "checksum" not in p.stderr  # the right message, not a digest mismatch (rsync #899)
    assert (sc.dest / "big.bin").read_bytes() == b"old big"
    assert (sc.dest / "small.txt").read_bytes() == (sc.src / "small.txt").read_bytes()
    sc.check_all()


@case("FT-9")
def test_disk_full_on_the_very_first_write(tiny_fs: Path, tmp_path: Path) -> None:
    sc = tmpfs_scene(tmp_path, {"a.bin": 600_000}, {"filler": b"\0" * (1024 * 1024 - 8192)})
    p = run(sc, sources=[sc.src / "a.bin"])
    check_error(p.p.returncode, p.stderr, [1], names=["a.bin"], causes=["I/O"])
    assert "no space left on device" in p.stderr
    assert not (sc.dest / "a.bin").exists()
    sc.check_all()


@case("FT-9")
@pytest.mark.parametrize("op", ["fsync", "rename"])
def test_no_space_at_fsync_or_rename(tmp_path: Path, op: str) -> None:
    sc = files_scene(tmp_path, {"f.bin": 3 * B + 5, "g.bin": 100}, {"f.bin": b"old f"})
    sc.freeze()
    p = run(sc, "--fsync", env=fault_env(f"{op}:ENOSPC:match=f.bin"), sources=[sc.src / "f.bin", sc.src / "g.bin"])
    check_error(p.p.returncode, p.stderr, [3], names=["f.bin"], causes=["I/O"])
    assert "no space left on device" in p.stderr
    assert (sc.dest / "f.bin").read_bytes() == b"old f"
    sc.check_all()


# --- FT-10: fsync fails once ---------------------------------------------------------------
@case("FT-10")
def test_fsync_eio_once_fails_that_file(tmp_path: Path) -> None:
    sc = files_scene(tmp_path, {"a.bin": 2 * B, "b.bin": 2 * B + 1, "c.bin": 7}, {"b.bin": b"old b"})
    sc.freeze()
    p = run(sc, "--fsync", env=fault_env("fsync:EIO:match=b.bin"),
            sources=[sc.src / "a.bin", sc.src / "b.bin", sc.src / "c.bin"])
    check_error(p.p.returncode, p.stderr, [3], names=["b.bin"], causes=["I/O"])
    assert "Input/output error" in p.stderr
    assert (sc.dest / "b.bin").read_bytes() == b"old b"  # never retried-and-trusted
    for n in ("a.bin", "c.bin"):
        assert (sc.dest / n).read_bytes() == (sc.src / n).read_bytes()
    sc.check_all()


@case("FT-10", "FT-9")
@pytest.mark.parametrize("after", [0, 1, 5])
def test_write_eio_at_block_n(tmp_path: Path, after: int) -> None:
    sc = files_scene(tmp_path, {"big.bin": 8 * B + 3, "x.txt": 10}, {"big.bin": b"old"})
    sc.freeze()
    p = run(sc, "-t", "3", env=fault_env(f"write:EIO:after={after}:match=big.bin"),
            sources=[sc.src / "big.bin", sc.src / "x.txt"])
    check_error(p.p.returncode, p.stderr, [3], names=["big.bin"], causes=["I/O"])
    assert (sc.dest / "big.bin").read_bytes() == b"old"
    sc.check_all()


# --- FT-11: short writes, EINTR, EAGAIN ------------------------------------------------------
@case("FT-11")
def test_short_writes_eintr_eagain_give_identical_output(tmp_path: Path) -> None:
    sc = files_scene(tmp_path, {"a.bin": 5 * B + 17, "d/b.bin": 3 * B, "d/c.bin": 1})
    sc.freeze()
    spec = "write:short:times=inf;write:EINTR:times=40;write:EAGAIN:after=3:times=40;read:short:times=inf;" \
           "read:EINTR:times=20"
    p = run(sc, "-r", "-t", "3", env=fault_env(spec))
    assert p.p.returncode == 0, p.stderr
    assert_same_tree(sc.src, sc.dest / "src")
    sc.check_all()


# --- FT-12: permission denied in a subdirectory; quota ---------------------------------------
@case("FT-12")
def test_immutable_subdirectory_fails_only_its_files(tmp_path: Path) -> None:
    """Root ignores mode bits, so the subdirectory is made immutable with chattr +i."""
    if not shutil.which("chattr"):
        pytest.skip("FT-12 needs chattr (e2fsprogs) to deny root writes")
    sc = files_scene(tmp_path, {"ok/a.txt": 100, "locked/b.txt": 200, "locked/c.txt": 300, "z.txt": 5},
                     {"src/locked/b.txt": b"old b"})
    locked = sc.dest / "src" / "locked"
    r = subprocess.run(["chattr", "+i", str(locked)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i not supported here: {r.stderr.decode(errors='replace').strip()}")
    try:
        sc.freeze()
        p = run(sc, "-r")
        check_error(p.p.returncode, p.stderr, [3], names=["locked/b.txt", "locked/c.txt"], causes=["I/O"])
        assert "Operation not permitted" in p.stderr
        assert (locked / "b.txt").read_bytes() == b"old b"
        assert not (locked / "c.txt").exists()
        for n in ("ok/a.txt", "z.txt"):
            assert (sc.dest / "src" / n).read_bytes() == (sc.src / n).read_bytes()
        sc.check_all()
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)


@case("FT-12")
def test_quota_exceeded_in_a_subdirectory_via_fault_hook(tmp_path: Path) -> None:
    sc = files_scene(tmp_path, {"q/a.bin": 2 * B, "q/b.bin": 10, "free/c.bin": 3 * B})
    sc.freeze()
    p = run(sc, "-r", env=fault_env("create:EDQUOT:times=inf:match=/q/"))
    check_error(p.p.returncode, p.stderr, [3], names=["q/a.bin", "q/b.bin"], causes=["I/O"])
    assert (sc.dest / "src" / "free" / "c.bin").read_bytes() == (sc.src / "free" / "c.bin").read_bytes()
    assert not (sc.dest / "src" / "q" / "a.bin").exists()
    sc.check_all()


# --- FT-13: few file descriptors; descriptors above 1024 -----------------------------------
def low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


# exec'd in front of escp: occupies every descriptor up to ~1100 (inherited, no holes), so
# every descriptor escp opens itself is above 1024
HIGH_FDS = ("import os, resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))\n"
            "for _ in range(1100):\n"
            "    os.set_inheritable(os.open('/dev/null', os.O_RDONLY), True)\n"
            "os.execv(sys.argv[1], sys.argv[1:])\n")


@case("FT-13")
@pytest.mark.parametrize("streams", [4, 16])
def test_rlimit_nofile_64_with_many_files(tmp_path: Path, streams: int) -> None:
    sc = Scene(tmp_path)
    for i in range(1500):
        d = sc.src / f"d{i % 60}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i % 300))
    (sc.src / "big.bin").write_bytes(os.urandom(3 * B))
    sc.freeze()
    p = run(sc, "-r", "-t", str(streams), preexec_fn=low_nofile, timeout=120)
    if p.p.returncode == 0:
        assert_same_tree(sc.src, sc.dest / "src")
    else:  # allowed: a clean E, never a hang or a traceback
        check_error(p.p.returncode, p.stderr, [1, 3])
    sc.check_all()


def high_sockets(pid: int) -> list[int]:
    """Descriptors above 1024 of pid that are sockets (escp's own: the inherited ones are /dev/null)."""
    found = []
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            if int(name) > 1024 and os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                found.append(int(name))
    except OSError:  # the process is gone, or a descriptor closed while we looked
        pass
    return found


@case("FT-13")
def test_descriptors_above_1024_work(tmp_path: Path) -> None:
    """The sender inherits 1100 open descriptors, so its pipes and sockets are all above
    1024, where select() cannot go (rsync highfd-hang). The sender's reads of a.bin are held
    by the fault hook (`read:hold`) until the test has seen its sockets above 1024; then the
    transfer must complete."""
    sc = files_scene(tmp_path, {"a.bin": 3 * B, "b.txt": 10})
    sc.freeze()
    gate = tmp_path / "gate"
    p = Proc("--local", "-q", "--escp_port", str(sc.port), "--blocksize", "256K", "-r", sc.src, sc.dest,
             prefix=(sys.executable, "-c", HIGH_FDS), env=fault_env(f"read:hold:times=inf:match=a.bin:file={gate}"))
    try:
        wait_for(lambda: high_sockets(p.pid) or p.p.poll() is not None, 30, "sender sockets above 1024")
        seen = high_sockets(p.pid)
    finally:
        gate.touch()
    p.wait(60)
    p.wait_gone()
    assert seen, f"the held sender had no socket above descriptor 1024; stderr:\n{p.stderr}"
    assert p.p.returncode == 0, p.stderr
    assert_same_tree(sc.src, sc.dest / "src")


# --- FT-14: little memory ---------------------------------------------------------------------
def limit_as(nbytes: int) -> object:
    def fn() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return fn


@case("FT-14")
def test_rlimit_as_low_gives_clean_out_of_memory(tmp_path: Path) -> None:
    """64 MiB blocks on 8 streams need ~1 GiB of buffers; 700 MiB of address space is enough
    to start, not to run: a clean 'out of memory' error, nothing published."""
    sc = files_scene(tmp_path, {"a.bin": 3 * B}, {"a.bin": b"old a"})
    sc.freeze()
    p = Proc("--local", "-q", "--escp_port", str(sc.port), "--blocksize", "64M", "-t", "8", sc.src / "a.bin",
             sc.dest, preexec_fn=limit_as(700 * 1024 * 1024))
    code = p.wait(60)
    p.wait_gone()
    no_listener(sc.port)
    check_error(code, p.stderr, [1], causes=["memory"])
    assert "out of memory" in p.stderr
    assert (sc.dest / "a.bin").read_bytes() == b"old a"
    sc.check_all()


# --- FT-15: monotonic clock -------------------------------------------------------------------
WALL_CLOCK = re.compile(r"\btime\.(time|time_ns)\(|datetime\.(now|utcnow|today)\(|\btime\.(localtime|ctime)\(")
ALLOWED = "wall-clock: not a deadline"


@case("FT-15")
def test_static_no_wall_clock_for_deadlines() -> None:
    """Every wall-clock read in the product is marked as not being a deadline."""
    offenders = []
    for path in sorted((REPO / "escp").rglob("*.py")):
        if "/fb/" in str(path):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if WALL_CLOCK.search(line) and ALLOWED not in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "wall clock used without the marker:\n" + "\n".join(offenders)
    # and the deadline code itself is written against time.monotonic
    for mod in ("escp/net/control.py", "escp/net/conn.py", "escp/net/spawn.py", "escp/net/streams.py",
                "escp/net/receive.py", "escp/net/server.py"):
        tree = ast.parse((REPO / mod).read_text())
        calls = {f"{n.func.value.id}.{n.func.attr}" for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and isinstance(n.func.value, ast.Name) and n.func.value.id == "time"}
        assert "time.time" not in calls, mod


@case("FT-15")
def test_wall_clock_jumps_do_not_expire_the_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    """SessionControl.wait with a 1 s deadline while time.time jumps by +-1 day: progress
    keeps it alive; it expires only once the monotonic clock says so."""
    import threading

    jumps = iter([0.0, 86400.0, -86400.0] * 1000)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + next(jumps))
    ctl = SessionControl(1.0)
    stop = threading.Event()

    def feeder() -> None:
        end = time.monotonic() + 2.5
        while time.monotonic() < end and not stop.is_set():
            ctl.progress()
            time.sleep(0.05)
        ctl.finish()

    t = threading.Thread(target=feeder, daemon=True)
    t.start()
    ctl.wait(poll=0.02)
    stop.set()
    t.join(5)
    assert ctl.error is None and ctl.done.is_set()
    ctl2 = SessionControl(0.3)
    t0 = time.monotonic()
    ctl2.wait(poll=0.02)
    assert ctl2.error is not None and "no progress" in ctl2.error.message
    assert 0.25 < time.monotonic() - t0 < 5


SITE = """
import time as _t
_real = _t.time
_n = [0]
def _jumpy():
    _n[0] += 1
    return _real() + (3600.0 if _n[0] % 2 else -3600.0)
_t.time = _jumpy
"""


@case("FT-15")
def test_transfer_survives_wall_clock_jumps(tmp_path: Path) -> None:
    """A real paced transfer longer than --timeout while every time.time() call jumps by an
    hour either way (sitecustomize in both processes): no spurious expiry."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    sc = files_scene(tmp_path, {"a.bin": 4 * B, "b.bin": 3})
    sc.freeze()
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    from tests.faults.proxy import FaultProxy

    with FaultProxy(sc.upstream, rate=300_000) as proxy:
        p = run(sc, "-r", "-t", "1", "--timeout", "2", "--escp_portrange", "1", "--bind", sc.addr,
                "--connect-to", proxy.address, env=env)
    assert p.p.returncode == 0, p.stderr
    assert_same_tree(sc.src, sc.dest / "src")
