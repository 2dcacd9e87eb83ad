"""LD-1..LD-5 (reliability-tests.md 6.4): big files with bounded memory and rekeys, many
files, generated trees, stream counts, concurrent transfers. (LD-2, 100k small files,
is test_bad_input.py::test_many_empty_files, marked slow.)"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.cases import case
from tests.faults.test_bad_input import same_sparse
from tests.faults.util import Proc, Scene, no_listener, rss_kib, temp_files
from tests.helpers import assert_same_tree, free_port_base, local

B = 256 * 1024
MiB = 1024 * 1024
GiB = 1024 * MiB
FULL = os.environ.get("ESCP_LOAD_FULL") == "1"


class RssSampler:
    """Samples VmRSS of the sender and its local receiver every 50 ms while they run."""

    def __init__(self, p: Proc) -> None:
        self.p = p
        self.peak = {"sender": 0, "receiver": 0}
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        end = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < end:
            self.peak["sender"] = max(self.peak["sender"], rss_kib(self.p.pid))
            for rx in self.p.receivers():
                self.peak["receiver"] = max(self.peak["receiver"], rss_kib(rx))
            self.samples += 1
            self._stop.wait(0.05)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._t.join(5)
        return self.peak


def islands_file(path: Path, size: int, every: int = 1 * GiB) -> None:
    """A sparse file of `size` with a 100 KiB random island every `every` bytes and at the end."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for off in list(range(0, size, every)) + [size - 100 * 1024]:
            fh.seek(off)
            fh.write(os.urandom(100 * 1024))


def memory_budget_kib(streams: int, block: int) -> int:
    """Per process: interpreter and libraries (~80 MiB here) + 4 block buffers per stream
    (plain/frame on each side, decompress scratch) + 48 MiB slack. Independent of file size."""
    return (80 * MiB + 4 * streams * block + 48 * MiB) // 1024


# --- LD-1 ------------------------------------------------------------------------------------
@case("LD-1")
@pytest.mark.slow
def test_20gib_sparse_islands_exact_copy_bounded_memory(tmp_path: Path) -> None:
    """20 GiB apparent size, islands of data: --sparse sends only the islands and the copy is
    exact (holes where the source has holes); memory stays within the budget."""
    sc = Scene(tmp_path)
    sc.freeze()  # before the huge file: the oracles' snapshots read whole files
    f = sc.src / "huge.bin"
    islands_file(f, 20 * GiB)
    p = Proc("--local", "-q", "--escp_port", str(sc.port), "-t", "8", "--sparse", f, sc.dest)
    sampler = RssSampler(p)
    code = p.wait(120)
    peak = sampler.stop()
    p.wait_gone()
    assert code == 0, p.stderr
    same_sparse(f, sc.dest / "huge.bin")
    budget = memory_budget_kib(8, MiB)
    assert peak["sender"] < budget and peak["receiver"] < budget, (peak, budget)
    sc.check_contained()
    assert not temp_files(sc.dest)


@case("LD-1")
@pytest.mark.slow
def test_streamed_gibs_with_rekeys_memory_stays_bounded(tmp_path: Path) -> None:
    """Every byte of a big sparse file read and sent on 8 streams to the dummy receiver engine
    with a 4 MiB rekey limit (hundreds of key epochs per stream): completes, and the peak RSS
    of both processes stays within a budget that does not grow with the file.
    CI streams 3 GiB; ESCP_LOAD_FULL=1 streams the full 20 GiB."""
    size = 20 * GiB if FULL else 3 * GiB
    sc = Scene(tmp_path)
    f = sc.src / "huge.bin"
    islands_file(f, size)
    p = Proc("--local", "-q", "--escp_port", str(sc.port), "-t", "8", "--ioengine", "posix::dummy",
             "--rekey-bytes", str(4 * MiB), f, sc.dest)
    sampler = RssSampler(p)
    code = p.wait(900 if FULL else 180)
    peak = sampler.stop()
    p.wait_gone()
    no_listener(sc.port)
    assert code == 0, p.stderr
    assert sampler.samples > 5
    budget = memory_budget_kib(8, MiB)
    assert peak["sender"] < budget and peak["receiver"] < budget, (peak, budget)
    assert os.listdir(sc.dest) == []  # the dummy engine writes nothing


