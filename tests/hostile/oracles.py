"""Oracles of reliability-tests.md 6.0 for the hostile-peer tests: E, C, P, T.

`Sentinels` builds a tree around the destination:

    <tmp>/parent/                  the destination's parent (holds a sentinel file)
    <tmp>/parent/dest/             the destination (may start empty or with files)
    <tmp>/parent/dest2/x           sibling-prefix traps (Erlang CVE-2026-23942 class)
    <tmp>/parent/dest_backup/x
    <tmp>/home/.ssh/authorized_keys   a fake $HOME/.ssh

snapshot() hashes everything outside dest (names, kinds, modes, owners, mtimes,
contents, symlink targets) plus dest's own mode/owner (and times on request);
check_c() compares with the snapshot taken at construction.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

TEMP_RE = re.compile(rb"\.escp-[0-9a-f]{16}\.part$")
CAUSES = ("integrity", "protocol", "I/O", "timeout", "auth", "connection", "usage", "error", "partial")


def _entry_sig(path: bytes, st: os.stat_result) -> tuple[object, ...]:
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            h = hashlib.sha256(f.read()).hexdigest()
        return ("f", st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size, h)
    if stat.S_ISLNK(st.st_mode):
        return ("l", os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("d", st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    return ("o", st.st_mode)


def tree_sig(root: Path, skip: Path | None = None) -> dict[bytes, tuple[object, ...]]:
    """Signature of every entry below root (not following symlinks), skipping `skip`'s contents."""
    out: dict[bytes, tuple[object, ...]] = {}
    broot = os.fsencode(root)
    bskip = os.fsencode(skip) if skip is not None else None
    out[b"."] = _entry_sig(broot, os.lstat(broot))
    for dirpath, dirnames, filenames in os.walk(broot):
        if bskip is not None and dirpath == bskip:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            sig = _entry_sig(full, st)
            if bskip is not None and full == bskip:
                sig = ("dest", st.st_mode, st.st_uid, st.st_gid)  # its times change when files land
            out[os.path.relpath(full, broot)] = sig
    return out


@dataclass
class Sentinels:
    base: Path

    def __post_init__(self) -> None:
        self.parent = self.base / "parent"
        self.dest = self.parent / "dest"
        self.home = self.base / "home"
        for d in (self.dest, self.parent / "dest2", self.parent / "dest_backup", self.home / ".ssh"):
            d.mkdir(parents=True, exist_ok=True)
        (self.parent / "dest2" / "x").write_bytes(b"sibling dest2\n")
        (self.parent / "dest_backup" / "x").write_bytes(b"sibling dest_backup\n")
        (self.parent / "x").write_bytes(b"parent sentinel\n")
        (self.parent / "etc_passwd_decoy").write_bytes(b"root:x:0:0\n")
        (self.home / ".ssh" / "authorized_keys").write_bytes(b"ssh-ed25519 AAAA sentinel\n")
        self.before = self.snapshot()
        st = os.stat(self.dest)
        self.dest_before = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)

    def snapshot(self) -> dict[bytes, tuple[object, ...]]:
        return tree_sig(self.base, skip=self.dest)

    def check_c(self, *, dest_times: bool = False) -> None:
        """C: nothing outside dest changed; dest's mode/owner (and times if asked) unchanged."""
        after = self.snapshot()
        changed = sorted(k for k in before_after_keys(self.before, after) if self.before.get(k) != after.get(k))
        assert not changed, f"C violated: changed outside the destination: {changed[:10]}"
        st = os.stat(self.dest)
        now = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
        if dest_times:
            assert now == self.dest_before, "C violated: destination root's mode/owner/times changed"
        else:
            assert now[:3] == self.dest_before[:3], "C violated: destination root's mode/owner changed"


def before_after_keys(a: dict[bytes, object], b: dict[bytes, object]) -> set[bytes]:
    return set(a) | set(b)


def dest_files(dest: Path) -> dict[bytes, bytes]:
    """relative name -> content of every regular file below dest."""
    out = {}
    bdest = os.fsencode(dest)
    for dirpath, _dirs, files in os.walk(bdest):
        for name in files:
            full = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(full).st_mode):
                with open(full, "rb") as f:
                    out[os.path.relpath(full, bdest)] = f.read()
    return out


def check_p(dest: Path, allowed: dict[bytes, bytes] | None = None) -> None:
    """P: no temp file left; every file under a final name is one of `allowed` with its content."""
    allowed = allowed or {}
    files = dest_files(dest)
    temps = [n for n in files if TEMP_RE.search(n)]
    assert not temps, f"P violated: temp files left behind: {temps}"
    for name, content in files.items():
        assert name in allowed, f"P violated: {name!r} published but should not be"
        assert content == allowed[name], f"P violated: {name!r} published with wrong content"


def check_e(code: int, stderr: str, *, cause: str | tuple[str, ...] | None = None,
            codes: tuple[int, ...] = (1, 3), name: str | None = None) -> str:
    """E: non-zero exit in `codes`; an 'escp: <cause> error: ...' line; no traceback; no raw
    control characters. Returns the error line."""
    assert code in codes, f"E: exit code {code} not in {codes}; stderr: {stderr[-2000:]}"
    assert "Traceback" not in stderr, f"E: traceback on stderr:\n{stderr[-3000:]}"
    bad = [c for c in stderr if (ord(c) < 0x20 and c not in "\n") or 0x7F <= ord(c) < 0xA0]
    assert not bad, f"E: raw control characters on stderr: {bad[:5]!r}"
    causes = (cause,) if isinstance(cause, str) else (cause or CAUSES)
    pat = re.compile(r"^escp: (" + "|".join(re.escape(c) for c in causes) + r") error: ")
    lines = [ln for ln in stderr.splitlines() if pat.match(ln)]
    assert lines, f"E: no 'escp: {causes} error:' line on stderr:\n{stderr[-2000:]}"
    if name is not None:
        assert any(name in ln for ln in lines), f"E: {name!r} not named in {lines}"
    return lines[-1]


# --- T: processes and listeners ------------------------------------------------------------


def listeners() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket (IPv4 addresses dotted, IPv6 in hex)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A":
                addr_hex, port_hex = parts[1].rsplit(":", 1)
                addr = socket.inet_ntoa(bytes.fromhex(addr_hex)[::-1]) if len(addr_hex) == 8 else addr_hex
                found.add((addr, int(port_hex, 16)))
    return found


def listening_ports() -> set[int]:
    return {port for _, port in listeners()}


def tagged_pids(tag: str) -> list[int]:
    """Live processes whose environment carries ESCP_TEST_TAG=tag (zombies excluded)."""
    needle = f"ESCP_TEST_TAG={tag}".encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if needle not in Path(f"/proc/{d}/environ").read_bytes().split(b"\0"):
                continue
            st = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        if st.rsplit(")", 1)[1].split()[0] != "Z":
            pids.append(int(d))
    return pids


def check_t(tag: str | None = None, ports: range | list[int] | None = None, timeout: float = 15.0,
            address: str | None = None) -> None:
    """T: no tagged process alive and none of `ports` listening (on `address`, when the
    receiver was pinned to one: the same port number on another address is another test's),
    within timeout."""
    end = time.monotonic() + timeout
    while True:
        left_pids = tagged_pids(tag) if tag else []
        bound = {port for addr, port in listeners() if address is None or addr in (address, "0.0.0.0")}
        left_ports = sorted(set(ports or ()) & bound)
        if not left_pids and not left_ports:
            return
        if time.monotonic() > end:
            raise AssertionError(f"T violated: processes {left_pids} / listeners {left_ports} left behind")
        time.sleep(0.1)
