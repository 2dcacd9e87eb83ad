"""Shared pytest fixtures: a private real sshd and the remote escp wrapper.

- sshd (session scope; each xdist worker starts its own): a running OpenSSH sshd on
  127.0.0.1 reachable as `ssh -F sshd.config escptest`; see tests/sshd.py. Skips when
  openssh-server is missing, but fails instead when CI=true.
- remote_escp (session scope): path of an executable wrapper running
  `<sys.executable> -m escp "$@"` with PYTHONPATH=<repo root>, for `-D/--escp`.

Tests that use the `sshd` fixture get the `sshd` marker automatically.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd import (
    SshdServer,
    SshdStartError,
    SshdUnavailable,
    check_installed,
    on_ci,
    start_sshd,
    write_remote_escp,
)


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
