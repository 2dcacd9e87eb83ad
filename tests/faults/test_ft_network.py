"""FT-1..FT-8: streams cut, processes killed or stopped, slow and delayed paths.

The data streams go through tests/faults/proxy.py (sender --connect-to the proxy, the
receiver pinned to one port with --escp_portrange 1), so cuts land at chosen byte counts.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.faults.cases import case
from tests.faults.proxy import FaultProxy
from tests.faults.util import (
    DEADLINE,
    Proc,
    Scene,
    check_error,
    no_listener,
    pinned,
    process_gone,
    temp_files,
    wait_for,
)
from tests.helpers import assert_same_tree, local

B = 256 * 1024
BIG = 6 * 1024 * 1024


def build(tmp_path: Path, big: int = BIG) -> Scene:
    """src/{big.bin, mid.bin, sub/s*.txt}; dest/src/ holds old versions of two of them."""
    sc = Scene(tmp_path)
    (sc.src / "big.bin").write_bytes(os.urandom(big))
    (sc.src / "mid.bin").write_bytes(os.urandom(3 * B + 11))
    (sc.src / "sub").mkdir()
    for i in range(12):
        (sc.src / "sub" / f"s{i}.txt").write_bytes(os.urandom(1 + i * 997))
    old = sc.dest / "src"
    (old / "sub").mkdir(parents=True)
    (old / "big.bin").write_bytes(b"old big content")
    (old / "sub" / "s3.txt").write_bytes(b"old s3")
    (old / "keep.txt").write_bytes(b"not in the source")
    sc.freeze()
    return sc


def args(sc: Scene, *extra: str) -> list[str]:
    return ["--local", "-q", *pinned(sc), "--blocksize", "256K", *extra, "-r", str(sc.src), str(sc.dest)]


def finished_failed(sc: Scene, p: Proc, proxy: FaultProxy, causes: tuple[str, ...] = ()) -> None:
    """After a fault: E (exit 1 with an error line), T (all gone, port closed), C, L, P."""
    code = p.wait()
    ended = time.monotonic()
    check_error(code, p.stderr, [1], causes=causes)
    p.wait_gone()
    no_listener(sc.port, 1)
    try:
        sc.check_all()
    except AssertionError as exc:  # say how the session ended: a receiver SIGKILLed by the sender
        # (3 s to exit, then SIGTERM, then SIGKILL 3 s later) cannot remove its temp files
        after = f"{ended - proxy.cut_at:.1f} s after the proxy's cut" if proxy.cut_at else "(no cut of every stream)"
        raise AssertionError(f"{exc}\n(the sender exited {after}; its stderr:\n{p.stderr})") from None


def rerun_exact(sc: Scene) -> None:
    """FT-3: a re-run after any interruption produces an exact copy; no temp file survives."""
    r = local("--blocksize", "256K", "-r", sc.src, sc.dest, port=sc.port)
    assert r.code == 0, r.stderr
    assert_same_tree(sc.src, _only_source_names(sc))
    assert not temp_files(sc.dest)
    sc.check_contained()


def _only_source_names(sc: Scene) -> Path:
    """dest/src minus the extra file that was there before (it is legitimately kept)."""
    extra = sc.dest / "src" / "keep.txt"
    if extra.exists():
        extra.unlink()
    return sc.dest / "src"


# --- FT-2: all streams cut at 10 points across the transfer --------------------------------
CUT_FRACTIONS = [0.0005, 0.01, 0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 0.99]


@case("FT-2", "FT-3")
@pytest.mark.parametrize("fraction", CUT_FRACTIONS)
def test_all_streams_cut_at_sweep_point_then_rerun(tmp_path: Path, fraction: float) -> None:
    sc = build(tmp_path)
    total = BIG + 3 * B + 11 + sum(1 + i * 997 for i in range(12))
    with FaultProxy(sc.upstream, cut_after=max(1, int(total * fraction))) as proxy:
        p = Proc(*args(sc, "--connect-to", proxy.address, "-t", "4"))
        finished_failed(sc, p, proxy)
        assert proxy.cut.is_set(), (f"the transfer failed, but not at the proxy's cut (forwarded "
                                    f"{proxy.forwarded} of {total} bytes, cut at {proxy.cut_after}):\n{p.stderr}")
    rerun_exact(sc)


@case("FT-1")
@pytest.mark.parametrize("stream", [0, 2])
def test_one_stream_reset_mid_transfer_aborts_cleanly(tmp_path: Path, stream: int) -> None:
    """Stream 0 is the metadata stream, 2 a data stream: either way the session ends with E."""
    sc = build(tmp_path)
    with FaultProxy(sc.upstream, cut_stream=(stream, 200_000 if stream else 2_000), rate=8_000_000) as proxy:
        p = Proc(*args(sc, "--connect-to", proxy.address, "-t", "4"))
        finished_failed(sc, p, proxy)
    rerun_exact(sc)


# --- FT-3 / FT-4: SIGKILL one side mid-file ------------------------------------------------
def start_slow(sc: Scene, proxy: FaultProxy, *extra: str) -> Proc:
    """A transfer paced by the proxy, observed until big.bin is mid-way; returns with the proxy
    paused, so the transfer cannot finish while the test finds and signals a process, however
    loaded the machine is (the caller resumes the proxy once it has acted)."""
    p = Proc(*args(sc, "--connect-to", proxy.address, "-t", "2", *extra))
    wait_for(lambda: any(b"big.bin" in t and os.path.getsize(t) > 0 for t in temp_files(sc.dest)), 20,
             "a temp file of big.bin with data")
    proxy.pause()
    return p


def age_temp_files(sc: Scene, seconds: float = 60.0) -> list[bytes]:
    """Make leftover temp files look `seconds` old (the sweep only takes untouched ones)."""
    left = temp_files(sc.dest)
    for t in left:
        st = os.stat(t)
        os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))
    return left


@case("FT-3")
def test_receiver_sigkill_mid_file_then_rerun_sweeps_its_temp_file(tmp_path: Path) -> None:
    sc = build(tmp_path)
    with FaultProxy(sc.upstream, rate=1_500_000) as proxy:
        p = start_slow(sc, proxy)
        rx = p.wait_receiver()
        t0 = time.monotonic()
        os.kill(rx, signal.SIGKILL)
        proxy.resume()
        code = p.wait()
        assert time.monotonic() - t0 < 15, "sender took too long to notice the dead receiver"
        check_error(code, p.stderr, [1], causes=["connection"])
        p.wait_gone()
    no_listener(sc.port, 1)
    sc.check_contained()
    sc.check_lost()
    left = age_temp_files(sc)
    assert left, "a SIGKILLed receiver cannot clean up: its temp file must still be there"
    assert all(os.path.basename(t).startswith(b".") and t.endswith(b".part") for t in left)
    # never mistaken for a complete file: the final name still holds the old content
    assert (sc.dest / "src" / "big.bin").read_bytes() == b"old big content"
    rerun_exact(sc)  # the re-run sweeps the stale temp files and copies exactly


@case("FT-4")
def test_sender_sigkill_mid_file_receiver_exits_and_cleans_up(tmp_path: Path) -> None:
    sc = build(tmp_path)
    with FaultProxy(sc.upstream, rate=1_500_000) as proxy:
        p = start_slow(sc, proxy)
        rx = p.wait_receiver()
        os.kill(p.pid, signal.SIGKILL)
        proxy.resume()
        p.wait()
        wait_for(lambda: process_gone(rx), DEADLINE, "receiver exit")
        p.wait_gone()
    no_listener(sc.port, 1)
    sc.check_all()  # the receiver removed its temp files itself




# --- FT-6: stalls against --timeout --------------------------------------------------------
@case("FT-6")
def test_receiver_stopped_sender_times_out_with_no_progress(tmp_path: Path) -> None:
    sc = build(tmp_path)
    with FaultProxy(sc.upstream, rate=1_500_000) as proxy:
        p = start_slow(sc, proxy, "--timeout", "2")
        rx = p.wait_receiver()
        os.kill(rx, signal.SIGSTOP)
        proxy.resume()  # the sender's frames reach the stopped receiver's socket: still no progress
        try:
            code = p.wait()
        finally:
            try:
                os.kill(rx, signal.SIGCONT)
            except OSError:
                pass
        check_error(code, p.stderr, [1], causes=["timeout"])
        assert "no progress" in p.stderr
        p.wait_gone()
    no_listener(sc.port, 1)
    sc.check_contained()
    sc.check_lost()
    # the stopped receiver could only be SIGTERMed (handled after SIGCONT: cleans up) or,
    # if that came too late, SIGKILLed: then the next run sweeps what it left
    age_temp_files(sc)
    rerun_exact(sc)


@case("FT-6")
def test_sender_stopped_receiver_times_out_and_exits(tmp_path: Path) -> None:
    # the proxy stays paused until the receiver has given up: what the stopped sender had
    # already written into its sockets never completes the session behind its back (to the
    # receiver a stopped sender and a held path look the same: connected and silent)
    sc = build(tmp_path)
    with FaultProxy(sc.upstream, rate=1_500_000) as proxy:
        p = start_slow(sc, proxy, "--timeout", "2")
        rx = p.wait_receiver()
        os.kill(p.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: process_gone(rx), DEADLINE,
                     "the receiver to give up on the stopped sender")
        finally:
            proxy.resume()
            os.kill(p.pid, signal.SIGCONT)
        code = p.wait()
        check_error(code, p.stderr, [1])
        p.wait_gone()
    no_listener(sc.port, 1)
    sc.check_all()


@case("FT-6")
def test_path_stalled_both_sides_time_out(tmp_path: Path) -> None:
    """The network path stops forwarding (both processes alive): both ends give up."""
    sc = build(tmp_path)
    with FaultProxy(sc.upstream, rate=1_500_000) as proxy:
        p = start_slow(sc, proxy, "--timeout", "2")  # returns with the path paused: it stays so
        code = p.wait()
        check_error(code, p.stderr, [1], causes=["timeout"])
        p.wait_gone()
    no_listener(sc.port, 1)
    sc.check_all()


# --- FT-7 / FT-8: slow and delayed paths complete --------------------------------------------
@case("FT-7")
def test_slow_path_completes_without_spurious_timeout(tmp_path: Path) -> None:
    """~400 KiB/s per stream with a 2 s idle deadline: the transfer takes longer than the
    deadline, but bytes keep flowing, so it must complete."""
    sc = build(tmp_path, big=2 * 1024 * 1024)
    with FaultProxy(sc.upstream, rate=400_000) as proxy:
        p = Proc(*args(sc, "--connect-to", proxy.address, "-t", "2", "--timeout", "2"))
        code = p.wait(60)
        assert code == 0, p.stderr
    p.wait_gone()
    assert_same_tree(sc.src, _only_source_names(sc))


@case("FT-8")
def test_netem_is_not_available_here() -> None:
    pytest.skip("FT-8: netem (tc qdisc) is not available on this CI kind; latency and connection loss "
                "are covered with the in-tree proxy (test_latency_path_completes, FT-1/FT-2 cuts)")


@case("FT-8")
def test_latency_path_completes(tmp_path: Path) -> None:
    sc = build(tmp_path, big=1024 * 1024)
    with FaultProxy(sc.upstream, delay=0.02) as proxy:
        p = Proc(*args(sc, "--connect-to", proxy.address, "-t", "4"))
        assert p.wait(60) == 0, p.stderr
    p.wait_gone()
    assert_same_tree(sc.src, _only_source_names(sc))
