"""Shared pytest fixtures: a private real sshd, the remote escp wrapper, and a fake ssh.

- sshd (session scope; each xdist worker starts its own): a running OpenSSH sshd on
  127.0.0.1 reachable as `ssh -F sshd.config escptest`; see tests/sshd.py. Skips when
  openssh-server is missing, but fails instead when CI=true.
- remote_escp (session scope): path of an executable wrapper running
  `<sys.executable> -m escp "$@"` with PYTHONPATH=<repo root>, for `-D/--escp`.
- fake_ssh (function scope): a fake `ssh` first on PATH that logs its argv as JSON lines
  and runs the "remote" command locally; see tests/fakessh.py and FakeSsh below.

Tests that use the `sshd` fixture get the `sshd` marker automatically.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.sshd import (
    SshdServer,
    SshdStartError,
    SshdUnavailable,
    check_installed,
    on_ci,
    start_sshd,
    write_remote_escp,
)

FAKESSH_SOURCE = Path(__file__).resolve().parent / "fakessh.py"
FAKESSH_ENV = ("ESCP_FAKESSH_LOG", "ESCP_FAKESSH_MODE", "ESCP_FAKESSH_SHELL", "ESCP_FAKESSH_HOME")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "sshd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.sshd)


def require_sshd() -> None:
    """Skip (or, on CI, fail) when the OpenSSH server or client is not installed."""
    try:
        check_installed()
    except SshdUnavailable as e:
        if on_ci():
            pytest.fail(f"CI=true but {e}: .ci/run must install openssh-server", pytrace=False)
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """A private sshd on 127.0.0.1; attributes host, config, port, user, key, run_ssh()..."""
    require_sshd()
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except SshdStartError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def remote_escp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Executable wrapper running this checkout's escp: use as the remote escp program."""
    return write_remote_escp(tmp_path_factory.mktemp("remote-escp") / "escp-remote")


@dataclass
class FakeSsh:
    """The installed fake ssh. Its bindir is first on PATH while the test runs.

    program: the `ssh` script; log: JSON-lines call log (ESCP_FAKESSH_LOG).
    set_mode()/set_shell()/set_home() change the behaviour for later calls (via env).
    """

    bindir: Path
    program: Path
    log: Path
    monkeypatch: pytest.MonkeyPatch

    def set_mode(self, mode: str) -> None:
        self.monkeypatch.setenv("ESCP_FAKESSH_MODE", mode)

    def set_shell(self, on: bool = True) -> None:
        if on:
            self.monkeypatch.setenv("ESCP_FAKESSH_SHELL", "1")
        else:
            self.monkeypatch.delenv("ESCP_FAKESSH_SHELL", raising=False)

    def set_home(self, path: Path) -> None:
        self.monkeypatch.setenv("ESCP_FAKESSH_HOME", str(path))

    def env(self, **extra: str) -> dict[str, str]:
        """A copy of the current environment (fake ssh active) plus extra variables."""
        return {**os.environ, **extra}

    def calls(self) -> list[dict[str, Any]]:
        """One dict per ssh invocation so far: argv, options, host, command, mode, pid..."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def argvs(self) -> list[list[str]]:
        return [c["argv"] for c in self.calls()]


@pytest.fixture
def fake_ssh(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> FakeSsh:
    """Put a fake `ssh` first on PATH (and log its calls) for the duration of one test."""
    root = tmp_path_factory.mktemp("fakessh")
    bindir = root / "bin"
    bindir.mkdir()
    program = bindir / "ssh"
    program.write_text(
        "#!/bin/sh\n# fake ssh for escp tests (see tests/fakessh.py)\n"
        f'exec {shlex.join([sys.executable, str(FAKESSH_SOURCE)])} "$@"\n'
    )
    program.chmod(0o755)
    log = root / "calls.jsonl"
    for name in FAKESSH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ESCP_FAKESSH_LOG", str(log))
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ.get("PATH", ""))
    return FakeSsh(bindir=bindir, program=program, log=log, monkeypatch=monkeypatch)
