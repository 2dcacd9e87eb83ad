"""escp through the real ssh client and a private real sshd on 127.0.0.1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import assert_same_tree, free_port_base, run_escp
from tests.sshd import SshdServer


def ssh_args(sshd: SshdServer, remote_escp: Path) -> list[str]:
    return ["-q", "-F", str(sshd.config), "-D", str(remote_escp), "--escp_port", str(free_port_base())]


def test_push_file_and_tree_over_real_ssh(sshd: SshdServer, remote_escp: Path, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.bin").write_bytes(os.urandom(3 << 20))
    (src / "b b").write_bytes(b"b")
    dest = tmp_path / "dest"
    dest.mkdir()
    r = run_escp(*ssh_args(sshd, remote_escp), "-r", src, f"{sshd.host}:{dest}")
    assert r.code == 0, r.stderr
    assert_same_tree(src, dest / "tree")


def test_alias_resolves_only_through_ssh_config(sshd: SshdServer, remote_escp: Path, tmp_path: Path) -> None:
    # 'escptest' is not in DNS or /etc/hosts: the sender must connect to the address the
    # receiver reports, not resolve the alias itself
    f = tmp_path / "f.txt"
    f.write_bytes(b"via alias")
    r = run_escp(*ssh_args(sshd, remote_escp), f, f"scp://{sshd.user}@{sshd.host}/{tmp_path}/copy.txt")
    assert r.code == 0, r.stderr
    assert (tmp_path / "copy.txt").read_bytes() == b"via alias"


def test_missing_remote_escp_is_a_clear_error(sshd: SshdServer, tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"x")
    r = run_escp("-q", "-F", str(sshd.config), "-D", "/nonexistent/escp", f, f"{sshd.host}:{tmp_path}/out",
                 timeout=60)
    assert r.code == 1
    assert "remote escp not found" in r.stderr or "No such file" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_refused_login_is_a_clear_error(sshd: SshdServer, remote_escp: Path, tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"x")
    r = run_escp("-q", "-F", str(sshd.config), "-i", "/dev/null", "-o", "IdentitiesOnly=yes", "-o",
                 "IdentityFile=/nonexistent", "-D", str(remote_escp), f, f"nobody-here@{sshd.host}:{tmp_path}/out",
                 timeout=60)
    assert r.code == 1
    assert "ssh failed" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def data_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.h5").write_bytes(os.urandom(3 << 20))
    (root / "b.h5").write_bytes(b"bee")
    (root / "c.txt").write_bytes(b"not matched")
    return root


def test_pull_file_tree_and_glob_over_real_ssh(sshd: SshdServer, remote_escp: Path, tmp_path: Path) -> None:
    src = data_tree(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    r = run_escp(*ssh_args(sshd, remote_escp), f"{sshd.host}:{src}/sub/a.h5", out)
    assert r.code == 0, r.stderr
    assert (out / "a.h5").read_bytes() == (src / "sub" / "a.h5").read_bytes()
    r = run_escp(*ssh_args(sshd, remote_escp), "-r", f"{sshd.host}:{src}", out)
    assert r.code == 0, r.stderr
    assert_same_tree(src, out / "data")
    globbed = tmp_path / "globbed"
    globbed.mkdir()
    r = run_escp(*ssh_args(sshd, remote_escp), "-r", f"{sshd.host}:{src}/*.h5", f"{sshd.host}:{src}/s*", globbed)
    assert r.code == 0, r.stderr
    assert sorted(os.listdir(globbed)) == ["b.h5", "sub"]
    r = run_escp(*ssh_args(sshd, remote_escp), f"{sshd.host}:{src}/missing", out)
    assert r.code == 1
    assert f"escp: I/O error: {sshd.host}:{src}/missing: cannot access source" in r.stderr, r.stderr


@pytest.mark.parametrize("relay", [False, True], ids=["direct", "relay"])
def test_remote_to_remote_between_two_hosts_over_real_ssh(sshd: SshdServer, remote_escp: Path, tmp_path: Path,
                                                          relay: bool) -> None:
    # escptest is 127.0.0.1 and escptest2 127.0.0.2: each server listens on the address its
    # ssh session came in on, so the data really goes between the two addresses
    src = data_tree(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    report = tmp_path / "r.json"
    r = run_escp(*ssh_args(sshd, remote_escp), *(["-3"] if relay else []), "-r", "--stats", "--json", report,
                 f"{sshd.host}:{src}", f"{sshd.host2}:{out}")
    assert r.code == 0, r.stderr
    assert_same_tree(src, out / "data")
    stats = json.loads(report.read_text())["stats"]
    assert stats["hosts"] == {"sender": sshd.host, "receiver": sshd.host2}, stats["hosts"]
    assert f"sides: sender on {sshd.host}, receiver on {sshd.host2}" in r.stderr
