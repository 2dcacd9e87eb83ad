"""Bottlenecks injected from outside escp, for the verdict matrix (harness/verdicts.py) and tests.

Users meet slow transfers through things escp does not control: a CPU quota, a busy
neighbour, a slow link, a slow disk. Each injection here is a context manager that creates
what it needs and removes it on exit, even when the body raised:

- SideCgroup: a cgroup of our own with a CPU quota (v1 `cpu.cfs_quota_us`, v2 `cpu.max`),
  a CPU weight (`cpu.shares`, `cpu.weight`) and, in v2, a disk limit (`io.max`). A side's escp joins it through the launcher
  (harness/launch.py) before it execs, so only that process is in it.
- CpuHogs: busy loops pinned to some CPUs; each ends by itself at its deadline.
- NetnsLink: a network namespace with `lo` up and `tc qdisc ... tbf` on it; both sides run
  inside (`ip netns exec`).
- SlowDisk: an ext4 file system on a loop device, mounted `-o sync` (every write waits for
  the device), rate-limited with blkio: in v1 the root's `blkio.throttle.*_bps_device` for
  this device only (writes of a sync mount are issued on behalf of the root's writeback
  group, so a child group's limit would not apply), in v2 `io.max` of the side's cgroup.

facility_missing() says why an injection cannot run here (not root, no cpu controller, no
`ip`/`tc`/`losetup`...), for skip reasons. Everything created is named escp-inj-<pid>-N;
sweep_stale() removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from escp.trace.sched import parse_mountinfo, parse_proc_cgroup

PREFIX = "escp-inj-"
PERIOD_US = 100_000  # CFS period of our quotas
DEFAULT_SHARES, DEFAULT_WEIGHT = 1024, 100  # a cgroup's CPU weight by default: v1 cpu.shares, v2 cpu.weight
RMDIR_DEADLINE_S = 10.0  # a cgroup's last tasks may take a moment to leave
COMMAND_TIMEOUT_S = 60
_seq = itertools.count(1)


class InjectionError(RuntimeError):
    """An injection could not be set up (the message says which step and why)."""


def _name() -> str:
    return f"{PREFIX}{os.getpid()}-{next(_seq)}"


def _run(*argv: str) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InjectionError(f"{' '.join(argv)}: {exc}") from None
    if r.returncode != 0:
        raise InjectionError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return r.stdout


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise InjectionError(f"cannot write {text.strip()!r} to {path}: {exc.strerror}") from None


# -- where the cgroup hierarchies are ---------------------------------------------------


@dataclass(frozen=True)
class CgroupLayout:
    version: int  # 1 or 2
    cpu_root: Path  # the hierarchy (v1: the cpu controller's mount; v2: the unified mount)
    home: Path  # this process's cgroup in it
    blkio_root: Path | None  # v1 blkio mount (device throttles); None in v2


def cgroup_layout() -> CgroupLayout | None:
    """The cgroup hierarchy with the cpu controller, or None when there is none."""
    try:
        mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
        groups = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError:
        return None
    blkio = next((Path(p) for fs, p, _r, opts in mounts if fs == "cgroup" and "blkio" in opts), None)
    for _hid, ctl, path in groups:
        if "cpu" in ctl:
            for fs, point, root, opts in mounts:
                if fs == "cgroup" and "cpu" in opts and root == "/":
                    return CgroupLayout(1, Path(point), Path(point) / path.lstrip("/"), blkio)
    for hid, ctl, path in groups:
        if hid == "0" and not ctl:
            for fs, point, root, _opts in mounts:
                if fs == "cgroup2" and root == "/" and "cpu" in _controllers(Path(point)):
                    return CgroupLayout(2, Path(point), Path(point) / path.lstrip("/"), None)
    return None


def _controllers(cg: Path) -> list[str]:
    try:
        return (cg / "cgroup.controllers").read_text().split()
    except OSError:
        return []


def facility_missing(*needs: str) -> str | None:
    """Why the injections needing these facilities cannot run here ("cgroup", "netns", "loop"),
    or None when they can."""
    if os.geteuid() != 0:
        return "needs root (creates cgroups, network namespaces, loop devices)"
    if "cgroup" in needs and cgroup_layout() is None:
        return "no cgroup hierarchy with the cpu controller (v1 cpu or v2 cpu.max)"
    for need, tools in (("netns", ("ip", "tc")), ("loop", ("losetup", "mkfs.ext4", "mount", "umount"))):
        if need in needs:
            missing = [t for t in tools if shutil.which(t) is None]
            if missing:
                return f"{', '.join(missing)} not installed"
    if "loop" in needs:
        if not os.path.exists("/dev/loop-control"):
            return "no loop devices (/dev/loop-control missing)"
        layout = cgroup_layout()
        if layout is None or (layout.version == 1 and layout.blkio_root is None):
            return "no blkio (v1) or io (v2) controller to throttle a device"
    return None


# -- CPU quota -----------------------------------------------------------------------------


class SideCgroup(contextlib.AbstractContextManager["SideCgroup"]):
    """A cgroup for one side's escp process, with an optional CPU quota in cores and an optional
    CPU weight relative to the default (10: ten times the share of an ordinary task group)."""

    def __init__(self, cpu_quota_cores: float | None = None, weight: int | None = None) -> None:
        layout = cgroup_layout()
        if layout is None:
            raise InjectionError("no cgroup hierarchy with the cpu controller")
        self.layout = layout
        self.quota = cpu_quota_cores
        self.weight = weight
        self.path = layout.cpu_root / _name()

    def __enter__(self) -> SideCgroup:
        if self.layout.version == 2:
            _enable(self.layout.cpu_root, "cpu")
        try:
            self.path.mkdir()
        except OSError as exc:
            raise InjectionError(f"cannot create cgroup {self.path}: {exc.strerror}") from None
        try:
            if self.quota is not None:
                quota_us = max(1000, round(self.quota * PERIOD_US))
                if self.layout.version == 1:
                    _write(self.path / "cpu.cfs_period_us", str(PERIOD_US))
                    _write(self.path / "cpu.cfs_quota_us", str(quota_us))
                else:
                    _write(self.path / "cpu.max", f"{quota_us} {PERIOD_US}")
            if self.weight is not None:
                if self.layout.version == 1:
                    _write(self.path / "cpu.shares", str(DEFAULT_SHARES * self.weight))
                else:
                    _write(self.path / "cpu.weight", str(DEFAULT_WEIGHT * self.weight))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def limit_io(self, device: str, read_bps: int | None, write_bps: int | None) -> None:
        """v2 io.max for a device "MAJ:MIN" on this cgroup. Writeback is charged to a cgroup only
        when it has both the memory and the io controller, so memory is enabled too when there."""
        _enable(self.layout.cpu_root, "io")
        if "memory" in _controllers(self.layout.cpu_root):
            _enable(self.layout.cpu_root, "memory")
        limits = " ".join(f"{k}={v}" for k, v in (("rbps", read_bps), ("wbps", write_bps)) if v)
        _write(self.path / "io.max", f"{device} {limits}\n")

    def __exit__(self, *exc: object) -> None:
        remove_cgroup(self.path, self.layout.home)


def _enable(parent: Path, controller: str) -> None:
    """v2: let the children of parent use a controller (cgroup.subtree_control)."""
    control = parent / "cgroup.subtree_control"
    if controller not in control.read_text().split():
        _write(control, f"+{controller}")


def remove_cgroup(path: Path, home: Path) -> None:
    """Move what is left in a cgroup back home, then remove it (bounded wait)."""
    deadline = time.monotonic() + RMDIR_DEADLINE_S
    while path.exists():
        try:
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):  # the task may have exited meanwhile
                    (home / "cgroup.procs").write_text(pid)
            path.rmdir()
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- CPU hogs ------------------------------------------------------------------------------

_HOG = (
    "import os, sys, time\n"
    "os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(',')})\n"
    "os.setpriority(os.PRIO_PROCESS, 0, int(sys.argv[3]))\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)


class CpuHogs(contextlib.AbstractContextManager["CpuHogs"]):
    """`count` busy loops pinned to `cpus` at nice level `nice`, each ending by itself after
    `seconds`. A negative nice (root) makes a neighbour that outweighs whatever else runs on
    those CPUs, so that the side sharing them is clearly the one starved."""

    def __init__(self, cpus: list[int], count: int, seconds: float, nice: int = 0) -> None:
        self.cpus, self.count, self.seconds, self.nice = cpus, count, seconds, nice
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuHogs:
        cpus = ",".join(map(str, self.cpus))
        for _ in range(self.count):
            self.procs.append(subprocess.Popen([sys.executable, "-c", _HOG, str(self.seconds), cpus, str(self.nice)],
                                               stdin=subprocess.DEVNULL))
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=COMMAND_TIMEOUT_S)


# -- a rate-limited link ---------------------------------------------------------------


class NetnsLink(contextlib.AbstractContextManager["NetnsLink"]):
    """A network namespace whose loopback is limited by tc tbf (rate like "400mbit")."""

    def __init__(self, rate: str, burst: str = "256kb", latency: str = "20ms") -> None:
        self.rate, self.burst, self.latency = rate, burst, latency
        self.name = _name()
        self.created = False

    def __enter__(self) -> NetnsLink:
        _run("ip", "netns", "add", self.name)
        self.created = True
        try:
            _run("ip", "-n", self.name, "link", "set", "lo", "up")
            # tbf's burst must hold one loopback packet (64 KiB MTU), else nothing passes
            _run(*self.prefix(), "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", self.rate,
                 "burst", self.burst, "latency", self.latency)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def prefix(self) -> list[str]:
        """argv prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def __exit__(self, *exc: object) -> None:
        if self.created:
            _run("ip", "netns", "del", self.name)
            self.created = False


