"""Every direction over the fake ssh (the "remote" escp runs here, started as ssh would
start it): pull, remote to remote directly and with -3, and their bad input.

Each run carries a fresh ESCP_TEST_TAG; afterwards every process of the run (the local
escp, each server) must be gone within the T deadline (tests/hostile/oracles.check_t).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import FakeSsh
from tests.faults.util import check_error, temp_files, wait_for
from tests.helpers import Run, assert_same_tree, free_port_base, run_escp
from tests.hostile.oracles import check_t

B = 256 * 1024
MODES = {"direct": [], "relay": ["-3"]}  # remote to remote: straight from A to B, or through here


@pytest.fixture
def escp(fake_ssh: FakeSsh, remote_escp: Path) -> object:
    """run(*args, env=None) -> Run: the real escp with the fake ssh and this checkout as the
    remote escp; checks that every process of the run is gone afterwards."""

    def run(*args: object, env: dict[str, str] | None = None, timeout: float = 240) -> Run:
        tag = uuid.uuid4().hex
        r = run_escp("-D", str(remote_escp), "--escp_port", str(free_port_base()),
                     *map(str, args), env=fake_ssh.env(ESCP_TEST_TAG=tag, **(env or {})), timeout=timeout)
        check_t(tag)
        return r

    return run


def tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "big.bin").write_bytes(os.urandom(3 * B + 11))
    (root / "sub" / "small.txt").write_bytes(b"small")
    (root / "empty").mkdir()
    (root / "zero").write_bytes(b"")
    return root


def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "run1.h5").write_bytes(os.urandom(2 * B + 3))
    (d / "run2.h5").write_bytes(b"two")
    (d / ".hidden.h5").write_bytes(b"hidden")
    (d / "notes.txt").write_bytes(b"not an h5")
    return d


# --- pull ---------------------------------------------------------------------------------
def test_pull_a_file_a_tree_and_a_glob(escp: object, tmp_path: Path) -> None:
    data = data_dir(tmp_path)
    src = tree(tmp_path / "tree")
    out = tmp_path / "out"
    out.mkdir()
    r = escp("-q", f"localhost:{data}/run1.h5", out)  # type: ignore[operator]
    assert r.code == 0, r.stderr
    assert (out / "run1.h5").read_bytes() == (data / "run1.h5").read_bytes()
    r = escp("-q", "-r", f"localhost:{src}", out)  # type: ignore[operator]
    assert r.code == 0, r.stderr
    assert_same_tree(src, out / "tree")
    globbed = tmp_path / "globbed"
    globbed.mkdir()
    r = escp("-q", f"localhost:{data}/*.h5", globbed)  # type: ignore[operator]
    assert r.code == 0, r.stderr
    assert sorted(os.listdir(globbed)) == ["run1.h5", "run2.h5"]  # a glob's * leaves hidden names alone
    assert not temp_files(out) and not temp_files(globbed)


def test_pull_several_sources_and_scp_destination_rules(escp: object, tmp_path: Path) -> None:
    data = data_dir(tmp_path)
    src = tree(tmp_path / "tree")
    out = tmp_path / "out"
    out.mkdir()
    r = escp("-q", "-r", f"localhost:{data}/run2.h5", f"localhost:{src}/", out)  # type: ignore[operator]
    assert r.code == 0, r.stderr
    assert (out / "run2.h5").read_bytes() == b"two"
    assert_same_tree(src, out / "tree")
    r = escp("-q", f"localhost:{data}/run1.h5", tmp_path / "renamed.h5")  # type: ignore[operator]
    assert r.code == 0, r.stderr
    assert (tmp_path / "renamed.h5").read_bytes() == (data / "run1.h5").read_bytes()
    r = escp("-q", "-r", f"localhost:{src}", tmp_path / "newdir")  # type: ignore[operator]
    assert r.code == 0, r.stderr
    assert_same_tree(src, tmp_path / "newdir")


@pytest.mark.parametrize("flags", [["-C", "--sparse"], ["-p", "--nochecksum", "-t", "1"],
                                   ["--blocksize", "256K", "-t", "8", "-l", "50M"]])
def test_pull_options(escp: object, tmp_path: Path, flags: list[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sparse = src / "sparse.bin"
    with open(sparse, "wb") as f:
        f.write(os.urandom(1000))
        f.seek(5 * B)
        f.write(b"tail")
    (src / "text.txt").write_bytes(b"compressible " * 50000)
    os.chmod(src / "text.txt", 0o640)
    os.utime(src / "text.txt", ns=(1_000_000_000, 2_000_000_000))
    out = tmp_path / "out"
    out.mkdir()
    r = escp("-q", "-r", *flags, f"localhost:{src}", out)  # type: ignore[operator]
    assert r.code == 0, r.stderr
    assert_same_tree(src, out / "src")
    st = os.stat(out / "src" / "text.txt")
    if "-p" in flags:
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == 2_000_000_000
    if "--sparse" in flags:
        assert os.stat(out / "src" / "sparse.bin").st_blocks * 512 < 5 * B  # the hole stayed a hole


def test_pull_filelist_names_remote_paths(escp: object, tmp_path: Path) -> None:
    data = data_dir(tmp_path)
    listing = tmp_path / "list.yaml"
    listing.write_text(f"- {data}/run1.h5\n- [{data}/run2.h5, nested/two.h5]\n")
    out = tmp_path / "out"
    out.mkdir()
    r = escp("-q", "--filelist", listing, "localhost:", out)  # type: ignore[operator]
    assert r.code == 0, r.stderr
    assert (out / "run1.h5").read_bytes() == (data / "run1.h5").read_bytes()
    assert (out / "nested" / "two.h5").read_bytes() == b"two"


def test_pull_reports_and_traces_name_each_host(escp: object, tmp_path: Path) -> None:
    data = data_dir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    report, trace = tmp_path / "r.json", tmp_path / "t.json"
    r = escp("--stats", "--json", report, "--trace", trace, f"localhost:{data}/run1.h5", out)  # type: ignore[operator]
    assert r.code == 0, r.stderr
    hosts = json.loads(report.read_text())["stats"]["hosts"]
    assert hosts["sender"] == "localhost" and hosts["receiver"].endswith("(local)"), hosts
    assert "sides: sender on localhost, receiver on " in r.stderr
    names = {e["pid"]: e["args"]["name"] for e in json.loads(trace.read_text())["traceEvents"]
             if e.get("name") == "process_name"}
    assert names[1] == "sender on localhost" and names[2].startswith("receiver on "), names
    stages = {(s["side"], s["stage"]) for s in json.loads(report.read_text())["stats"]["stages"]}
    assert {("sender", "read"), ("receiver", "write")} <= stages  # both sides' stages, each under its role


# --- remote to remote ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_remote_to_remote_tree_and_glob(escp: object, tmp_path: Path, mode: str) -> None:
    data = data_dir(tmp_path)
    src = tree(tmp_path / "tree")
    out = tmp_path / "out"
    out.mkdir()
    report = tmp_path / "r.json"
    r = escp(*MODES[mode], "-r", "-C", "--stats", "--json", report, f"localhost:{src}",  # type: ignore[operator]
             f"localhost:{data}/*.h5", f"127.0.0.1:{out}")
    assert r.code == 0, r.stderr
    assert_same_tree(src, out / "tree")
    assert (out / "run1.h5").read_bytes() == (data / "run1.h5").read_bytes()
    assert not (out / ".hidden.h5").exists() and not temp_files(out)
    doc = json.loads(report.read_text())
    assert doc["files"] == 5 and doc["files_failed"] == 0, doc
    assert doc["stats"]["hosts"] == {"sender": "localhost", "receiver": "127.0.0.1"}


@pytest.mark.parametrize("mode", MODES)
def test_remote_to_remote_single_file_to_a_new_name(escp: object, tmp_path: Path, mode: str) -> None:
    data = data_dir(tmp_path)
    r = escp(*MODES[mode], "-q", f"localhost:{data}/run1.h5", f"127.0.0.1:{tmp_path}/copy.h5")  # type: ignore[operator]
    assert r.code == 0, r.stderr
    assert (tmp_path / "copy.h5").read_bytes() == (data / "run1.h5").read_bytes()


# --- bad input ------------------------------------------------------------------------------
DIRECTIONS = ["pull", "direct", "relay"]


def destination(direction: str, path: Path) -> str:
    return str(path) if direction == "pull" else f"127.0.0.1:{path}"


def mode_args(direction: str) -> list[str]:
    return MODES.get(direction, [])


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_missing_remote_source_names_the_remote_path(escp: object, tmp_path: Path, direction: str) -> None:
    data = data_dir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    r = escp(*mode_args(direction), f"localhost:{data}/missing.h5", f"localhost:{data}/run2.h5",  # type: ignore[operator]
             destination(direction, out))
    check_error(r.code, r.stderr, [3], names=[f"localhost:{data}/missing.h5"], causes=["I/O"])
    assert "No such file or directory" in r.stderr
    assert sorted(os.listdir(out)) == ["run2.h5"]  # the rest arrived
    r = escp(*mode_args(direction), f"localhost:{data}/missing.h5", destination(direction, out))  # type: ignore[operator]
    check_error(r.code, r.stderr, [1], names=[f"localhost:{data}/missing.h5"])


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_unreadable_remote_file_fails_alone(escp: object, tmp_path: Path, direction: str) -> None:
    data = data_dir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    fault = {"ESCP_FAULT": "open:EACCES:match=run1:times=inf"}  # the sending server's open fails
    r = escp(*mode_args(direction), f"localhost:{data}/run1.h5", f"localhost:{data}/run2.h5",  # type: ignore[operator]
             destination(direction, out), env=fault)
    check_error(r.code, r.stderr, [3], names=[f"localhost:{data}/run1.h5"], causes=["I/O"])
    assert sorted(os.listdir(out)) == ["run2.h5"] and not temp_files(out)
    assert (data / "run1.h5").stat().st_size == 2 * B + 3  # nothing lost at the source


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_remote_directory_without_r(escp: object, tmp_path: Path, direction: str) -> None:
    src = tree(tmp_path / "tree")
    out = tmp_path / "out"
    out.mkdir()
    r = escp(*mode_args(direction), f"localhost:{src}", destination(direction, out))  # type: ignore[operator]
    check_error(r.code, r.stderr, [1], names=[f"localhost:{src}"])
    assert "use -r" in r.stderr and os.listdir(out) == []


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_destination_parent_missing_is_a_usage_error(escp: object, tmp_path: Path, direction: str) -> None:
    data = data_dir(tmp_path)
    r = escp(*mode_args(direction), f"localhost:{data}/run1.h5",  # type: ignore[operator]
             destination(direction, tmp_path / "nope" / "x.h5"))
    check_error(r.code, r.stderr, [2], names=[str(tmp_path / "nope")], causes=["usage"])
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_several_sources_into_a_file_is_a_usage_error(escp: object, tmp_path: Path, direction: str) -> None:
    data = data_dir(tmp_path)
    target = tmp_path / "existing.txt"
    target.write_bytes(b"keep me")
    r = escp(*mode_args(direction), f"localhost:{data}/run1.h5", f"localhost:{data}/run2.h5",  # type: ignore[operator]
             destination(direction, target))
    check_error(r.code, r.stderr, [2], names=[str(target)], causes=["usage"])
    assert target.read_bytes() == b"keep me"
    assert not temp_files(tmp_path)


@pytest.mark.parametrize("args", [["SRC", "localhost:/x", "DEST"], ["localhost:/x", "otherhost:/y", "DEST"],
                                  ["localhost:/x", "user@localhost:/y", "DEST"]],
                         ids=["local-and-remote", "two-hosts", "two-users"])
def test_sources_from_two_sides_are_a_usage_error(fake_ssh: FakeSsh, tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "SRC").write_bytes(b"x")
    r = run_escp(*args, cwd=tmp_path, env=fake_ssh.env())
    check_error(r.code, r.stderr, [2], causes=["usage"])
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr  # one error line (and the usage hint)
    assert fake_ssh.calls() == [], "ssh was started for a command line that cannot run"


def test_interrupted_pull_leaves_no_temp_file(fake_ssh: FakeSsh, remote_escp: Path, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(8 * B))
    out = tmp_path / "out"
    out.mkdir()
    gate = tmp_path / "gate"  # never created: the remote holds its third read until it is killed
    tag = uuid.uuid4().hex
    env = fake_ssh.env(ESCP_TEST_TAG=tag, ESCP_FAULT=f"read:hold:after=2:times=inf:file={gate}",
                       PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-m", "escp", "-q", "-D", str(remote_escp), "--blocksize", "256K",
                             "--escp_port", str(free_port_base()), f"localhost:{src}", str(out)],
                            env=env, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: temp_files(out), 60, "the first blocks written to a temp file")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert proc.stderr is not None and "interrupted" in proc.stderr.read().decode()
    assert os.listdir(out) == [], os.listdir(out)
    check_t(tag)
