"""CLI features end to end over loopback: --filelist, --checksum-file/--verify-manifest,
--bits, -v, --logfile (files and syslog), --json outcomes, /etc/escp.conf (ESCP_CONFIG),
special and vanished sources, and usage errors for bad flag values."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, assert_same_tree, escp_argv, free_port_base, local, run_escp

B = 256 * 1024


def small_tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "c.txt").write_bytes(os.urandom(B + 5))
    (root / "a" / "d.txt").write_bytes(b"d" * 100)
    (root / "top.txt").write_bytes(b"top")


# --- --filelist ----------------------------------------------------------------------


def test_plain_filelist_keeps_relative_structure(tmp_path: Path) -> None:
    src = tmp_path / "src"
    small_tree(src)
    (tmp_path / "list.txt").write_bytes(b"a/b/c.txt\ntop.txt\n\n# a comment\n" + bytes(src / "a" / "d.txt") + b"\n")
    dst = tmp_path / "dst"
    dst.mkdir()
    r = local("--filelist", tmp_path / "list.txt", dst, cwd=src)
    assert r.code == 0, r.stderr
    assert (dst / "a" / "b" / "c.txt").read_bytes() == (src / "a" / "b" / "c.txt").read_bytes()
    assert (dst / "top.txt").read_bytes() == b"top"
    assert (dst / "d.txt").read_bytes() == b"d" * 100  # absolute path: sent under its base name
    assert sorted(p.name for p in dst.iterdir()) == ["a", "d.txt", "top.txt"]


def test_yaml_filelist_pairs_and_directories(tmp_path: Path) -> None:
    src = tmp_path / "src"
    small_tree(src)
    (tmp_path / "list.yaml").write_text(
        f"- [{src / 'top.txt'}, renamed/top-copy.txt]\n"
        f"- {src / 'a'}\n"
        f"- ['{src / 'a' / 'd.txt'}', 'x/y/z.txt']\n")
    dst = tmp_path / "dst"
    dst.mkdir()
    r = local("-r", "--filelist", tmp_path / "list.yaml", dst)
    assert r.code == 0, r.stderr
    assert (dst / "renamed" / "top-copy.txt").read_bytes() == b"top"
    assert (dst / "x" / "y" / "z.txt").read_bytes() == b"d" * 100
    assert_same_tree(src / "a", dst / "a")


def test_filelist_from_stdin(tmp_path: Path) -> None:
    src = tmp_path / "src"
    small_tree(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    r = local("--filelist", "-", dst, cwd=src, input=b"top.txt\na/d.txt\n")
    assert r.code == 0, r.stderr
    assert (dst / "top.txt").read_bytes() == b"top" and (dst / "a" / "d.txt").read_bytes() == b"d" * 100


def test_filelist_directory_without_r_and_missing_entry_fail_alone(tmp_path: Path) -> None:
    src = tmp_path / "src"
    small_tree(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    r = local("--filelist", "-", "--json", tmp_path / "r.json", dst, cwd=src, input=b"a\nmissing.txt\ntop.txt\n")
    assert r.code == 3, r.stderr
    assert (dst / "top.txt").read_bytes() == b"top"
    rep = json.loads((tmp_path / "r.json").read_text())
    bad = {o["path"]: o["cause"] for o in rep["outcomes"] if not o["ok"]}
    assert set(bad) == {"a", "missing.txt"} and rep["files"] == 1


@pytest.mark.parametrize("text", [b"- [top.txt, ../escape.txt]\n", b"- [top.txt, /etc/x]\n", b"- [a\n"])
def test_filelist_bad_names_are_usage_errors(tmp_path: Path, text: bytes) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    r = local("--filelist", "-", dst, input=text)
    assert r.code == 2, r.stderr
    assert r.stderr.startswith("escp: usage error: --filelist")
    assert list(dst.iterdir()) == [] and not (tmp_path / "escape.txt").exists()


def test_filelist_needs_an_existing_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    small_tree(src)
    r = local("--filelist", "-", tmp_path / "newname", cwd=src, input=b"top.txt\n")
    assert r.code == 2, r.stderr
    assert "must be an existing directory" in r.stderr and not (tmp_path / "newname").exists()


# --- manifests -------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--sparse", "-C"]])
def test_checksum_file_and_verify_manifest(tmp_path: Path, flags: list[str]) -> None:
    src = tmp_path / "src"
    small_tree(src)
    with open(src / "holes", "wb") as f:
        f.truncate(3 * B)
        f.seek(B)
        f.write(b"data")
    manifest = tmp_path / "m.txt"
    r = local("-r", "--blocksize", "256K", "--checksum-file", manifest, *flags, src, tmp_path / "dst")
    assert r.code == 0, r.stderr
    lines = manifest.read_text().splitlines()
    assert lines[0] == f"# escp-manifest v1 blocksize={B}" and len(lines) == 1 + 4
    assert all(re.match(r"^[0-9a-f]{32} \d+ \S+$", ln) for ln in lines[1:])
    # names are relative to the directory that received the top-level names: the copy's parent
    assert all(ln.split(" ", 2)[2].startswith("dst/") for ln in lines[1:]), lines
    v = run_escp("--verify-manifest", manifest, tmp_path)
    assert v.code == 0, v.stdout + v.stderr
    assert v.stdout.count("OK ") == 4
    with open(tmp_path / "dst" / "a" / "d.txt", "r+b") as f:
        f.write(b"X")
    v = run_escp("--verify-manifest", manifest, tmp_path)
    assert v.code == 3
    assert "FAILED dst/a/d.txt: content differs" in v.stdout and v.stdout.count("OK ") == 3


def test_verify_manifest_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("not a manifest\n")
    assert run_escp("--verify-manifest", tmp_path / "bad.txt", tmp_path).code == 2
    assert run_escp("--verify-manifest", tmp_path / "missing", tmp_path).code == 2
    assert run_escp("--verify-manifest", tmp_path / "bad.txt", tmp_path / "nodir").code == 2


# --- output, logging, reports --------------------------------------------------------------


def test_bits_and_verbose_output(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(B))
    out = tmp_path / "out"
    out.mkdir()
    r = run_escp("--local", "--escp_port", str(free_port_base()), "--bits", "-v", f, out)
    assert r.code == 0, r.stderr
    assert re.search(r"Complete: .* at [\d.]+ [kMG]?bit/s", r.stderr), r.stderr
    assert "host configuration" in r.stderr and "session " in r.stderr
    r = run_escp("--local", "--escp_port", str(free_port_base()), f, out)
    assert re.search(r"at [\d.]+ [kMG]?B/s", r.stderr) and "session " not in r.stderr


def test_logfile_writes_client_and_server_logs_with_the_session_id(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(1000))
    out = tmp_path / "out"
    out.mkdir()
    r = local("-v", "--logfile", tmp_path / "escp.log", f, out)
    assert r.code == 0, r.stderr
    client = (tmp_path / "escp.log.client").read_text().splitlines()
    server = (tmp_path / "escp.log.server").read_text().splitlines()
    assert client and server
    pat = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (client|server) ([0-9a-f]{16}) ")
    ids = {pat.match(line).group(2) for line in client + server if pat.match(line)}  # type: ignore[union-attr]
    assert len(ids) == 1, ids
    assert any("stream 1 connected" in line for line in server)


def test_logfile_syslog_facility(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    sock_path = str(tmp_path / "log.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(10)
    try:
        r = local("-v", "--logfile", "local3", f, out, env={**os.environ, "ESCP_SYSLOG_SOCKET": sock_path})
        assert r.code == 0, r.stderr
        msg = s.recv(4096).decode()
    finally:
        s.close()
    pri = int(msg[1 : msg.index(">")])
    assert pri >> 3 == 19  # LOG_LOCAL3
    assert "escp[" in msg


def test_logfile_syslog_without_socket_warns_and_runs(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    r = local("--logfile", "LOCAL0", f, out, env={**os.environ, "ESCP_SYSLOG_SOCKET": str(tmp_path / "none")})
    assert r.code == 0, r.stderr
    assert "syslog socket" in r.stderr and "missing" in r.stderr
    assert (out / "f.bin").read_bytes() == b"x"


def test_json_outcomes_for_every_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    small_tree(src)
    (tmp_path / "dst").mkdir()
    r = local("-r", "--json", tmp_path / "r.json", src, tmp_path / "missing-source", tmp_path / "dst")
    assert r.code == 3, r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    by_path = {o["path"]: o for o in rep["outcomes"]}
    assert by_path[str(src / "a" / "b" / "c.txt")] == {
        "name": "src/a/b/c.txt", "path": str(src / "a" / "b" / "c.txt"), "size": B + 5, "ok": True,
        "status": "copied", "bytes_resumed": 0, "cause": None, "message": None}
    missing = by_path[str(tmp_path / "missing-source")]
    assert missing["ok"] is False and missing["name"] is None and missing["cause"] == "I/O"
    assert missing["status"] == "failed"
    assert rep["outcomes_total"] == 4 and rep["outcomes_truncated"] is False


# --- /etc/escp.conf ------------------------------------------------------------------------


def test_host_config_cpumask_is_applied_and_reported(tmp_path: Path) -> None:
    conf = tmp_path / "escp.conf"
    conf.write_text('cpumask: "0x1"\nnodemask: [0]\n')
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(2 * B))
    out = tmp_path / "out"
    out.mkdir()
    r = local("-v", f, out, env={**os.environ, "ESCP_CONFIG": str(conf)})
    assert r.code == 0, r.stderr
    assert "cpus 0; nodemask 0" in r.stderr
    assert (out / "f.bin").read_bytes() == f.read_bytes()


@pytest.mark.parametrize("text", ['cpumask: "zz"\n', "cpumask: [99999]\n", "bogus: 1\n", "cpumask: [\n"])
def test_host_config_bad_values_are_usage_errors(tmp_path: Path, text: str) -> None:
    conf = tmp_path / "escp.conf"
    conf.write_text(text)
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    r = local(f, tmp_path / "out.bin", env={**os.environ, "ESCP_CONFIG": str(conf)})
    assert r.code == 2, r.stderr
    assert r.stderr.startswith("escp: usage error: ") and str(conf) in r.stderr.splitlines()[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "out.bin").exists()


# --- sources that change, vanish, or are not regular files -----------------------------------


def start_escp(*args: str | os.PathLike[str], fault: str = "") -> subprocess.Popen[bytes]:
    """escp --local in the background; `fault` is an ESCP_FAULT spec (escp/engine/faults.py)."""
    argv = escp_argv("--local", "--escp_port", str(free_port_base()), *args)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if fault:
        env["ESCP_FAULT"] = fault
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def wait_for_part_file(dst: Path, name: str, proc: subprocess.Popen[bytes]) -> bool:
    """True once the receiver's temp file of `name` exists: that file is being transferred."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if dst.is_dir() and any(p.name.startswith(f".{name}.escp-") for p in dst.iterdir()):
            return True
        time.sleep(0.01)
    return False


