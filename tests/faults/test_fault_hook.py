"""Unit tests of the test-only I/O fault hook (escp/engine/faults.py)."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from escp.engine import faults
from escp.engine.writer import pwrite_all
from escp.errors import UsageError


@pytest.fixture(autouse=True)
def _reset() -> object:
    yield
    faults.configure("")


def test_inactive_by_default() -> None:
    faults.configure("")
    assert faults.ACTIVE is False
    assert faults.inject("write", b"x") is None


def test_after_times_and_match() -> None:
    faults.configure("write:EIO:after=2:times=2:match=sub/")
    assert faults.ACTIVE
    assert faults.inject("write", b"other") is None  # no match: not counted
    assert faults.inject("write", b"sub/a") is None
    assert faults.inject("write", b"sub/a") is None
    for _ in range(2):
        with pytest.raises(OSError) as ei:
            faults.inject("write", b"sub/a")
        assert ei.value.errno == errno.EIO
    assert faults.inject("write", b"sub/a") is None
    assert faults.inject("fsync", b"sub/a") is None


def test_delay_sleeps_then_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sleeps are recorded, not timed: a busy machine cannot make this flaky."""
    slept: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    faults.configure("read:delay:ms=50:times=2")
    assert faults.inject("read") is None and faults.inject("read") is None
    assert slept == [0.05, 0.05]
    assert faults.inject("read") is None
    assert slept == [0.05, 0.05]  # times=2: the third call passes at once
    faults.configure("open:delay")
    faults.inject("open")
    assert slept[-1] == faults.DELAY_MS / 1000


def test_hold_waits_for_its_file_then_passes(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    faults.configure(f"read:hold:after=1:file={gate}")
    assert faults.inject("read") is None  # after=1: the first read is not held
    done = threading.Event()
    caller = threading.Thread(target=lambda: (faults.inject("read"), done.set()), daemon=True)
    caller.start()
    assert not done.wait(0.3), "a hold returned before its file existed (its bound is 60 s)"
    gate.touch()
    assert done.wait(30), "the hold did not end once its file existed"
    caller.join(5)


def test_hold_is_bounded_by_ms(tmp_path: Path) -> None:
    faults.configure(f"read:hold:ms=20:file={tmp_path / 'never'}")
    t0 = time.monotonic()
    assert faults.inject("read") is None  # returns at its bound, with no file
    assert time.monotonic() - t0 >= 0.02


def test_errno_classes_and_short() -> None:
    faults.configure("write:EINTR;read:EAGAIN;write:short:times=inf")
    with pytest.raises(InterruptedError):
        faults.inject("write")
    with pytest.raises(BlockingIOError):
        faults.inject("read")
    assert faults.inject("write") == faults.SHORT
    assert faults.inject("write") == faults.SHORT


@pytest.mark.parametrize("spec", ["bogus:EIO", "write", "write:ENOTANERRNO", "fsync:short", "write:EIO:after=x",
                                  "write:EIO:colour=red", "read:hold", "read:hold:file=", "read:delay:file=/tmp/x"])
def test_malformed_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        faults.configure(spec)


def test_pwrite_all_survives_short_writes_eintr_and_eagain(tmp_path: object) -> None:
    data = os.urandom(100_000)
    path = os.path.join(str(tmp_path), "f")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        faults.configure("write:EINTR:times=5;write:EAGAIN:times=5;write:short:times=inf")
        pwrite_all(fd, memoryview(data), 4096, b"f")
    finally:
        os.close(fd)
        faults.configure("")
    with open(path, "rb") as f:
        assert f.read() == bytes(4096) + data


def test_pwrite_all_gives_up_on_endless_eagain(tmp_path: object) -> None:
    fd = os.open(os.path.join(str(tmp_path), "f"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        faults.configure("write:EAGAIN:times=inf")
        with pytest.raises(BlockingIOError):
            pwrite_all(fd, memoryview(b"abc"), 0)
    finally:
        os.close(fd)
