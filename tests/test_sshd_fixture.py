"""Proves the private-sshd fixture works: real ssh client, real sshd, only 127.0.0.1."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sshd import MISSING_REASON, REPO_ROOT, SshdServer, on_ci, sshd_path, write_python_wrapper


def test_sshd_installed_when_ci() -> None:
    """On CI the sshd tests must run, never silently skip."""
    if not on_ci():
        pytest.skip("only checked when CI=true")
    assert os.access(sshd_path(), os.X_OK), f"CI=true but {MISSING_REASON}"


@pytest.mark.parametrize("ci, outcome", [("", "1 skipped"), ("true", "1 error")])
def test_missing_sshd_skips_locally_fails_on_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    """Without openssh-server the fixture skips, except under CI=true where it fails."""
    env = {**os.environ, "ESCP_TEST_SSHD": str(tmp_path / "no-such-sshd"), "CI": ci}
    env.pop("PYTEST_XDIST_WORKER", None)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            f"--basetemp={tmp_path / 'inner'}",
            f"{__file__}::test_echo_hi",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    out = r.stdout.decode()
    assert outcome in out, out
    assert "openssh-server" in out
    assert r.returncode == (0 if not ci else 1), out


def test_echo_hi(sshd: SshdServer) -> None:
    r = sshd.run_ssh(["echo", "hi"], timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hi\n"
    assert r.stderr == b""


def test_attributes(sshd: SshdServer) -> None:
    assert sshd.host == "escptest"
    assert sshd.config.is_file() and sshd.key.is_file()
    assert 0 < sshd.port < 65536
    assert sshd.alive()
    assert sshd.ssh_opts == ["-F", str(sshd.config)]
    r = sshd.run_ssh(["id", "-un"], timeout=30)
    assert r.stdout.decode().strip() == sshd.user


def test_alias_resolves_only_through_config(sshd: SshdServer) -> None:
    # ssh -G prints the resolved configuration without connecting.
    def resolved(cfg: str) -> dict[str, str]:
        out = subprocess.run(
            [sshd.ssh, "-G", "-F", cfg, sshd.host], capture_output=True, check=True, timeout=30
        ).stdout.decode()
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    with_cfg = resolved(str(sshd.config))
    assert with_cfg["hostname"] == "127.0.0.1"
    assert with_cfg["port"] == str(sshd.port)
    assert with_cfg["user"] == sshd.user
    without = resolved(os.devnull)
    assert without["hostname"] == "escptest"
    assert without["port"] == "22"
    # and a real connection attempt without the config goes nowhere
    r = subprocess.run(
        [sshd.ssh, "-F", os.devnull, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", sshd.host, "true"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert r.returncode == 255


def test_binary_round_trip_1mib(sshd: SshdServer) -> None:
    data = os.urandom(1 << 20) + bytes(range(256)) + b"\r\n\x00\xff~."
    r = sshd.run_ssh(["cat"], input=data, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == len(data)
    assert r.stdout == data


def test_ssh_connection_names_loopback(sshd: SshdServer) -> None:
    r = sshd.run_ssh(['echo "$SSH_CONNECTION"'], timeout=30)
    assert r.returncode == 0, r.stderr
    fields = r.stdout.decode().split()
    assert len(fields) == 4, fields
    client_ip, client_port, server_ip, server_port = fields
    assert client_ip == "127.0.0.1"
    assert server_ip == "127.0.0.1"
    assert server_port == str(sshd.port)
    assert int(client_port) > 0


def test_remote_exit_status_and_stderr(sshd: SshdServer) -> None:
    r = sshd.run_ssh(["echo oops >&2; exit 7"], timeout=30)
    assert r.returncode == 7
    assert r.stderr == b"oops\n"


def test_python_wrapper_runs_checkout_in_bare_session(sshd: SshdServer, tmp_path: Path) -> None:
    """The remote side has a minimal environment; the wrapper still finds this checkout."""
    probe = write_python_wrapper(
        tmp_path / "probe",
        ["-c", "import sys, escp.errors as e; print(e.__file__); print(sys.argv[1:])"],
    )
    r = sshd.run_ssh(shlex.join(["env", "-i", str(probe), "a b", "c"]), timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert Path(lines[0]).resolve() == (REPO_ROOT / "escp" / "errors.py").resolve()
    assert lines[1] == "['a b', 'c']"


def test_remote_escp_wrapper(remote_escp: Path) -> None:
    assert os.access(remote_escp, os.X_OK)
    text = remote_escp.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "-m escp" in text and str(REPO_ROOT) in text


@pytest.mark.skipif(
    not (REPO_ROOT / "escp" / "__main__.py").exists(), reason="escp/__main__.py not written yet"
)
def test_remote_escp_runs_over_ssh(sshd: SshdServer, remote_escp: Path) -> None:
    r = sshd.run_ssh([shlex.quote(str(remote_escp)), "--help"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"usage" in r.stdout.lower()


def test_second_host_on_127_0_0_2(sshd: SshdServer) -> None:
    """`escptest2` reaches the same sshd on 127.0.0.2: a session there sees that as its server address."""
    r = sshd.run_ssh(["sh", "-c", shlex.quote("echo $SSH_CONNECTION")], timeout=30, extra_opts=())
    assert r.stdout.split()[2] == b"127.0.0.1", r
    r = subprocess.run([sshd.ssh, *sshd.ssh_opts, sshd.host2, "echo $SSH_CONNECTION"], capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[2] == b"127.0.0.2", r.stdout
