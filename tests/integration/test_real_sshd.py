"""escp through the real ssh client and a private real sshd on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

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
