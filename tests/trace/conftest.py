"""Fixtures for the trace tests: a fake monotonic clock for the recorder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from escp.trace import recorder as recorder_mod


class FakeClock:
    """Replaces recorder.monotonic_ns: returns `t`, which the test moves forward."""

    def __init__(self, start: int = 1_000_000_000) -> None:
        self.t = start

    def __call__(self) -> int:
        return self.t

    def advance(self, ns: int) -> int:
        self.t += ns
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    monkeypatch.setattr(recorder_mod, "monotonic_ns", fake)
    yield fake
