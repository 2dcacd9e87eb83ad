"""The verdict names an injected bottleneck: four real transfers at small scale, each with one
known limit (network: -l pacing; CPU: zstd level 19 on compressible text; disk write / read:
an ESCP_FAULT delay before every receiver write / sender read). Each test asserts the
verdict's kind, stage and side from the --json report, and that the copy is exact. Speed is
never asserted. The injections are sized so the injected stage takes most of its side's
worker time (the verdict needs 40% and a 10% lead) even on a loaded two-core machine.

The harness runs the same injections at full scale (harness/scenarios.toml, bottleneck-*);
docs/tuning.md ("Validation: injected bottlenecks") shows the verdicts they produce.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from escp.engine.faults import ENV as FAULT_ENV
from tests.helpers import file_digest, local, random_file

MiB = 1 << 20


def text_file(path: Path, size: int) -> Path:
    """Word soup from a fixed vocabulary: compresses well (about 3:1), costly at high zstd levels."""
    rng = random.Random(1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(3000)]
    words = " ".join(rng.choices(vocab, k=size // 5)).encode()
    lines = bytearray()
    step = 80
    for i in range(0, len(words), step):
        lines += words[i:i + step] + b"\n"
    path.write_bytes(bytes(lines[:size]))
    return path


def transfer(tmp_path: Path, src: Path, *opts: str, fault: str | None = None) -> dict[str, Any]:
    """One traced local transfer; checks the copy and returns the verdict of its --json report."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault  # the receiver spawned by --local inherits it
    dst = tmp_path / "dst"
    report = tmp_path / "report.json"
    r = local("--stats", "--json", report, "--blocksize", "1M", *opts, src, dst, env=env)
    assert r.code == 0, r.stderr
    assert dst.stat().st_size == src.stat().st_size
    assert file_digest(dst) == file_digest(src)
    verdict: dict[str, Any] = json.loads(report.read_text())["stats"]["verdict"]
    print(r.stdout, r.stderr, sep="\n")  # the --stats table, shown when a test fails
    return verdict


def expect(verdict: dict[str, Any], kind: str, stage: str, side: str) -> None:
    got = (verdict["kind"], verdict["stage"], verdict["side"])
    assert got == (kind, stage, side), f"expected {kind} ({stage}, {side}), got {got}: {verdict['evidence']}"


@pytest.mark.slow
def test_paced_streams_are_network_bound(tmp_path: Path) -> None:
    # 2 streams sharing 8 MB/s: 16 MiB take about 2 s, all of it in send (pacing sleeps
    # are send time) on the sender and in recv on the receiver
    src = random_file(tmp_path / "random.bin", 16 * MiB)
    v = transfer(tmp_path, src, "-t", "2", "-l", "8M")
    expect(v, "network-bound", "send", "sender")


@pytest.mark.slow
def test_zstd_level_19_is_cpu_bound_in_compress(tmp_path: Path) -> None:
    # zstd -19 compresses this text at about 1 MB/s per stream: 4 MiB take about 4 s of compress
    src = text_file(tmp_path / "words.txt", 4 * MiB)
    v = transfer(tmp_path, src, "-t", "2", "-C", "--compress-level", "19")
    expect(v, "cpu-bound", "compress", "sender")


@pytest.mark.slow
def test_throttled_writer_is_disk_bound_on_write(tmp_path: Path) -> None:
    # 30 ms before every receiver write (32 blocks, about 1 s): the sender sees back-pressure
    # (32 MiB is more than the loopback socket buffers hold) and the receiver is in write
    src = random_file(tmp_path / "random.bin", 32 * MiB)
    v = transfer(tmp_path, src, "-t", "2", fault="write:delay:ms=30:times=inf")
    expect(v, "disk-bound", "write", "receiver")


@pytest.mark.slow
def test_throttled_reader_is_disk_bound_on_read(tmp_path: Path) -> None:
    # 50 ms before every sender read (16 blocks over 2 streams, about 0.4 s per stream)
    src = random_file(tmp_path / "random.bin", 16 * MiB)
    v = transfer(tmp_path, src, "-t", "2", fault="read:delay:ms=50:times=inf")
    expect(v, "disk-bound", "read", "sender")
