"""Unit tests of the test-only I/O fault hook (escp/engine/faults.py)."""

from __future__ import annotations

import errno
import os

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


def test_delay_sleeps_then_passes() -> None:
    import time

    faults.configure("read:delay:ms=50:times=2")
    t0 = time.monotonic()
    assert faults.inject("read") is None and faults.inject("read") is None
    assert time.monotonic() - t0 >= 0.09
    t0 = time.monotonic()
    assert faults.inject("read") is None
    assert time.monotonic() - t0 < 0.04


def test_errno_classes_and_short() -> None:
    faults.configure("write:EINTR;read:EAGAIN;write:short:times=inf")
    with pytest.raises(InterruptedError):
        faults.inject("write")
    with pytest.raises(BlockingIOError):
        faults.inject("read")
    assert faults.inject("write") == faults.SHORT
    assert faults.inject("write") == faults.SHORT


@pytest.mark.parametrize("spec", ["bogus:EIO", "write", "write:ENOTANERRNO", "fsync:short", "write:EIO:after=x",
                                  "write:EIO:colour=red"])
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
