"""scp's habits over the real ssh client and a private real sshd (issue 13): remote paths
(`~`, `~user`, `host:`, `host:rel`, a trailing slash), errors that name where they happened
(the remote path, permission denied, one line per cause, ssh auth and connection failures
without a stray CR), and scp's flags.

The tests that need a directory the remote escp cannot write run it without
CAP_DAC_OVERRIDE (setpriv drops it from the bounding set): as root it then meets mode 0555
like any user. The `~` tests write a uniquely named file or directory into the ssh user's
real home directory (that is where `~` points) and remove it afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port_base, run_escp
from tests.sshd import REPO_ROOT, SshdServer, free_port


def ssh_args(sshd: SshdServer, remote: Path, *, quiet: bool = True) -> list[str]:
    return [*(["-q"] if quiet else []), "-F", str(sshd.config), "-D", str(remote), "--escp_port",
            str(free_port_base())]


@pytest.fixture
def home_item(sshd: SshdServer) -> Iterator[Path]:
    """A unique name in the ssh user's home directory, removed after the test."""
    path = Path(pwd.getpwnam(sshd.user).pw_dir) / f"escp-test-{uuid.uuid4().hex[:12]}"
    try:
        yield path
    finally:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def remote_escp_no_dac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The remote escp without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: file modes bind it."""
    caps = "-dac_override,-dac_read_search"
    if os.geteuid() != 0 or shutil.which("setpriv") is None or subprocess.run(
            ["setpriv", "--bounding-set", caps, "--inh-caps", caps, "true"], capture_output=True).returncode:
        pytest.skip("needs root and setpriv (util-linux) able to drop capabilities, to run the receiver "
                    "bound by file modes")
    path = tmp_path_factory.mktemp("nodac") / "escp-remote"
    path.write_text("#!/bin/sh\n"
                    f"PYTHONPATH={shlex.quote(str(REPO_ROOT))}\nexport PYTHONPATH\n"
                    f"exec setpriv --bounding-set {caps} --inh-caps {caps} "
                    f"{shlex.quote(sys.executable)} -m escp \"$@\"\n")
    path.chmod(0o755)
    return path


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("escp: ") and " error: " in ln]


# --- item 1: ~ and home-relative paths --------------------------------------------------------
@pytest.mark.parametrize("dest", ["~", ""], ids=["host:~", "host:"])
def test_tilde_and_empty_path_copy_into_the_home_directory(sshd: SshdServer, remote_escp: Path, tmp_path: Path,
                                                           home_item: Path, dest: str) -> None:
    src = tmp_path / home_item.name
    src.write_bytes(b"to the home directory")
    r = run_escp(*ssh_args(sshd, remote_escp), src, f"{sshd.host}:{dest}")
    assert r.code == 0, r.stderr
    assert home_item.read_bytes() == b"to the home directory"
    assert not (Path(pwd.getpwnam(sshd.user).pw_dir) / "~").exists()


@pytest.mark.parametrize("form", ["~/{name}", "~{user}/{name}", "{name}", "scp://{host}/~/{name}"])
def test_tilde_user_and_relative_paths_are_home_relative(sshd: SshdServer, remote_escp: Path, tmp_path: Path,
                                                         home_item: Path, form: str) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"home relative")
    dest = form.format(name=home_item.name, user=sshd.user, host=sshd.host)
    r = run_escp(*ssh_args(sshd, remote_escp), src, dest if dest.startswith("scp://") else f"{sshd.host}:{dest}")
    assert r.code == 0, r.stderr
    assert home_item.read_bytes() == b"home relative"


def test_unknown_user_after_tilde_is_a_usage_error(sshd: SshdServer, remote_escp: Path, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"x")
    r = run_escp(*ssh_args(sshd, remote_escp), src, f"{sshd.host}:~no-such-user-escp/x")
    assert r.code == 2, r.stderr
    assert "no such user 'no-such-user-escp'" in r.stderr and len(error_lines(r.stderr)) == 1, r.stderr


# --- item 2: a trailing slash means a directory ----------------------------------------------
def test_trailing_slash_creates_the_directory_never_a_file(sshd: SshdServer, remote_escp: Path,
                                                           tmp_path: Path, home_item: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"inside")
    tree = tmp_path / "d"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "g").write_bytes(b"g")
    base = tmp_path / "dest"
    base.mkdir()
    r = run_escp(*ssh_args(sshd, remote_escp), src, f"{sshd.host}:{base}/newdir/")
    assert r.code == 0, r.stderr
    assert (base / "newdir").is_dir() and (base / "newdir" / "f.txt").read_bytes() == b"inside"
    r = run_escp(*ssh_args(sshd, remote_escp), "-r", tree, f"{sshd.host}:{base}/newtree/")
    assert r.code == 0, r.stderr
    assert (base / "newtree" / "d" / "sub" / "g").read_bytes() == b"g"  # rsync's rule: d goes inside
    r = run_escp(*ssh_args(sshd, remote_escp), src, tree / "sub" / "g", f"{sshd.host}:{base}/several/")
    assert r.code == 0, r.stderr
    assert sorted(p.name for p in (base / "several").iterdir()) == ["f.txt", "g"]
    # with ~ as well
    r = run_escp(*ssh_args(sshd, remote_escp), src, f"{sshd.host}:~/{home_item.name}/")
    assert r.code == 0, r.stderr
    assert (home_item / "f.txt").read_bytes() == b"inside"


def test_trailing_slash_that_cannot_be_a_directory_fails_clearly(sshd: SshdServer, remote_escp: Path,
                                                                 tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"x")
    base = tmp_path / "dest"
    base.mkdir()
    (base / "afile").write_bytes(b"keep")
    r = run_escp(*ssh_args(sshd, remote_escp), src, f"{sshd.host}:{base}/no/such/")
    assert r.code == 2 and "parent directory does not exist" in r.stderr and f"{base}/no/such/" in r.stderr, r.stderr
    r = run_escp(*ssh_args(sshd, remote_escp), src, f"{sshd.host}:{base}/afile/")
    assert r.code == 2 and "Not a directory" in r.stderr, r.stderr
    assert sorted(p.name for p in base.iterdir()) == ["afile"] and (base / "afile").read_bytes() == b"keep"


# --- item 4: errors that point at the right thing --------------------------------------------
def test_unwritable_remote_directory_names_the_remote_path(sshd: SshdServer, remote_escp_no_dac: Path,
                                                           tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_bytes(b"x")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    r = run_escp(*ssh_args(sshd, remote_escp_no_dac, quiet=False), src, f"{sshd.host}:{locked}/")
    assert r.code == 1, r.stderr
    assert error_lines(r.stderr) == [f"escp: I/O error: {sshd.host}:{locked}/src.txt: cannot create file: "
                                     "Permission denied"], r.stderr
    assert "Complete:" not in r.stderr  # every file failed: no "Complete: 0 B in 0 files"
    assert list(locked.iterdir()) == []


def test_one_cause_gives_one_line_with_r(sshd: SshdServer, remote_escp_no_dac: Path, tmp_path: Path) -> None:
    tree = tmp_path / "src" / "dir"
    (tree / "sub").mkdir(parents=True)
    (tree / "x").write_bytes(b"x")
    (tree / "sub" / "y").write_bytes(b"y")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    report = tmp_path / "r.json"
    r = run_escp(*ssh_args(sshd, remote_escp_no_dac, quiet=False), "--json", report, "-r", tree,
                 f"{sshd.host}:{locked}")
    assert r.code == 1, r.stderr
    assert error_lines(r.stderr) == [f"escp: I/O error: {sshd.host}:{locked}/dir: cannot create directory: "
                                     "Permission denied"], r.stderr
    assert r.stderr.strip() == error_lines(r.stderr)[0]  # nothing else: no Complete line either
    doc = json.loads(report.read_text())
    assert doc["files_failed"] == 4 and doc["files"] == 0
    inside = [f for f in doc["failures"] if not f["path"].endswith("/dir")]
    assert len(inside) == 3 and all(f["message"] == "not written: its directory could not be created"
                                    for f in inside), doc["failures"]


def test_ssh_login_failure_is_auth_without_a_stray_cr(sshd: SshdServer, remote_escp: Path, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"x")
    r = run_escp("-q", "-F", str(sshd.config), "-o", "IdentityFile=/nonexistent", "-o", "IdentitiesOnly=yes",
                 "-D", str(remote_escp), src, f"nobody-here@{sshd.host}:{tmp_path}/out", timeout=60)
    assert r.code == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("escp: auth error: ssh failed: "), lines
    assert "Permission denied" in lines[0] and "\\r" not in lines[0] and "\r" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_unreachable_host_is_a_connection_error(tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"x")
    r = run_escp("-q", "-B", "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path}/kh",
                 "-P", str(free_port()), src, f"127.0.0.1:{tmp_path}/out", timeout=60)
    assert r.code == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("escp: connection error: ssh failed: "), lines
    assert "Connection refused" in lines[0] and "\\r" not in lines[0]


# --- item 5: scp's flags --------------------------------------------------------------------
def test_scp_flags_scripts_pass_are_accepted(sshd: SshdServer, remote_escp: Path, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"scp flags")
    out = tmp_path / "out"
    out.mkdir()
    r = run_escp(*ssh_args(sshd, remote_escp, quiet=False), "-v", "-B", "-3", "-R", "-O", "-s", "-T",
                 "-X", "nrequests=16", src, f"{sshd.host}:{out}")
    assert r.code == 0, r.stderr
    assert (out / "f.txt").read_bytes() == b"scp flags"
    started = [ln for ln in r.stderr.splitlines() if "starting the server:" in ln]
    assert started and "-o BatchMode=yes" in started[0], r.stderr  # -B reached ssh
    for flag in ("-O", "-s", "-T", "-X"):  # no meaning for escp: -v says so
        assert f"escp: {flag} ignored: " in r.stderr, (flag, r.stderr)


# --- items 1, 2 and 4 in the other directions: pull and remote to remote ---------------------
@pytest.mark.parametrize("form", ["~/{name}", "~{user}/{name}", "{name}"])
def test_pull_tilde_and_relative_sources_are_home_relative(sshd: SshdServer, remote_escp: Path, tmp_path: Path,
                                                           home_item: Path, form: str) -> None:
    home_item.write_bytes(b"from the remote home")
    out = tmp_path / "out"
    out.mkdir()
    src = form.format(name=home_item.name, user=sshd.user)
    r = run_escp(*ssh_args(sshd, remote_escp), f"{sshd.host}:{src}", out)
    assert r.code == 0, r.stderr
    assert (out / home_item.name).read_bytes() == b"from the remote home"
    assert sorted(p.name for p in out.iterdir()) == [home_item.name]


def test_pull_unknown_user_after_tilde_is_a_usage_error(sshd: SshdServer, remote_escp: Path, tmp_path: Path) -> None:
    r = run_escp(*ssh_args(sshd, remote_escp), f"{sshd.host}:~no-such-user-escp/x", tmp_path)
    assert r.code == 2, r.stderr
    assert "no such user 'no-such-user-escp'" in r.stderr and len(error_lines(r.stderr)) == 1, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_pull_trailing_slash_creates_the_local_directory(sshd: SshdServer, remote_escp: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "f.txt").write_bytes(b"pulled inside")
    r = run_escp(*ssh_args(sshd, remote_escp), f"{sshd.host}:{remote}/f.txt", f"{tmp_path}/newdir/")
    assert r.code == 0, r.stderr
    assert (tmp_path / "newdir").is_dir() and (tmp_path / "newdir" / "f.txt").read_bytes() == b"pulled inside"


@pytest.mark.parametrize("mode", [[], ["-3"]], ids=["direct", "relay"])
def test_remote_to_remote_tilde_and_trailing_slash(sshd: SshdServer, remote_escp: Path, tmp_path: Path,
                                                   home_item: Path, mode: list[str]) -> None:
    home_item.write_bytes(b"between two remote paths")
    base = tmp_path / "dest"
    base.mkdir()
    r = run_escp(*ssh_args(sshd, remote_escp), *mode, f"{sshd.host}:~/{home_item.name}",
                 f"{sshd.host}:{base}/newdir/")
    assert r.code == 0, r.stderr
    assert (base / "newdir" / home_item.name).read_bytes() == b"between two remote paths"


def test_pull_into_an_unwritable_directory_names_the_local_path(sshd: SshdServer, remote_escp: Path,
                                                                remote_escp_no_dac: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "f.txt").write_bytes(b"x")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    # the local, receiving escp bound by file modes: the same wrapper as the remote one's
    p = subprocess.run([str(remote_escp_no_dac), *map(str, ssh_args(sshd, remote_escp, quiet=False)),
                        f"{sshd.host}:{remote}/f.txt", f"{locked}/"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    assert error_lines(p.stderr) == [f"escp: I/O error: {locked}/f.txt: cannot create file: Permission denied"], \
        p.stderr
    assert list(locked.iterdir()) == []