@case("LD-1")
def test_nonces_never_repeat_and_rekeys_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process sender (real receiver process): every nonce every key sealed is recorded;
    no (key, nonce) pair repeats, and no key seals more than the rekey limit."""
    from escp.api import transfer
    from escp.config import TransferConfig
    from escp.protocol import crypto

    seen: dict[tuple[int, int, int], int] = {}  # (id(schedule), epoch, counter)
    keys: set[tuple[bytes, bytes]] = set()
    nonces: set[tuple[bytes, bytes]] = set()
    lock = threading.Lock()
    rekey = 1 * MiB
    orig_next = crypto._KeySchedule.next_nonce
    orig_set = crypto._KeySchedule._set_epoch

    def set_epoch(self, epoch):  # type: ignore[no-untyped-def]
        orig_set(self, epoch)
        key, _ = crypto.stream_key(*self._args, epoch)
        with lock:
            assert (key, bytes(self._nonce[:4])) not in keys, "a key was derived twice"
            keys.add((key, bytes(self._nonce[:4])))
        self._test_key = key

    def next_nonce(self, frame_len):  # type: ignore[no-untyped-def]
        nonce = orig_next(self, frame_len)
        assert self.epoch_bytes <= max(rekey, frame_len), "key used beyond the rekey limit"
        with lock:
            pair = (self._test_key, nonce)
            assert pair not in nonces, "nonce reused under one key"
            nonces.add(pair)
            seen[(id(self), self.epoch, self.counter)] = frame_len
        return nonce

    monkeypatch.setattr(crypto._KeySchedule, "_set_epoch", set_epoch)
    monkeypatch.setattr(crypto._KeySchedule, "next_nonce", next_nonce)
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(24 * MiB))
    out = tmp_path / "out"
    out.mkdir()
    cfg = TransferConfig(streams=4, quiet=True, port_start=free_port_base(), rekey_bytes=rekey)
    result = transfer([str(src)], str(out), cfg)
    assert result.error is None and result.files_ok == 1, result.error
    assert (out / "f.bin").read_bytes() == src.read_bytes()
    epochs = {e for (_, e, _) in seen}
    assert max(epochs) >= 4, "expected several rekeys per stream"


@case("LD-1")
@pytest.mark.slow
def test_2gib_real_copy(tmp_path: Path) -> None:
    """A dense 2 GiB file written to disk: byte-identical (each MiB is distinct, so a block
    written at the wrong offset would show)."""
    sc = Scene(tmp_path)
    f = sc.src / "two.bin"
    pattern = os.urandom(MiB - 8)
    with open(f, "wb") as fh:
        for i in range(2048):
            fh.write(i.to_bytes(8, "big") + pattern)
    p = Proc("--local", "-q", "--escp_port", str(sc.port), "-t", "8", f, sc.dest)
    sampler = RssSampler(p)
    code = p.wait(300)
    peak = sampler.stop()
    p.wait_gone()
    assert code == 0, p.stderr
    h1, h2 = hashlib.sha256(), hashlib.sha256()
    with open(f, "rb") as a, open(sc.dest / "two.bin", "rb") as b:
        while chunk := a.read(8 * MiB):
            h1.update(chunk)
            h2.update(b.read(8 * MiB))
    assert h1.digest() == h2.digest()
    budget = memory_budget_kib(8, MiB)
    assert peak["sender"] < budget and peak["receiver"] < budget, (peak, budget)
    os.unlink(f)
    os.unlink(sc.dest / "two.bin")


# --- LD-3: generated trees ----------------------------------------------------------------
NAME = st.text(alphabet=st.sampled_from("abcXYZ019 -_.,'$\u00e9\u4e2d"), min_size=1, max_size=12).filter(
    lambda s: not s.startswith("."))
SIZES = st.sampled_from([0, 1, 7, B - 1, B, B + 1]) | st.integers(0, 3 * B)
TREE = st.dictionaries(st.lists(NAME, min_size=1, max_size=4).map(tuple), SIZES, min_size=1, max_size=25)


def materialise(root: Path, spec: dict[tuple[str, ...], int], seed: int) -> None:
    rnd = __import__("random").Random(seed)
    dirs = {parts[:i] for parts in spec for i in range(1, len(parts))}
    for parts, size in sorted(spec.items()):
        if parts in dirs:  # a name used both as a directory and a file: the directory wins
            continue
        p = root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rnd.randbytes(size))
    for d in dirs:
        root.joinpath(*d).mkdir(parents=True, exist_ok=True)


@case("LD-3")
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=TREE, streams=st.sampled_from([1, 3, 8]), seed=st.integers(0, 2**32))
def test_generated_trees_copy_exactly(tmp_path_factory: pytest.TempPathFactory, spec, streams, seed) -> None:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("ld3")
    src = base / "tree"
    src.mkdir()
    materialise(src, spec, seed)
    port = free_port_base()
    r = local("--blocksize", "256K", "-t", str(streams), "-r", src, base / "copy", port=port)
    assert r.code == 0, r.stderr
    assert_same_tree(src, base / "copy")
    assert not temp_files(base / "copy")


# --- LD-4: stream counts ----------------------------------------------------------------------
def tree(root: Path, files: int) -> None:
    for i in range(files):
        d = root / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom((i * 7919) % (2 * B + 3)))


@case("LD-4")
@pytest.mark.parametrize("streams", [1, 2, 4, 16, 64])
@pytest.mark.parametrize("files", [3, 150], ids=["fewer-files-than-streams", "more-files-than-streams"])
def test_stream_counts_identical_results(tmp_path: Path, streams: int, files: int) -> None:
    sc = Scene(tmp_path)
    tree(sc.src, files)
    sc.freeze()
    r = local("--blocksize", "256K", "-t", str(streams), "-r", sc.src, sc.dest, port=sc.port, timeout=120)
    assert r.code == 0, r.stderr
    assert_same_tree(sc.src, sc.dest / "src")
    no_listener(sc.port)
    sc.check_all()


# --- LD-5: two transfers at once ---------------------------------------------------------------
PACE = {**os.environ, "ESCP_FAULT": "read:delay:ms=40:times=inf"}


@case("LD-5")
def test_two_transfers_same_host_same_port_range(tmp_path: Path) -> None:
    """Both receivers start at the same --escp_port: the second binds the next free port."""
    port = free_port_base()
    runs = []
    for k in ("a", "b"):
        (tmp_path / k).mkdir()
        sc = Scene(tmp_path / k)
        tree(sc.src, 20)
        runs.append((sc, Proc("--local", "-q", "--escp_port", str(port), "--blocksize", "256K", "-r", sc.src,
                              sc.dest, env=PACE)))
    for sc, p in runs:
        assert p.wait(120) == 0, p.stderr
        p.wait_gone()
        assert_same_tree(sc.src, sc.dest / "src")
    no_listener(port)


@case("LD-5")
def test_two_transfers_into_the_same_directory_never_interleave(tmp_path: Path) -> None:
    """Same names, different content, same destination, at the same time: each file ends as
    one complete version (last complete wins), never a mix; no temp file is left."""
    dest = tmp_path / "dest"
    dest.mkdir()
    versions = {}
    procs = []
    for k in ("A", "B"):
        src = tmp_path / k / "data"
        src.mkdir(parents=True)
        for i in range(6):
            (src / f"f{i}.bin").write_bytes(k.encode() * (3 * B + i * 1000))
        versions[k] = src
        procs.append(Proc("--local", "-q", "--escp_port", str(free_port_base()), "--blocksize", "256K", "-t", "3",
                          "-r", src, dest, env=PACE))
    for p in procs:
        assert p.wait(120) == 0, p.stderr
        p.wait_gone()
    for i in range(6):
        got = (dest / "data" / f"f{i}.bin").read_bytes()
        assert got in (b"A" * (3 * B + i * 1000), b"B" * (3 * B + i * 1000)), f"f{i}.bin is interleaved"
    assert not temp_files(dest)