def test_file_growing_during_transfer_is_never_reported_ok_with_other_content(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    grow = src / "grow.bin"
    original = os.urandom(2 << 20)
    grow.write_bytes(original)
    (src / "steady.bin").write_bytes(os.urandom(B))
    dst = tmp_path / "dst"
    gate = tmp_path / "gate"  # grow.bin's reads after its first wait for it: the append lands mid-file
    proc = start_escp("-r", "-t", "1", "--blocksize", "256K", src, dst,
                      fault=f"read:hold:after=1:times=inf:match=grow:file={gate}")
    try:
        mid_file = wait_for_part_file(dst, "grow.bin", proc)
        with open(grow, "ab") as fh:
            fh.write(b"appended while escp reads")
        gate.touch()
        _, err_bytes = proc.communicate(timeout=120)
    finally:
        gate.touch()
        proc.kill()
    err = err_bytes.decode(errors="replace")
    assert (dst / "steady.bin").read_bytes() == (src / "steady.bin").read_bytes()
    if proc.returncode == 0:
        assert (dst / "grow.bin").read_bytes() == original  # a consistent snapshot, never a mix
    else:
        assert proc.returncode == 3, err
        assert mid_file and "grow.bin: source file changed during the transfer" in err, err
        assert not (dst / "grow.bin").exists()


def test_file_shrinking_or_vanishing_during_transfer_fails_alone(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a_shrink.bin").write_bytes(os.urandom(2 << 20))
    (src / "b_vanish.bin").write_bytes(os.urandom(2 << 20))
    (src / "c_steady.bin").write_bytes(os.urandom(B))
    dst = tmp_path / "dst"
    gate = tmp_path / "gate"  # a_shrink's reads after its first, and all of b_vanish's, wait for it
    proc = start_escp("-r", "-t", "2", "--blocksize", "256K", src, dst,
                      fault=f"read:hold:after=1:times=inf:match=a_shrink:file={gate};"
                            f"read:hold:times=inf:match=b_vanish:file={gate}")
    try:
        assert wait_for_part_file(dst, "a_shrink.bin", proc)
        os.truncate(src / "a_shrink.bin", 1000)
        os.unlink(src / "b_vanish.bin")
        gate.touch()
        _, err_bytes = proc.communicate(timeout=120)
    finally:
        gate.touch()
        proc.kill()
    err = err_bytes.decode(errors="replace")
    assert proc.returncode == 3, err
    assert (dst / "c_steady.bin").read_bytes() == (src / "c_steady.bin").read_bytes()
    assert not (dst / "a_shrink.bin").exists() and not (dst / "b_vanish.bin").exists()
    assert re.search(r"a_shrink\.bin: .*(shrank|changed)", err), err
    assert re.search(r"b_vanish\.bin: .*(vanished|changed|cannot open|cannot stat)", err), err


def test_fifo_device_and_vanished_sources_are_skipped_without_hanging(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")  # nobody ever writes: opening it would hang a naive reader
    (src / "ok.txt").write_bytes(b"ok")
    out = tmp_path / "out"
    out.mkdir()
    r = run_escp("--local", "--escp_port", str(free_port_base()), "-r", src, "/dev/null",
                 tmp_path / "gone.txt", src / "pipe", out, timeout=60)
    assert r.code == 3, r.stderr  # gone.txt failed; the special files are warnings
    assert "pipe: escp" not in r.stderr
    assert re.search(r"pipe: is a FIFO; skipped", r.stderr)
    assert re.search(r"/dev/null: is a device; skipped", r.stderr)
    assert re.search(r"gone\.txt: cannot access source", r.stderr)
    assert (out / "src" / "ok.txt").read_bytes() == b"ok"
    assert not (out / "src" / "pipe").exists() and not (out / "null").exists()


# --- usage errors ----------------------------------------------------------------------


BAD_FLAGS = [
    ["-t", "0"], ["-t", "x"], ["-t", "65"], ["--blocksize", "1K"], ["--blocksize", "abc"],
    ["--blocksize", "65M"], ["--compress-level", "0"], ["--compress-level", "23"], ["--compress-level", "x"],
    ["--ioengine", "foo"], ["--ioengine", "posix::foo"], ["--ioengine", "posix::dummy::posix"],
    ["-l", "0"], ["-l", "abc"], ["-l", "1K"], ["-l", "-5M"], ["-P", "0"], ["-P", "70000"], ["-P", "x"],
    ["--escp_port", "0"], ["--escp_port", "x"], ["--escp_portrange", "0"], ["--timeout", "0"],
    ["--timeout", "nan"], ["--timeout", "x"], ["--connect-to", "nohostport"], ["--logfile", "LOCAL8"],
    ["--logfile", "/nonexistent/dir/log"], ["--json", "/nonexistent/r.json"], ["--trace", "/nonexistent/t"],
    ["--checksum-file", "/nonexistent/m"], ["--nochecksum", "--checksum-file", "m.txt"],
    ["--filelist", "/nonexistent/list"], ["-4", "-6"], ["--bogus"], ["--rekey-bytes", "1"],
]


@pytest.mark.parametrize("flags", BAD_FLAGS, ids=lambda f: " ".join(f))
def test_bad_flag_values_exit_2_before_anything_runs(tmp_path: Path, flags: list[str]) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"x")
    r = run_escp("--local", *flags, f, tmp_path / "copy.txt", cwd=tmp_path)
    assert r.code == 2, (flags, r.stderr)
    lines = r.stderr.splitlines()
    assert lines[0].startswith("escp: usage error: ") and len(lines) == 2 and lines[1].startswith("usage:"), lines
    assert not (tmp_path / "copy.txt").exists()
