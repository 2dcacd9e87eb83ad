"""Bottlenecks injected from outside escp name the right verdict: each injection of the verdict
matrix (harness/verdicts.py) once, at a small scale (-t 2, 3 to 128 MiB: one to a few seconds of
data each), plus the injections' own clean-up.

These need root (cgroups, network namespaces, loop devices) and skip, with the reason, when it
or a facility is missing. They run one at a time (a file lock across xdist workers): a CPU hog
or quota must not land on another injection's transfer. The matrix runs the same injections
at full size, several times each (`nox -s verdicts`); docs/tuning.md shows their verdicts.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import inject, verdicts
from tests.helpers import random_file

MiB = 1 << 20
LOCK = Path("/tmp/escp-injection-tests.lock")
# small scale: one to a few seconds of data per injection on a two-CPU machine
SIZES_MIB = {"quota-receiver": 24, "quota-sender": 3, "hog-sender": 128, "hog-receiver": 128, "link-tbf": 64,
             "disk-write": 32, "disk-read": 16}
OUTSIDE = [inj for inj in verdicts.INJECTIONS if inj.outside]


@pytest.fixture
def one_at_a_time() -> Iterator[None]:
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _skip_unless(*needs: str) -> None:
    reason = inject.facility_missing(*needs)
    if reason:
        pytest.skip(reason)


def test_every_outside_injection_has_a_small_size() -> None:
    assert {inj.name for inj in OUTSIDE} == set(SIZES_MIB)


ATTEMPTS = 3  # runs of one injection while other processes keep the host's CPUs busy


def _host_contention(verdict: dict[str, object]) -> bool:
    """The verdict names a host busy with other work: contention, or another class whose
    evidence says the side waited for a CPU far longer than it ran."""
    return (verdict.get("kind") == "cpu-starved" and verdict.get("cause") == "contention") \
        or "the host is busy" in str(verdict.get("evidence", ""))


@pytest.mark.slow
@pytest.mark.parametrize("inj", OUTSIDE, ids=[inj.name for inj in OUTSIDE])
def test_injected_bottleneck_names_class_and_side(inj: verdicts.Injection, tmp_path: Path, one_at_a_time: None) -> None:
    """The injected bottleneck is named. On a host busy with other work (another xdist worker,
    other jobs) the true bottleneck of a quota, link or disk injection may be the host's CPUs
    instead: the verdict says so ("cpu-starved, contention", or evidence that the side waited
    for a CPU far longer than it ran: "the host is busy"), and the injection is tried again, a
    bounded number of times; so is a wrong verdict while the load average is over twice the CPU
    count. When every attempt met a busy host, the load average must show it."""
    _skip_unless(*inj.needs)
    src = random_file(tmp_path / "src.bin", SIZES_MIB[inj.name] * MiB)
    injects_contention = inj.expect.cause == "contention"  # a CPU hog: contention is the answer
    for attempt in range(ATTEMPTS):
        res = verdicts.run_once(inj, src, tmp_path / f"run{attempt}", attempt)
        if res.unset:  # the facility is there but refuses this use (a kernel or cgroup set-up of its own)
            pytest.skip(res.error or "injection not set up")
        assert res.ok, res.error
        assert res.verdict is not None and res.stats is not None
        print(res.verdict)  # shown when the test fails
        assert not list(tmp_path.glob(f"run{attempt}/dst.escp-*"))  # no temp file left behind
        if res.correct or injects_contention or not (_host_contention(res.verdict) or _host_busy()):
            break
    if not res.correct and not injects_contention and (_host_contention(res.verdict) or _host_busy()):
        load = os.getloadavg()[0]
        assert load > (os.cpu_count() or 1), f"a busy host named {ATTEMPTS} times at load {load:.1f}"
        return
    assert res.correct, f"expected {inj.expect.text()}, got {res.verdict['kind']} {res.verdict.get('cause')} " \
                        f"({res.verdict['stage']}, {res.verdict['side']}): {res.verdict['evidence']}"


def _host_busy() -> bool:
    """More runnable work than CPUs over the last minute: other processes share the transfer's
    CPUs, so what bounds it may be the host and not the injection (the next attempt may meet
    a quieter host)."""
    return os.getloadavg()[0] > 2 * (os.cpu_count() or 1)


# -- clean-up, even when the body fails ------------------------------------------------------


class Boom(Exception):
    pass


def test_cgroup_is_removed_after_a_failure(one_at_a_time: None) -> None:
    _skip_unless("cgroup")
    with pytest.raises(Boom), inject.SideCgroup(0.5, weight=2) as cg:
        assert cg.path.is_dir()
        sleeper = subprocess.Popen(["sleep", "30"])
        (cg.procs).write_text(str(sleeper.pid))  # still inside when the body fails
        try:
            raise Boom
        finally:
            sleeper.kill()
            sleeper.wait()
    assert not cg.path.exists()


def test_hogs_end_with_their_context(one_at_a_time: None) -> None:
    _skip_unless()
    with pytest.raises(Boom), inject.CpuHogs([sorted(os.sched_getaffinity(0))[0]], 2, 60) as hogs:
        raise Boom
    assert all(p.poll() is not None for p in hogs.procs)


def test_network_namespace_is_removed_after_a_failure(one_at_a_time: None) -> None:
    _skip_unless("netns")
    with pytest.raises(Boom), inject.NetnsLink("400mbit") as ns:
        qdisc = subprocess.run([*ns.prefix(), "tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True)
        assert "tbf" in qdisc.stdout and "400Mbit" in qdisc.stdout
        raise Boom
    assert ns.name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_slow_disk_is_unmounted_and_detached_after_a_failure(one_at_a_time: None) -> None:
    _skip_unless("loop", "cgroup")
    with pytest.raises(Boom), inject.SlowDisk(64) as disk, inject.SideCgroup() as cg:
        device, mount = disk.device, disk.mount
        assert device and os.path.ismount(mount)
        disk.throttle(write_bps=20 * MiB, cgroup=cg)
        limits = [f.read_text() for f in disk.blkio_files] or [(cg.path / "io.max").read_text()]  # v1 or v2
        assert any(disk.majmin in text for text in limits)
        (mount / "f").write_bytes(bytes(MiB))  # the file system works under the limit
        raise Boom
    assert not os.path.ismount(mount) and not disk.work.exists()
    assert str(device) not in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout


def test_stale_injections_of_dead_runs_are_swept(one_at_a_time: None) -> None:
    _skip_unless("cgroup", "netns")
    dead = 2**22 + 17  # above the default pid_max: no such process
    layout = inject.cgroup_layout()
    assert layout is not None
    stale_cg = layout.cpu_root / f"{inject.PREFIX}{dead}-1"
    stale_cg.mkdir()
    stale_ns = f"{inject.PREFIX}{dead}-2"
    subprocess.run(["ip", "netns", "add", stale_ns], check=True)
    try:
        removed = inject.sweep_stale()
    finally:  # in case the sweep missed them
        if stale_cg.exists():
            stale_cg.rmdir()
        subprocess.run(["ip", "netns", "del", stale_ns], capture_output=True)
    assert str(stale_cg) in removed and f"netns {stale_ns}" in removed
