"""The sender's BlockScheduler (escp/engine/scheduler.py) driven directly, without sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from escp.engine.scheduler import BlockScheduler, InlineBlock
from escp.engine.sources import SourceItem, SourceProblem
from escp.protocol.messages import FileEnd, FileEntry
from escp.protocol.wire import KIND_FILE, STATUS_FAILED, STATUS_OK

B = 256 * 1024
INLINE = 64 * 1024


def run_walk(items: list[SourceItem]) -> tuple[list[FileEntry], list[InlineBlock], list[FileEnd]]:
    entries: list[FileEntry] = []
    blocks: list[InlineBlock] = []
    ends: list[FileEnd] = []

    def problem(p: SourceProblem) -> None:
        raise AssertionError(p.error.one_line())

    sched = BlockScheduler(iter(items), B, sparse=False, dummy=False, checksums=True,
                           announce=lambda e, _path: entries.append(e), file_end=ends.append, problem=problem,
                           preserve_ids=False, inline=blocks.append, inline_max=INLINE)
    for _ in range(10):  # bounded: a few pumps walk everything here
        if sched.exhausted:
            break
        sched.pump()
    assert sched.exhausted
    return entries, blocks, ends


def test_small_file_grown_after_the_walk_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OP-17: the walk saw a small file (sent inline, one block); before it is opened it grows
    past the block size. That one file fails ("changed"); it is neither sent as one oversized
    block nor read whole; the next small file is sent as usual."""
    grown, other = tmp_path / "grown", tmp_path / "other"
    grown.write_bytes(b"x" * 1000)
    other.write_bytes(b"y" * 10)
    items = [SourceItem(KIND_FILE, b"grown", os.fsencode(grown), os.stat(grown)),
             SourceItem(KIND_FILE, b"other", os.fsencode(other), os.stat(other))]
    grown.write_bytes(os.urandom(3 * B))  # grows between the walk and its open
    reads: list[int] = []
    pread = os.pread

    def counting_pread(fd: int, n: int, off: int) -> bytes:
        reads.append(n)
        return pread(fd, n, off)

    monkeypatch.setattr(os, "pread", counting_pread)
    entries, blocks, ends = run_walk(items)
    assert [e.name for e in entries] == [b"grown", b"other"]
    assert all(len(b.data) <= INLINE for b in blocks)
    assert [b.fino for b in blocks] == [1]
    assert ends[0].fino == 0 and ends[0].status == STATUS_FAILED and "changed" in ends[0].message
    assert ends[0].blocks == 0
    assert ends[1].fino == 1 and ends[1].status == STATUS_OK
    assert max(reads) <= INLINE + 1, reads


def test_ready_job_hands_out_the_same_blocks_without_waiting(tmp_path: Path) -> None:
    """ready_job (a traced worker's first try, so that only real waits are recorded) returns
    None while nothing is queued, then the blocks in next_job's order, sharing one cursor."""
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 * B + 5))
    item = SourceItem(KIND_FILE, b"big", os.fsencode(big), os.stat(big))
    sched = BlockScheduler(iter([item]), B, sparse=False, dummy=False, checksums=True,
                           announce=lambda _e, _p: None, file_end=lambda _e: None, problem=lambda _p: None,
                           preserve_ids=False, inline=lambda _b: None, inline_max=INLINE)
    assert sched.ready_job() is None  # the walk has not queued anything: None at once, no wait
    for _ in range(10):
        if sched.exhausted:
            break
        sched.pump()
    first = sched.ready_job()
    second = sched.next_job()
    third, fourth = sched.ready_job(), sched.ready_job()
    assert first is not None and second is not None and third is not None and fourth is not None
    assert [(j.offset, j.length) for j in (first, second, third, fourth)] == [(0, B), (B, B), (2 * B, B), (3 * B, 5)]
    assert sched.ready_job() is None and sched.next_job() is None  # every block out and the walk over


def test_a_gated_file_being_opened_keeps_the_workers_waiting(tmp_path: Path) -> None:
    """--skip-existing/--resume: the walk is over and the receiver wants the one held file;
    while the walker opens it (and re-reads kept ranges), no stream worker may take the
    empty queue for the end of the transfer (they would send EOS before its blocks)."""
    import threading

    src = tmp_path / "big"
    src.write_bytes(os.urandom(3 * B))
    entries: list[FileEntry] = []
    sched = BlockScheduler(iter([SourceItem(KIND_FILE, b"big", os.fsencode(src), os.stat(src))]), B, sparse=False,
                           dummy=False, checksums=True, announce=lambda e, _path: entries.append(e),
                           file_end=lambda _end: None, problem=lambda _p: None, preserve_ids=False, gated=True)
    sched.pump()
    sched.pump()
    assert sched.exhausted and len(entries) == 1 and sched.ready_job() is None and not sched.done
    inside, go = threading.Event(), threading.Event()
    real_open = sched._open

    def slow_open(*args: object) -> object:
        inside.set()
        assert go.wait(10)
        return real_open(*args)  # type: ignore[arg-type]

    sched._open = slow_open  # type: ignore[method-assign]
    sched.release(entries[0].fino)
    walker = threading.Thread(target=sched.pump)
    walker.start()
    assert inside.wait(10)
    assert not sched.done and sched._waiting and sched.ready_job() is None  # not over: a worker waits ...
    go.set()
    walker.join(10)
    job = sched.next_job()
    assert job is not None and job.offset == 0  # ... and the blocks come once it is queued
