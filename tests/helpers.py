"""Helpers shared by the integration tests: run escp as a real process, compare trees."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 120


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    argv: list[str]


def free_port_base() -> int:
    """A random start of a 10-port range for one receiver (collisions just move it up)."""
    return random.randrange(20000, 60000, 10)


def escp_argv(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "escp", *map(str, args)]


def run_escp(*args: str | os.PathLike[str], timeout: float = RUN_TIMEOUT, env: dict[str, str] | None = None,
             cwd: str | os.PathLike[str] | None = None, input: bytes | None = None) -> Run:
    argv = escp_argv(*args)
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    p = subprocess.run(argv, capture_output=True, timeout=timeout, env=e, cwd=cwd, input=input)
    return Run(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"), argv)


def local(*args: str | os.PathLike[str], port: int | None = None, **kw: object) -> Run:
    """escp --local with a random port range, quiet."""
    return run_escp("--local", "-q", "--escp_port", str(port or free_port_base()), *args, **kw)  # type: ignore[arg-type]


def random_file(path: Path, size: int) -> Path:
    """path filled with `size` random bytes, written 1 MiB at a time; returns path."""
    with open(path, "wb") as f:
        for off in range(0, size, 1 << 20):
            f.write(os.urandom(min(1 << 20, size - off)))
    return path


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def tree_listing(root: Path) -> dict[bytes, tuple[str, int, str]]:
    """relative name -> (kind, size, sha256) for every entry below root (no symlink following)."""
    out: dict[bytes, tuple[str, int, str]] = {}
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, broot)
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0, "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_size, file_digest(Path(os.fsdecode(full))))
            else:
                out[rel] = ("other", 0, "")
    return out


def assert_same_tree(src: Path, dst: Path) -> None:
    a, b = tree_listing(src), tree_listing(dst)
    assert a.keys() == b.keys(), f"names differ: only src {sorted(a.keys() - b.keys())[:5]}, " \
                                 f"only dst {sorted(b.keys() - a.keys())[:5]}"
    for k in a:
        assert a[k] == b[k], f"{k!r} differs"


def no_temp_files(root: Path) -> bool:
    return not any(b".escp-" in name for name in tree_listing(root))