# -- a slow disk -------------------------------------------------------------------------


class SlowDisk(contextlib.AbstractContextManager["SlowDisk"]):
    """An ext4 of size_mb on a loop device, mounted -o sync at self.mount (a fresh directory).
    Call throttle() after putting the data it needs there."""

    def __init__(self, size_mb: int) -> None:
        self.size_mb = size_mb
        self.work = Path(tempfile.mkdtemp(prefix=_name() + "-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK)
                                          else None))
        self.backing = self.work / "disk.img"
        self.mount = self.work / "mnt"
        self.device: str | None = None  # /dev/loopN
        self.majmin = ""
        self.mounted = False
        self.blkio_files: list[Path] = []

    def __enter__(self) -> SlowDisk:
        try:
            with open(self.backing, "wb") as f:
                f.truncate(self.size_mb << 20)
            self.device = _run("losetup", "-f", "--show", str(self.backing)).strip()
            rdev = os.stat(self.device).st_rdev
            self.majmin = f"{os.major(rdev)}:{os.minor(rdev)}"
            _run("mkfs.ext4", "-q", "-F", self.device)
            self.mount.mkdir()
            _run("mount", "-o", "sync", self.device, str(self.mount))
            self.mounted = True
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def throttle(self, read_bps: int | None = None, write_bps: int | None = None,
                 cgroup: SideCgroup | None = None) -> None:
        """Limit the device: v1 for every process (the root's throttle), v2 for cgroup's processes."""
        layout = cgroup_layout()
        if layout is not None and layout.version == 1 and layout.blkio_root is not None:
            for kind, bps in (("read", read_bps), ("write", write_bps)):
                if bps:
                    f = layout.blkio_root / f"blkio.throttle.{kind}_bps_device"
                    _write(f, f"{self.majmin} {bps}")
                    self.blkio_files.append(f)
        elif cgroup is not None:
            cgroup.limit_io(self.majmin, read_bps, write_bps)
        else:
            raise InjectionError("v2 needs the side's cgroup to throttle a device")

    def __exit__(self, *exc: object) -> None:
        for f in self.blkio_files:
            with contextlib.suppress(OSError):
                f.write_text(f"{self.majmin} 0")
        if self.mounted:
            _run("umount", str(self.mount))
            self.mounted = False
        if self.device:
            _run("losetup", "-d", self.device)
            self.device = None
        shutil.rmtree(self.work, ignore_errors=True)


