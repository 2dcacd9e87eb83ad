"""Where a traced thread's time goes: on a CPU, waiting for one, or blocked.

A stage's wall time cannot tell a thread that waited on the disk or the socket from one that
was runnable but had no CPU (a cgroup quota, a busy neighbour). Linux says which, cheaply:

- per thread, `/proc/thread-self/schedstat` holds the ns spent on a CPU, the ns spent
  runnable on a run queue (`run_delay`, which includes time throttled by a CFS quota) and
  the number of timeslices. ThreadClock keeps that file open and preads it (~1.2 µs); the
  on-CPU figure comes from CLOCK_THREAD_CPUTIME_ID (~0.7 µs), which is exact, where the
  file's own figure lags by up to a scheduler tick while the thread runs. The reading
  thread is running, so its run_delay is complete up to the moment of reading.
- per process: involuntary / voluntary context switches and CPU time (getrusage);
- per cgroup: CFS bandwidth throttling (`cpu.stat` nr_periods / nr_throttled /
  throttled_time in cgroup v1, throttled_usec in v2) and the quota (`cpu.cfs_quota_us` /
  `cpu.cfs_period_us` in v1, `cpu.max` in v2), for the process's cgroup and its ancestors;
- per host: CPU pressure (`/proc/pressure/cpu`, "some" total in µs), when the kernel has PSI,
  and the boot id, which tells whether the two sides share a host (and so its CPUs).

CpuProbe snapshots the process, cgroup and host counters at the start and end of a recording
and reports their differences (cpu_context); what it could not read is listed under "unseen"
so that the verdict can say what it did not see. The parsers take file text and the cgroup
readers a root directory, so that tests run them on recorded inputs.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from time import monotonic_ns, thread_time_ns
from typing import Any

SCHEDSTAT = "/proc/thread-self/schedstat"
PROC_CGROUP = "/proc/self/cgroup"
MOUNTINFO = "/proc/self/mountinfo"
PSI_CPU = "/proc/pressure/cpu"
BOOT_ID = "/proc/sys/kernel/random/boot_id"  # the same on both sides: they share a host and its CPUs
US = 1000  # ns per µs
CLEAN_READ_NS = 50_000  # a schedstat reading slower than this was preempted midway: read again
READ_TRIES = 4


class SchedstatUnavailable(OSError):
    """The kernel gives no per-thread schedstat (no file, or sched_info turned off)."""


def parse_schedstat(text: bytes | str) -> tuple[int, int, int]:
    """(on-CPU ns, runnable ns, timeslices) from a schedstat line such as b"397304944 22846159 67\\n"."""
    fields = text.split()
    if len(fields) < 3:
        raise ValueError(f"schedstat has {len(fields)} fields, not 3")
    cpu, runq, slices = int(fields[0]), int(fields[1]), int(fields[2])
    if min(cpu, runq, slices) < 0:
        raise ValueError("negative schedstat field")
    return cpu, runq, slices


class ThreadClock:
    """The calling thread's on-CPU and runnable clocks; create it in the thread it measures.

    read() -> (monotonic ns, on-CPU ns, runnable ns). The schedstat fd is closed when the
    object goes (with the thread's local storage when its thread ends)."""

    __slots__ = ("fd",)

    def __init__(self, path: str = SCHEDSTAT) -> None:
        self.fd = -1
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            cpu, runq, slices = parse_schedstat(os.pread(self.fd, 64, 0))
        except (OSError, ValueError) as exc:
            self.close()
            raise SchedstatUnavailable(f"{path}: {exc}") from None
        if cpu == runq == slices == 0 and thread_time_ns() > 0:  # "0 0 0": sched_info is off
            self.close()
            raise SchedstatUnavailable(f"{path}: the kernel does not collect it (all zero)")

    def cpu_time(self) -> tuple[int, int] | None:
        """(monotonic ns, on-CPU ns) of one instant, the cheap half of read() (~1 µs) for a
        thread that stayed on its CPU; None when the pair was not read cleanly."""
        t0 = monotonic_ns()
        cpu = thread_time_ns()
        t1 = monotonic_ns()
        return (t1, cpu) if t1 - t0 < CLEAN_READ_NS else None

    def read(self) -> tuple[int, int, int]:
        """(monotonic ns, on-CPU ns, runnable ns) of one instant.

        The three reads are two system calls, and a thread that has used up its slice is
        preempted on the way out of a system call: the wait would then fall between the
        reads and be booked in the wrong interval. A reading that took longer than
        CLEAN_READ_NS is taken again (at most READ_TRIES times)."""
        for _ in range(READ_TRIES):
            t0 = monotonic_ns()
            cpu = thread_time_ns()  # before schedstat: it also brings the kernel's own figure up to date
            runq = int(os.pread(self.fd, 64, 0).split()[1])
            t1 = monotonic_ns()
            if t1 - t0 < CLEAN_READ_NS:
                break
        return t1, cpu, runq

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


# -- cgroups ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupCpu:
    """CPU bandwidth state of one cgroup directory."""

    path: str
    version: int  # 1 or 2
    quota_cores: float | None  # quota / period; None: no limit
    periods: int
    throttled: int  # periods in which the cgroup ran out of quota
    throttled_ns: int


def parse_proc_cgroup(text: str) -> list[tuple[str, list[str], str]]:
    """(hierarchy id, controllers, path) per line of /proc/PID/cgroup ("4:cpu,cpuacct:/a", "0::/b")."""
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            hid, ctl, path = parts
            out.append((hid, [c for c in ctl.split(",") if c], path))
    return out


def parse_mountinfo(text: str) -> list[tuple[str, str, str, list[str]]]:
    """(fs type, mount point, root within the fs, super options) of each cgroup mount."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or not tail[0].startswith("cgroup"):
            continue
        out.append((tail[0], _unescape(fields[4]), _unescape(fields[3]), tail[2].split(",")))
    return out


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def cpu_cgroup_dirs(proc_cgroup: str, mountinfo: str) -> tuple[int, list[Path]]:
    """The cgroup version with the cpu controller and the directories of the process's cgroup
    and its ancestors, innermost first, below the mount point ((0, []) when none is mounted)."""
    groups = parse_proc_cgroup(proc_cgroup)
    mounts = parse_mountinfo(mountinfo)
    for _hid, ctl, path in groups:  # v1: the hierarchy that has the cpu controller
        if "cpu" in ctl:
            for fstype, point, root, opts in mounts:
                if fstype == "cgroup" and "cpu" in opts:
                    return 1, _chain(point, root, path)
    for hid, ctl, path in groups:  # v2: the unified hierarchy, if cpu is enabled there
        if hid == "0" and not ctl:
            for fstype, point, root, _opts in mounts:
                if fstype == "cgroup2" and "cpu" in _read(Path(point) / "cgroup.controllers", "").split():
                    return 2, _chain(point, root, path)
    return 0, []


def _chain(point: str, root: str, path: str) -> list[Path]:
    rel = path
    if root != "/" and (path == root or path.startswith(root + "/")):
        rel = path[len(root):]  # a mount of a sub-tree (containers)
    parts = [p for p in rel.split("/") if p]
    base = Path(point)
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def parse_cpu_stat(text: str) -> dict[str, int]:
    """cpu.stat "key value" lines as a dict (v1: throttled_time in ns, v2: throttled_usec)."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def parse_cpu_max(text: str) -> float | None:
    """v2 cpu.max ("max 100000" or "25000 100000") as cores; None: no limit."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    period = int(fields[1]) if len(fields) > 1 else 100_000
    return int(fields[0]) / period if period > 0 else None


def parse_v1_quota(quota: str, period: str) -> float | None:
    """v1 cpu.cfs_quota_us (-1: none) / cpu.cfs_period_us as cores; None: no limit."""
    q, p = int(quota.strip() or -1), int(period.strip() or 0)
    return q / p if q > 0 and p > 0 else None


def read_cgroup_cpu(path: Path, version: int) -> CgroupCpu | None:
    """The bandwidth state of one cgroup directory; None when its cpu.stat is unreadable."""
    stat_text = _read(path / "cpu.stat", None)
    if stat_text is None:
        return None
    stat = parse_cpu_stat(stat_text)
    if version == 1:
        quota = parse_v1_quota(_read(path / "cpu.cfs_quota_us", "-1"), _read(path / "cpu.cfs_period_us", "0"))
        throttled_ns = stat.get("throttled_time", 0)
    else:
        quota = parse_cpu_max(_read(path / "cpu.max", "max"))
        throttled_ns = stat.get("throttled_usec", 0) * US
    return CgroupCpu(str(path), version, quota, stat.get("nr_periods", 0), stat.get("nr_throttled", 0),
                     throttled_ns)


def read_cgroups(proc_root: Path = Path("/proc/self")) -> tuple[list[CgroupCpu], str | None]:
    """The cpu cgroups of this process, innermost first, and why they are missing (or None)."""
    proc_cgroup = _read(proc_root / "cgroup", None)
    mountinfo = _read(proc_root / "mountinfo", None)
    if proc_cgroup is None or mountinfo is None:
        return [], "no /proc/self/cgroup"
    version, dirs = cpu_cgroup_dirs(proc_cgroup, mountinfo)
    if not dirs:
        return [], "no cgroup with the cpu controller"
    found = [cg for cg in (read_cgroup_cpu(d, version) for d in dirs) if cg is not None]
    return found, None if found else f"cgroup v{version} cpu.stat not readable"


def _read(path: Path, default: Any) -> Any:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return default


def parse_psi_some_total(text: str) -> int | None:
    """The "some" line's total (µs a task waited for a CPU) from /proc/pressure/cpu."""
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split():
                if field.startswith("total="):
                    return int(field[6:])
    return None


# -- start / end snapshots of one side --------------------------------------------------


@dataclass(frozen=True)
class CpuSnapshot:
    t_ns: int
    cpu_ns: int  # user + system time of the process
    nvcsw: int
    nivcsw: int
    cgroups: tuple[CgroupCpu, ...]
    cgroup_missing: str | None
    psi_some_us: int | None


def snapshot(proc_root: Path = Path("/proc/self"), psi_path: Path = Path(PSI_CPU)) -> CpuSnapshot:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cgroups, missing = read_cgroups(proc_root)
    psi_text = _read(psi_path, None)
    return CpuSnapshot(monotonic_ns(), int((ru.ru_utime + ru.ru_stime) * 1e9), ru.ru_nvcsw, ru.ru_nivcsw,
                       tuple(cgroups), missing, parse_psi_some_total(psi_text) if psi_text else None)


def cpu_context(start: CpuSnapshot, end: CpuSnapshot, cpus: int | None = None) -> dict[str, Any]:
    """What the process, its cgroup and the host did between two snapshots (a JSON-able dict)."""
    wall = max(1, end.t_ns - start.t_ns)
    cpuset = sorted(os.sched_getaffinity(0))
    ctx: dict[str, Any] = {
        "wall_ns": wall,
        "cpus": cpus if cpus is not None else len(cpuset),
        "cpuset": cpuset,
        "boot_id": _read(Path(BOOT_ID), "").strip()[:64],
        "cpu_ns": max(0, end.cpu_ns - start.cpu_ns),
        "nvcsw": max(0, end.nvcsw - start.nvcsw),
        "nivcsw": max(0, end.nivcsw - start.nivcsw),
        "unseen": [],
    }
    if start.psi_some_us is not None and end.psi_some_us is not None:
        ctx["psi_some_ns"] = max(0, end.psi_some_us - start.psi_some_us) * US
    else:
        ctx["unseen"].append("no CPU pressure (PSI)")
    before = {cg.path: cg for cg in start.cgroups}
    levels = []
    for cg in end.cgroups:
        b = before.get(cg.path)
        if b is None:
            continue
        levels.append({"path": cg.path, "version": cg.version, "quota_cores": cg.quota_cores,
                       "periods": max(0, cg.periods - b.periods), "throttled": max(0, cg.throttled - b.throttled),
                       "throttled_ns": max(0, cg.throttled_ns - b.throttled_ns)})
    if levels:
        # the level that throttled most; else the innermost with a quota; else the process's own
        ctx["cgroup"] = max(levels, key=lambda lv: (lv["throttled_ns"], lv["quota_cores"] is not None,
                                                    -levels.index(lv)))
    else:
        ctx["unseen"].append(f"no cgroup CPU throttling counters ({end.cgroup_missing or 'cgroup changed'})")
    return ctx


__all__ = [
    "SchedstatUnavailable",
    "ThreadClock",
    "CgroupCpu",
    "CpuSnapshot",
    "parse_schedstat",
    "parse_proc_cgroup",
    "parse_mountinfo",
    "parse_cpu_stat",
    "parse_cpu_max",
    "parse_v1_quota",
    "parse_psi_some_total",
    "cpu_cgroup_dirs",
    "read_cgroup_cpu",
    "read_cgroups",
    "snapshot",
    "cpu_context",
]
