"""CPU accounting sources (escp.trace.sched) on recorded inputs, and the recorder's CPU split on the
real kernel: schedstat lines, /proc/self/cgroup and mountinfo of cgroup v1 (this host: cpu
mounted alone; a container: cpu,cpuacct with a sub-tree root) and v2 (a Debian 12 host), cpu.stat
and quota files of both versions, PSI, and start/end snapshots."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from escp.trace import sched
from escp.trace.chrome import chrome_trace
from escp.trace.recorder import RecordingTracer
from escp.trace.summary import summarize

# -- recorded inputs ---------------------------------------------------------------------------

SCHEDSTAT = "397304944 22846159 67\n"
PROC_CGROUP_V1 = ("9:name=systemd:/\n8:pids:/\n7:blkio:/\n4:memory:/process_api/ccc1de3b\n3:cpuset:/\n"
                  "2:cpuacct:/\n1:cpu:/escp-inj-77-1\n0::/\n")
MOUNTINFO_V1 = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)
PROC_CGROUP_CONTAINER = "5:cpu,cpuacct:/docker/abc123/inner\n0::/\n"
MOUNTINFO_CONTAINER = ("35 30 0:31 /docker/abc123 /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime "
                       "master:15 - cgroup cgroup rw,cpu,cpuacct\n")
PROC_CGROUP_V2 = "0::/user.slice/user-0.slice/session-1.scope\n"
MOUNTINFO_V2 = ("29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
                "rw,nsdelegate,memory_recursiveprot\n")
CPU_STAT_V1 = "nr_periods 13\nnr_throttled 10\nthrottled_time 731910362\nnr_bursts 0\nburst_time 0\n"
CPU_STAT_V2 = ("usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 50\nnr_throttled 40\n"
               "throttled_usec 2500000\nnr_bursts 0\nburst_usec 0\n")
PSI = "some avg10=3.67 avg60=6.00 avg300=5.64 total=49783569\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"


def test_schedstat_line() -> None:
    assert sched.parse_schedstat(SCHEDSTAT) == (397304944, 22846159, 67)
    assert sched.parse_schedstat(SCHEDSTAT.encode()) == (397304944, 22846159, 67)
    for bad in ("", "1 2", "1 -2 3", "a b c"):
        with pytest.raises(ValueError):
            sched.parse_schedstat(bad)


def test_proc_cgroup_and_mountinfo() -> None:
    groups = sched.parse_proc_cgroup(PROC_CGROUP_V1)
    assert ("1", ["cpu"], "/escp-inj-77-1") in groups and ("0", [], "/") in groups
    assert ("9", ["name=systemd"], "/") in groups
    mounts = sched.parse_mountinfo(MOUNTINFO_V1 + "22 1 254:0 / / rw - ext4 /dev/vda rw\n")
    assert [m[0] for m in mounts] == ["cgroup", "cgroup", "cgroup2"]  # tmpfs and ext4 are not cgroups
    assert mounts[0] == ("cgroup", "/sys/fs/cgroup/cpu", "/", ["rw", "cpu"])
    assert sched.parse_mountinfo("1 2 0:1 / /a\\040b rw - cgroup2 cgroup2 rw\n")[0][1] == "/a b"


def test_cpu_cgroup_chain_v1_v2_and_a_container(tmp_path: Path) -> None:
    assert sched.cpu_cgroup_dirs(PROC_CGROUP_V1, MOUNTINFO_V1) == (
        1, [Path("/sys/fs/cgroup/cpu/escp-inj-77-1"), Path("/sys/fs/cgroup/cpu")])
    # a container sees its own sub-tree mounted at the cpu mount point
    assert sched.cpu_cgroup_dirs(PROC_CGROUP_CONTAINER, MOUNTINFO_CONTAINER) == (
        1, [Path("/sys/fs/cgroup/cpu,cpuacct/inner"), Path("/sys/fs/cgroup/cpu,cpuacct")])
    # v2 only when the unified hierarchy has the cpu controller
    root = tmp_path / "cg2"
    root.mkdir()
    mountinfo = MOUNTINFO_V2.replace("/sys/fs/cgroup", str(root))
    assert sched.cpu_cgroup_dirs(PROC_CGROUP_V2, mountinfo) == (0, [])
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    version, dirs = sched.cpu_cgroup_dirs(PROC_CGROUP_V2, mountinfo)
    assert version == 2 and dirs[0] == root / "user.slice/user-0.slice/session-1.scope" and dirs[-1] == root
    assert sched.cpu_cgroup_dirs("0::/\n", MOUNTINFO_V1) == (0, [])  # hybrid host: cpu is not in v2


def test_cpu_stat_and_quota_files() -> None:
    assert sched.parse_cpu_stat(CPU_STAT_V1)["throttled_time"] == 731910362
    assert sched.parse_cpu_stat(CPU_STAT_V2)["throttled_usec"] == 2500000
    assert sched.parse_cpu_max("max 100000\n") is None
    assert sched.parse_cpu_max("25000 100000\n") == 0.25
    assert sched.parse_v1_quota("-1\n", "100000\n") is None
    assert sched.parse_v1_quota("5000\n", "100000\n") == 0.05
    assert sched.parse_psi_some_total(PSI) == 49783569
    assert sched.parse_psi_some_total("full avg10=0.00 total=3\n") is None


def _fake_host(tmp_path: Path, version: int, *, stat: str, quota: tuple[str, str]) -> Path:
    """/proc/self (cgroup, mountinfo) and a cgroup tree under tmp_path, as recorded."""
    proc, mnt = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    leaf = mnt / "escp-inj-77-1"
    leaf.mkdir(parents=True)
    (leaf / "cpu.stat").write_text(stat)
    if version == 1:
        (proc / "cgroup").write_text(PROC_CGROUP_V1)
        (proc / "mountinfo").write_text(f"32 31 0:29 / {mnt} rw - cgroup cgroup rw,cpu\n")
        (leaf / "cpu.cfs_quota_us").write_text(quota[0])
        (leaf / "cpu.cfs_period_us").write_text(quota[1])
    else:
        (proc / "cgroup").write_text("0::/escp-inj-77-1\n")
        (proc / "mountinfo").write_text(MOUNTINFO_V2.replace("/sys/fs/cgroup", str(mnt)))
        (mnt / "cgroup.controllers").write_text("cpu io\n")
        (leaf / "cpu.max").write_text(f"{quota[0]} {quota[1]}\n")
    return proc


@pytest.mark.parametrize("version,stat,quota,throttled_ns", [
    (1, CPU_STAT_V1, ("25000", "100000"), 731910362),
    (2, CPU_STAT_V2, ("25000", "100000"), 2500000 * 1000),
])
def test_read_cgroups_on_recorded_trees(tmp_path: Path, version: int, stat: str, quota: tuple[str, str],
                                        throttled_ns: int) -> None:
    proc = _fake_host(tmp_path, version, stat=stat, quota=quota)
    found, missing = sched.read_cgroups(proc)
    assert missing is None
    leaf = found[0]  # the root of the fake tree has no cpu.stat: left out
    assert (leaf.version, leaf.quota_cores, leaf.throttled_ns) == (version, 0.25, throttled_ns)
    assert leaf.periods > 0 and leaf.throttled > 0
    assert sched.read_cgroups(tmp_path / "no-proc") == ([], "no /proc/self/cgroup")


def _snap(t: int, cpu: int, nivcsw: int, cgroups: tuple[sched.CgroupCpu, ...], psi: int | None) -> sched.CpuSnapshot:
    return sched.CpuSnapshot(t, cpu, 10, nivcsw, cgroups, None if cgroups else "no cgroup with the cpu controller",
                             psi)


def test_cpu_context_reports_differences_and_the_throttled_level() -> None:
    leaf0 = sched.CgroupCpu("/cg/a/b", 1, 0.25, 10, 2, 1_000)
    root0 = sched.CgroupCpu("/cg/a", 1, None, 0, 0, 0)
    leaf1 = sched.CgroupCpu("/cg/a/b", 1, 0.25, 30, 22, 900_000_000)
    root1 = sched.CgroupCpu("/cg/a", 1, None, 0, 0, 0)
    ctx = sched.cpu_context(_snap(0, 100, 5, (leaf0, root0), 1000), _snap(2_000_000_000, 600, 45, (leaf1, root1), 1500),
                            cpus=2)
    assert ctx["wall_ns"] == 2_000_000_000 and ctx["cpu_ns"] == 500 and ctx["nivcsw"] == 40
    assert ctx["psi_some_ns"] == 500_000
    assert ctx["cgroup"] == {"path": "/cg/a/b", "version": 1, "quota_cores": 0.25, "periods": 20, "throttled": 20,
                             "throttled_ns": 900_000_000 - 1_000}
    assert ctx["unseen"] == []
    blind = sched.cpu_context(_snap(0, 0, 0, (), None), _snap(1, 0, 0, (), None))
    assert "cgroup" not in blind and "psi_some_ns" not in blind
    assert any("cgroup" in u for u in blind["unseen"]) and any("PSI" in u for u in blind["unseen"])


# -- the real kernel ---------------------------------------------------------------------------


def _clock() -> sched.ThreadClock:
    try:
        return sched.ThreadClock()
    except sched.SchedstatUnavailable as exc:
        pytest.skip(f"this kernel gives no per-thread schedstat: {exc}")


def test_thread_clock_readings_are_consistent() -> None:
    clock = _clock()
    t0, cpu0, runq0 = clock.read()
    end = time.thread_time_ns() + 20_000_000
    while time.thread_time_ns() < end:  # 20 ms of CPU, however long that takes here
        pass
    t1, cpu1, runq1 = clock.read()
    assert cpu1 - cpu0 >= 20_000_000
    assert runq1 >= runq0
    assert (cpu1 - cpu0) + (runq1 - runq0) <= (t1 - t0) + sched.CLEAN_READ_NS  # never more than the wall time
    clock.close()
    clock.close()  # idempotent


def test_unusable_schedstat_files(tmp_path: Path) -> None:
    with pytest.raises(sched.SchedstatUnavailable):
        sched.ThreadClock(str(tmp_path / "missing"))
    zeros = tmp_path / "zeros"
    zeros.write_text("0 0 0\n")  # what a kernel without sched_info shows
    with pytest.raises(sched.SchedstatUnavailable, match="all zero"):
        sched.ThreadClock(str(zeros))


def test_recorder_splits_a_sleep_from_cpu_work() -> None:
    _clock().close()
    tr = RecordingTracer("receiver")

    def work() -> None:
        t0 = tr.now()
        time.sleep(0.25)  # asleep: neither on a CPU nor runnable
        tr.span("rx-0", "write", t0, 1)
        t0 = tr.now()
        end = time.thread_time_ns() + 30_000_000
        while time.thread_time_ns() < end:
            pass
        tr.span("rx-0", "decrypt", t0, 1)

    th = threading.Thread(target=work)
    th.start()
    th.join()
    data = tr.snapshot()
    write, decrypt = data.sched[("rx-0", "write")], data.sched[("rx-0", "decrypt")]
    assert write.sleep_ns >= 240_000_000 and write.cpu_ns < 50_000_000
    assert decrypt.cpu_ns >= 30_000_000 and decrypt.sleep_ns < decrypt.cpu_ns
    assert data.cpu is not None and data.cpu["schedstat"] is None
    # the 250 ms span put a sample of rx-0's split on the timeline: one stacked 'C' event per sample
    assert data.counter_totals["rx-0 sleeping %"].maximum > 50
    cpu_events = [e for e in chrome_trace(None, data)["traceEvents"] if e["ph"] == "C" and e["name"] == "rx-0 CPU"]
    assert cpu_events and set(cpu_events[0]["args"]) == {"on-CPU %", "runnable %", "sleeping %"}
    row = next(s for s in summarize(None, data).stages if s.stage == "write")
    assert row.sleep_s is not None and row.on_cpu_s is not None and row.sleep_s > row.on_cpu_s


def test_recorder_without_schedstat_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*_a: Any) -> sched.ThreadClock:
        raise sched.SchedstatUnavailable("/proc/thread-self/schedstat: No such file or directory")

    monkeypatch.setattr(sched, "ThreadClock", unavailable)
    tr = RecordingTracer("sender")
    t0 = tr.now()
    tr.span("tx-0", "read", t0, 1)
    data = tr.snapshot()
    assert data.sched == {} and tr.enabled
    assert data.cpu is not None and "no schedstat" in data.cpu["schedstat"]
    verdict = summarize(data, None).verdict
    assert verdict is not None and any("no schedstat" in u for u in verdict.unseen)