# -- leftovers ---------------------------------------------------------------------------


def _owner_alive(name: str) -> bool:
    pid = name.removeprefix(PREFIX).split("-", 1)[0]
    return pid.isdigit() and os.path.exists(f"/proc/{pid}")


def sweep_stale() -> list[str]:
    """Remove injections left by runs that died (their pid is gone); what was removed."""
    removed: list[str] = []
    layout = cgroup_layout()
    if layout is not None and layout.cpu_root.is_dir():
        for cg in layout.cpu_root.glob(PREFIX + "*"):
            if not _owner_alive(cg.name):
                with contextlib.suppress(OSError):
                    remove_cgroup(cg, layout.home)
                    removed.append(str(cg))
    removed += _sweep_disks()
    if shutil.which("ip"):
        with contextlib.suppress(InjectionError):
            for line in _run("ip", "netns", "list").splitlines():
                ns = line.split()[0] if line.split() else ""
                if ns.startswith(PREFIX) and not _owner_alive(ns):
                    with contextlib.suppress(InjectionError):
                        _run("ip", "netns", "del", ns)
                        removed.append(f"netns {ns}")
    return removed


def _sweep_disks() -> list[str]:
    """SlowDisk leftovers of dead runs: their mounts, loop devices and work directories."""
    removed: list[str] = []
    dirs = [d for base in ("/dev/shm", tempfile.gettempdir()) for d in Path(base).glob(PREFIX + "*")
            if not _owner_alive(d.name)]
    if not dirs:
        return removed
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4]
            if any(point.startswith(str(d) + "/") for d in dirs):
                with contextlib.suppress(InjectionError):
                    _run("umount", point)
                    removed.append(f"mount {point}")
    with contextlib.suppress(InjectionError):
        for line in _run("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").splitlines():
            name, _, backing = line.strip().partition(" ")
            if any(backing.strip().startswith(str(d) + "/") for d in dirs):
                with contextlib.suppress(InjectionError):
                    _run("losetup", "-d", name)
                    removed.append(f"loop {name}")
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    return removed


__all__ = [
    "InjectionError",
    "CgroupLayout",
    "cgroup_layout",
    "facility_missing",
    "SideCgroup",
    "remove_cgroup",
    "CpuHogs",
    "NetnsLink",
    "SlowDisk",
    "sweep_stale",
]
