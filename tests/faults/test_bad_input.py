"""BI-1..BI-16 (reliability-tests.md 6.1): bad input from the local user, the command line
and the local filesystem. BI-6 and BI-7 (ssh argv) are in test_ssh_faults.py."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from escp.errors import ProtocolError
from escp.paths import is_within, split_peer_name
from tests.conftest import FakeSsh
from tests.faults.cases import case
from tests.faults.util import Proc, Scene, check_error, no_listener, temp_files, wait_for
from tests.helpers import assert_same_tree, local, run_escp

B = 256 * 1024


def esc(sc: Scene, *args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 60):
    """escp --local into sc.dest, with T checked (nothing left listening)."""
    r = local("--blocksize", "256K", *args, port=sc.port, env=env, timeout=timeout)
    no_listener(sc.port)
    return r


def loud(sc: Scene, *args: str | os.PathLike[str]):
    """Like esc() but without -q, so warnings show."""
    r = run_escp("--local", "--escp_port", str(sc.port), *args, timeout=30)
    no_listener(sc.port)
    return r


def rm_tree(path: Path) -> None:
    """rm -rf (deep and over-long trees defeat shutil.rmtree and pytest's own clean-up)."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=False)


# --- BI-1 ---------------------------------------------------------------------------------
@case("BI-1")
def test_one_missing_source_others_copied_exit_partial(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    (sc.src / "a").write_bytes(b"A")
    (sc.src / "c").write_bytes(b"C" * 300_000)
    sc.freeze()
    r = esc(sc, sc.src / "a", sc.src / "missing", sc.src / "c", sc.dest)
    check_error(r.code, r.stderr, [3], names=["missing"], causes=["I/O"])
    assert sorted(os.listdir(sc.dest)) == ["a", "c"]  # no empty file for the missing one
    sc.check_all()


@case("BI-1")
def test_all_sources_missing_exit_failure(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    sc.freeze()
    r = esc(sc, sc.src / "nope1", sc.src / "nope2", sc.dest)
    check_error(r.code, r.stderr, [1], names=["nope1", "nope2"])
    assert os.listdir(sc.dest) == []
    sc.check_all()


# --- BI-2 ---------------------------------------------------------------------------------
@case("BI-2")
def test_unreadable_source(tmp_path: Path) -> None:
    """mode 000; root reads anyway, so the open fails through the fault hook as well."""
    sc = Scene(tmp_path)
    (sc.src / "secret").write_bytes(b"s")
    (sc.src / "secret").chmod(0)
    (sc.src / "fine").write_bytes(b"f")
    sc.freeze()
    env = {**os.environ, "ESCP_FAULT": "open:EACCES:times=inf:match=secret"} if os.geteuid() == 0 else None
    r = esc(sc, sc.src / "secret", sc.src / "fine", sc.dest, env=env)
    check_error(r.code, r.stderr, [3], names=["secret"], causes=["I/O"])
    assert "Permission denied" in r.stderr
    assert os.listdir(sc.dest) == ["fine"]
    sc.check_all()


@case("BI-2")
def test_directory_without_r(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    (sc.src / "d").mkdir()
    (sc.src / "f").write_bytes(b"f")
    sc.freeze()
    r = esc(sc, sc.src / "d", sc.src / "f", sc.dest)
    check_error(r.code, r.stderr, [3], names=["d"])
    assert "use -r" in r.stderr
    assert os.listdir(sc.dest) == ["f"]


@case("BI-2")
def test_fifo_socket_device_skipped_never_opened(tmp_path: Path) -> None:
    """A FIFO with no writer would block an open() for reading forever: the run must not hang."""
    sc = Scene(tmp_path)
    os.mkfifo(sc.src / "fifo")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(sc.src / "sock"))
    (sc.src / "f").write_bytes(b"f")
    (sc.src / "tree").mkdir()
    os.mkfifo(sc.src / "tree" / "fifo2")
    (sc.src / "tree" / "g").write_bytes(b"g")
    sc.freeze()
    r = loud(sc, sc.src / "fifo", sc.src / "sock", "/dev/null", sc.src / "f", sc.dest)
    assert r.code == 0, r.stderr  # skipped with a warning: not a failure
    for what in ("fifo: is a FIFO; skipped", "sock: is a socket; skipped", "/dev/null: is a device; skipped"):
        assert what in r.stderr, r.stderr
    assert os.listdir(sc.dest) == ["f"]
    r = loud(sc, "-r", sc.src / "tree", sc.dest)
    assert "fifo2: is a FIFO; skipped" in r.stderr
    assert r.code == 0 and sorted(os.listdir(sc.dest / "tree")) == ["g"], r.stderr
    srv.close()
    sc.check_all()


# --- BI-3 ---------------------------------------------------------------------------------
@case("BI-3")
def test_several_sources_onto_a_regular_file_refused(tmp_path: Path, fake_ssh: FakeSsh) -> None:
    sc = Scene(tmp_path)
    (sc.src / "a").write_bytes(b"a")
    (sc.src / "b").write_bytes(b"b")
    (sc.dest / "file").write_bytes(b"existing")
    sc.freeze()
    r = esc(sc, sc.src / "a", sc.src / "b", sc.dest / "file")
    check_error(r.code, r.stderr, [2], names=["file"], causes=["usage"])
    assert "not a directory" in r.stderr
    sc.check_all()


@case("BI-3")
def test_destination_parent_missing_refused(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    (sc.src / "a").write_bytes(b"a")
    sc.freeze()
    r = esc(sc, sc.src / "a", sc.dest / "no" / "such" / "x")
    check_error(r.code, r.stderr, [2], names=["no/such"], causes=["usage"])
    assert os.listdir(sc.dest) == []
    sc.check_all()


# --- BI-4 ---------------------------------------------------------------------------------
@case("BI-4")
@pytest.mark.parametrize("how", ["same", "dotdot", "symlink-src", "symlink-dest", "hardlink", "into-dir"])
def test_copy_onto_itself_refused_content_unchanged(tmp_path: Path, how: str) -> None:
    sc = Scene(tmp_path)
    f = sc.dest / "f.txt"
    f.write_bytes(b"precious")
    (sc.dest / "sub").mkdir()
    src, dst = f, f
    if how == "dotdot":
        dst = sc.dest / "sub" / ".." / "f.txt"
    elif how == "symlink-src":
        (sc.src / "alias").symlink_to(f)
        src = sc.src / "alias"
        dst = sc.dest / "f.txt"
    elif how == "symlink-dest":
        (sc.dest / "ln").symlink_to("f.txt")
        dst = sc.dest / "ln"
    elif how == "hardlink":
        os.link(f, sc.src / "hard")
        src = sc.src / "hard"
    elif how == "into-dir":
        dst = sc.dest
    sc.freeze()
    r = esc(sc, src, dst)
    check_error(r.code, r.stderr, [2], causes=["usage"])
    assert "same file" in r.stderr
    assert f.read_bytes() == b"precious"
    sc.check_all()


@case("BI-4")
def test_directory_into_itself_refused(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    (sc.src / "sub").mkdir()
    (sc.src / "sub" / "x").write_bytes(b"x")
    sc.freeze()
    for dst in (sc.src, sc.src / "sub", sc.src / "sub" / "new"):
        r = esc(sc, "-r", sc.src, dst)
        check_error(r.code, r.stderr, [2], causes=["usage"])
        assert "into itself" in r.stderr
    sc.check_all()


# --- BI-5 ---------------------------------------------------------------------------------
NAMES = [b"with space", b"new\nline", b"tab\there", b"*?[x]", b"`touch BT`", b"$(touch X)", b";", b"quo'te\"",
         b"-leading", b"\xff\xfe-not-utf8", b"\x1b[31mesc", b"N" * 255]


@case("BI-5")
def test_hostile_names_round_trip_and_run_nothing(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    root = os.fsencode(sc.src)
    for i, n in enumerate(NAMES):
        with open(os.path.join(root, n), "wb") as fh:
            fh.write(b"%d" % i)
    deep = os.path.join(root, b"D" * 175, b"E" * 175, b"F" * 175)
    os.makedirs(deep)
    with open(os.path.join(deep, b"G" * 175), "wb") as fh:
        fh.write(b"deep")
    sc.freeze()
    r = local("-r", sc.src, sc.dest, port=sc.port, cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert_same_tree(sc.src, sc.dest / "src")
    for marker in ("X", "BT"):
        assert not (tmp_path / marker).exists() and not (sc.dest / marker).exists()
    sc.check_all()


@case("BI-5")
def test_overlong_path_gives_error_not_crash(tmp_path: Path) -> None:
    """A source tree nested past PATH_MAX (built with dir fds): a clean E, never a traceback."""
    sc = Scene(tmp_path)
    (sc.src / "short").write_bytes(b"ok")
    sc.freeze()
    fd = os.open(sc.src, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 x 201 bytes > 4096
            os.mkdir(b"L" * 200, dir_fd=fd)
            nfd = os.open(b"L" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open(b"leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    try:
        r = esc(sc, "-r", sc.src, sc.dest)
        check_error(r.code, r.stderr, [3])
        assert "File name too long" in r.stderr
        assert (sc.dest / "src" / "short").read_bytes() == b"ok"
        sc.check_contained()
    finally:
        rm_tree(sc.src / ("L" * 200))
        rm_tree(sc.dest / "src" / ("L" * 200))
    assert not temp_files(sc.dest)


# --- BI-8 ---------------------------------------------------------------------------------
@case("BI-8")
def test_symlinks_in_source_policy(tmp_path: Path) -> None:
    """Top-level symlinks are followed; symlinks inside a tree are skipped with a warning,
    never followed (so nothing outside the tree is read) and never created."""
    sc = Scene(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"outside the tree")
    tree = sc.src / "tree"
    tree.mkdir()
    (tree / "real").write_bytes(b"real")
    (tree / "to_file").symlink_to(tree / "real")
    (tree / "to_dir").symlink_to(outside)
    (tree / "to_secret").symlink_to(outside / "secret")
    (tree / "dangling").symlink_to(tmp_path / "nowhere")
    (tree / "loop").symlink_to(tree)
    (tree / "self").symlink_to("self")
    (sc.src / "top_link").symlink_to(tree / "real")
    sc.freeze()
    r = loud(sc, "-r", tree, sc.src / "top_link", sc.dest)
    assert r.code == 0, r.stderr
    assert r.stderr.count("symbolic link inside a tree; not followed") == 6, r.stderr
    assert (sc.dest / "top_link").read_bytes() == b"real"  # top level: followed
    assert sorted(os.listdir(sc.dest / "tree")) == ["real"]
    for dirpath, dirnames, filenames in os.walk(sc.dest):
        for n in dirnames + filenames:
            assert not os.path.islink(os.path.join(dirpath, n))
            if os.path.isfile(os.path.join(dirpath, n)):
                assert Path(dirpath, n).read_bytes() != b"outside the tree"
    sc.check_all()


# --- BI-9 ---------------------------------------------------------------------------------
def _grow(p: Path) -> None:
    with open(p, "ab") as fh:
        fh.write(b"more" * 1000)


def _shrink(p: Path) -> None:
    os.truncate(p, 1000)


def _delete(p: Path) -> None:
    p.unlink()


def _to_symlink(p: Path) -> None:
    tmp = p.with_name("swap")
    tmp.symlink_to("/etc/hostname")
    os.replace(tmp, p)


@case("BI-9")
@pytest.mark.parametrize("mutate, says", [(_grow, "changed"), (_shrink, "shrank|changed"), (_delete, "vanished"),
                                          (_to_symlink, "vanished")], ids=["grow", "shrink", "delete", "symlink"])
def test_source_changes_during_transfer(tmp_path: Path, mutate, says: str) -> None:  # type: ignore[no-untyped-def]
    """The sender's reads of big.bin after the second are held by the fault hook (`read:hold`)
    until the mutation is done, so it lands while the file is being read."""
    import re

    sc = Scene(tmp_path)
    big = sc.src / "big.bin"
    big.write_bytes(os.urandom(12 * B))
    (sc.src / "other.txt").write_bytes(b"other")
    sc.freeze()
    gate = tmp_path / "gate"
    env = {**os.environ, "ESCP_FAULT": f"read:hold:after=2:times=inf:match=big.bin:file={gate}"}
    p = Proc("--local", "-q", "--escp_port", str(sc.port), "--blocksize", "256K", "-t", "2", sc.src / "other.txt",
             big, sc.dest, env=env)
    try:
        wait_for(lambda: any(b"big.bin" in t and os.path.getsize(t) > 0 for t in temp_files(sc.dest)), 20,
                 "big.bin mid-transfer")
        mutate(big)
    finally:
        gate.touch()
    code = p.wait()
    p.wait_gone()
    no_listener(sc.port)
    check_error(code, p.stderr, [3], names=["big.bin"], causes=["I/O"])
    assert re.search(says, p.stderr), p.stderr
    assert not (sc.dest / "big.bin").exists()  # never a silently mixed file reported as OK
    assert (sc.dest / "other.txt").read_bytes() == b"other"
    assert not temp_files(sc.dest)
    sc.check_contained()


# --- BI-10 --------------------------------------------------------------------------------
@case("BI-10")
def test_read_error_mid_file(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    (sc.src / "bad.bin").write_bytes(os.urandom(6 * B))
    (sc.src / "good.bin").write_bytes(os.urandom(2 * B + 1))
    (sc.dest / "bad.bin").write_bytes(b"old bad")
    sc.freeze()
    env = {**os.environ, "ESCP_FAULT": "read:EIO:after=2:match=bad.bin"}
    r = esc(sc, "-t", "2", sc.src / "bad.bin", sc.src / "good.bin", sc.dest, env=env)
    check_error(r.code, r.stderr, [3], names=["bad.bin"], causes=["I/O"])
    assert "read error: Input/output error" in r.stderr
    assert (sc.dest / "bad.bin").read_bytes() == b"old bad"
    assert (sc.dest / "good.bin").read_bytes() == (sc.src / "good.bin").read_bytes()
    sc.check_all()


# --- BI-11 --------------------------------------------------------------------------------
@case("BI-11")
def test_existing_destinations_policy(tmp_path: Path) -> None:
    """Overwrite policy (scp): an existing file - newer, identical or read-only - is replaced
    by the complete new copy; a symlink is replaced, never written through; a directory in
    the way fails that file; an immutable file fails with E and stays unchanged."""
    sc = Scene(tmp_path)
    for n in ("newer", "same", "ro", "link", "isdir", "immut"):
        (sc.src / n).write_bytes(b"new " + n.encode())
    (sc.dest / "newer").write_bytes(b"old newer")
    os.utime(sc.dest / "newer", (time.time() + 3600, time.time() + 3600))
    (sc.dest / "same").write_bytes(b"new same")
    (sc.dest / "ro").write_bytes(b"old ro")
    (sc.dest / "ro").chmod(0o444)
    target = sc.top / "dest2" / "x"  # a sentinel: must not be written through the link
    (sc.dest / "link").symlink_to(target)
    (sc.dest / "isdir").mkdir()
    (sc.dest / "immut").write_bytes(b"old immut")
    immutable = subprocess.run(["chattr", "+i", str(sc.dest / "immut")], capture_output=True).returncode == 0
    try:
        sc.freeze()
        r = esc(sc, *[sc.src / n for n in ("newer", "same", "ro", "link", "isdir", "immut")], sc.dest)
        names = ["isdir"] + (["immut"] if immutable else [])
        check_error(r.code, r.stderr, [3], names=names)
        for n in ("newer", "same", "ro", "link") + (() if immutable else ("immut",)):
            assert (sc.dest / n).read_bytes() == b"new " + n.encode(), n
        assert not (sc.dest / "link").is_symlink()
        assert (sc.dest / "isdir").is_dir()
        if immutable:
            assert (sc.dest / "immut").read_bytes() == b"old immut"
        sc.check_contained()
        assert not temp_files(sc.dest)
    finally:
        subprocess.run(["chattr", "-i", str(sc.dest / "immut")], capture_output=True)


# --- BI-12 --------------------------------------------------------------------------------
@case("BI-12")
def test_planted_symlink_components_not_followed(tmp_path: Path) -> None:
    """dest/src/sub is a symlink to the sentinel dest2 (planted by someone else): the files
    that would go below it fail with E; nothing is written through it."""
    sc = Scene(tmp_path)
    (sc.src / "sub").mkdir()
    (sc.src / "sub" / "x").write_bytes(b"attack")
    (sc.src / "sub" / "y").write_bytes(b"attack y")
    (sc.src / "ok.txt").write_bytes(b"ok")
    (sc.dest / "src").mkdir()
    (sc.dest / "src" / "sub").symlink_to(sc.top / "dest2")
    sc.freeze()
    r = esc(sc, "-r", sc.src, sc.dest)
    check_error(r.code, r.stderr, [3], names=["src/sub"])
    assert "symlinks are not followed" in r.stderr or "not a directory" in r.stderr
    assert (sc.dest / "src" / "ok.txt").read_bytes() == b"ok"
    assert (sc.dest / "src" / "sub").is_symlink()
    sc.check_all()  # dest2/x is unchanged, no dest2/y


@case("BI-12")
def test_operator_given_destination_may_be_a_symlink(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    (sc.src / "a").write_bytes(b"a")
    real = sc.dest / "real"
    real.mkdir()
    (sc.dest / "alias").symlink_to(real)
    sc.freeze()
    r = esc(sc, sc.src / "a", sc.dest / "alias")
    assert r.code == 0, r.stderr
    assert (real / "a").read_bytes() == b"a"
    sc.check_contained()


# --- BI-13 --------------------------------------------------------------------------------
@case("BI-13")
def test_containment_is_by_components() -> None:
    assert not is_within("/t/dest", "/t/dest2/x")
    assert not is_within("/t/dest", "/t/dest_backup/x")
    assert not is_within("/t/dest", "/t/dest/../dest2/x")
    assert is_within("/t/dest", "/t/dest/x/../y")
    for bad in (b"../dest2/x", b"a/../../dest2/x", b"/t/dest2/x", b"./../dest_backup", b"x/..", b""):
        with pytest.raises(ProtocolError):
            split_peer_name(bad)


@case("BI-13")
def test_sibling_prefix_names_stay_inside(tmp_path: Path) -> None:
    """Sources named like the sentinels land inside dest, never next to it."""
    sc = Scene(tmp_path)
    for n in ("dest2", "dest_backup"):
        (sc.src / n).mkdir()
        (sc.src / n / "x").write_bytes(b"from source " + n.encode())
    sc.freeze()
    r = esc(sc, "-r", sc.src / "dest2", sc.src / "dest_backup", sc.dest)
    assert r.code == 0, r.stderr
    assert (sc.dest / "dest2" / "x").read_bytes() == b"from source dest2"
    sc.check_all()


# --- BI-14 --------------------------------------------------------------------------------
@case("BI-14")
@pytest.mark.parametrize("opts", [["-t", "0"], ["-t", "1000"], ["-t", "-3"], ["--blocksize", "-1"],
                                  ["--blocksize", "1K"], ["--blocksize", "1T"], ["--escp_port", "0"],
                                  ["--escp_port", "70000"], ["--escp_portrange", "0"],
                                  ["--escp_port", "65530", "--escp_portrange", "10"], ["--ioengine", "bogus"],
                                  ["--ioengine", "posix::uring"], ["--timeout", "0"], ["-t", "x"], ["--nosuch"]])
def test_invalid_options_usage_error_before_ssh(tmp_path: Path, fake_ssh: FakeSsh, opts: list[str]) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"f")
    r = run_escp(*opts, src, "host:dir", env=fake_ssh.env())
    check_error(r.code, r.stderr, [2], causes=["usage"])
    assert "usage:" in r.stderr
    assert fake_ssh.calls() == []


# --- BI-15 --------------------------------------------------------------------------------
def data_regions(path: Path) -> list[tuple[int, int]]:
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end))
            pos = end
    finally:
        os.close(fd)
    return out


def same_sparse(a: Path, b: Path) -> None:
    """Equal size; equal bytes in a's data regions; b's data only where a has data."""
    assert a.stat().st_size == b.stat().st_size
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for start, end in data_regions(a):
            fa.seek(start)
            fb.seek(start)
            assert fa.read(end - start) == fb.read(end - start)
    bs = 1024 * 1024
    src_blocks = {o // bs for s, e in data_regions(a) for o in range(s, e, bs)} | \
                 {(e - 1) // bs for s, e in data_regions(a)}
    for s, e in data_regions(b):
        for o in range(s - s % bs, e, bs):
            assert o // bs in src_blocks, f"data at {o} in the copy where the source has a hole"


@case("BI-15")
@pytest.mark.parametrize("size", [2**31, 2**32, 2**32 + 1])
def test_sparse_sizes_at_2_31_and_2_32(tmp_path: Path, size: int) -> None:
    sc = Scene(tmp_path)
    sc.freeze()  # before the sparse file: the oracles' snapshots read whole files
    f = sc.src / "sparse.bin"
    with open(f, "wb") as fh:
        fh.write(b"head")
        fh.seek(2**31 - 3)
        fh.write(b"straddles 2^31")
        fh.truncate(size)
        fh.seek(size - 5)
        fh.write(b"tail!")
    r = esc(sc, "--sparse", "-t", "4", f, sc.dest)
    assert r.code == 0, r.stderr
    same_sparse(f, sc.dest / "sparse.bin")
    sc.check_contained()
    assert not temp_files(sc.dest)


@case("BI-15")
@pytest.mark.parametrize("size", [0, 1, B - 1, B, B + 1, 2 * B - 1, 2 * B + 1])
def test_block_edge_sizes_with_existing_longer_destination(tmp_path: Path, size: int) -> None:
    """Sizes around the block edge replacing a longer existing file: no stale tail bytes."""
    sc = Scene(tmp_path)
    (sc.src / "f").write_bytes(os.urandom(size))
    (sc.dest / "f").write_bytes(b"\xaa" * (3 * B))
    sc.freeze()
    r = esc(sc, "-t", "3", sc.src / "f", sc.dest)
    assert r.code == 0, r.stderr
    assert (sc.dest / "f").read_bytes() == (sc.src / "f").read_bytes()
    sc.check_all()


# --- BI-16 --------------------------------------------------------------------------------
FULL = os.environ.get("ESCP_LOAD_FULL") == "1"
MANY = 100_000 if FULL else 20_000  # 100k empty files take ~2 min here: CI runs 20k (set ESCP_LOAD_FULL=1)


@case("BI-16", "LD-2")
@pytest.mark.slow
def test_many_empty_files(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    d = sc.src / "many"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY)
    try:
        for i in range(MANY):
            os.close(os.open(f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    r = esc(sc, "-r", d, sc.dest, timeout=300)
    assert r.code == 0, r.stderr
    assert len(os.listdir(sc.dest / "many")) == MANY
    assert not temp_files(sc.dest)


@case("BI-16")
def test_deep_tree_1000_levels(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    fd = os.open(sc.src, os.O_RDONLY)
    try:
        for _ in range(1000):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    try:
        r = esc(sc, "-r", sc.src, sc.dest, timeout=120)
        assert r.code == 0, r.stderr
        leaf = os.path.join(str(sc.dest / "src"), *(["d"] * 1000), "leaf")
        assert os.path.isfile(leaf)
        assert "Traceback" not in r.stderr
    finally:
        rm_tree(sc.src / "d")
        rm_tree(sc.dest / "src" / "d")


@case("BI-16")
def test_same_source_named_ten_times_copied_once(tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    (sc.src / "f").write_bytes(b"once")
    (sc.src / "alias").symlink_to("f")
    sc.freeze()
    r = esc(sc, *([sc.src / "f"] * 10), sc.src / "alias", sc.src / ".." / "src" / "f", sc.dest)
    assert r.code == 0, r.stderr
    assert os.listdir(sc.dest) == ["f"]
    assert (sc.dest / "f").read_bytes() == b"once"
    sc.check_all()

