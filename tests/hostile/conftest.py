"""Fixtures of the hostile-peer tests (see peer.py, proxy.py, oracles.py)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Run, escp_argv, free_port_base, run_escp
from tests.hostile.oracles import Sentinels, check_t

RX_PEER = Path(__file__).resolve().parent / "rx_peer.py"


@pytest.fixture
def sentinels(tmp_path: Path) -> Sentinels:
    return Sentinels(tmp_path / "s")


@pytest.fixture
def tag(monkeypatch: pytest.MonkeyPatch) -> str:
    """A per-test ESCP_TEST_TAG in the environment of every process the test starts (T oracle)."""
    t = uuid.uuid4().hex
    monkeypatch.setenv("ESCP_TEST_TAG", t)
    return t


@pytest.fixture
def run_tagged(tag: str) -> Callable[..., Run]:
    """Run the real escp CLI (this checkout) with the test tag; checks T afterwards."""

    def run(*args: object, timeout: float = 60, **kw: object) -> Run:
        r = run_escp(*map(str, args), timeout=timeout, **kw)  # type: ignore[arg-type]
        check_t(tag)
        return r

    return run


@pytest.fixture
def hostile_rx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tag: str) -> Callable[..., tuple[Run, dict]]:
    """Run the real sender against tests/hostile/rx_peer.py (as its `-S` ssh program).

    call(src, scenario, *extra_args, **cfg) -> (Run, record); record holds the session key
    the sender generated (hex), its session id and the hostile receiver's pid."""
    wrapper = tmp_path / "hostile-ssh"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.join([sys.executable, str(RX_PEER)])} \"$@\"\n")
    wrapper.chmod(0o755)

    def call(src: Path, scenario: str, *extra: str, timeout: float = 60, **cfg: object) -> tuple[Run, dict]:
        record = tmp_path / f"record-{uuid.uuid4().hex}.json"
        monkeypatch.setenv("ESCP_HOSTILE_RX", json.dumps({"scenario": scenario, "record": str(record), **cfg}))
        r = run_escp("-q", "-S", str(wrapper), "--escp_port", str(free_port_base()), *extra, str(src),
                     "hostile.invalid:" + str(tmp_path / "ignored"), timeout=timeout)
        rec = json.loads(record.read_text()) if record.exists() else {}
        err = Path(str(record) + ".err")
        rec["peer_errors"] = err.read_text() if err.exists() else ""
        if rec.get("pid"):
            try:
                os.kill(int(rec["pid"]), 9)
            except ProcessLookupError:
                pass
        check_t(tag)
        return r, rec

    return call


__all__ = ["escp_argv"]
