"""The ssh side: BI-6/BI-7 (argv injection), FT-5 (ssh channel drops), FT-18 (remote escp
missing, wrong version, banner, exits at once, hangs)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from escp.errors import escape_name
from escp.protocol.bootstrap import decode_init
from escp.protocol.wire import BOOT_HEADER
from tests.conftest import FakeSsh
from tests.faults.cases import case
from tests.faults.proxy import FaultProxy
from tests.faults.util import (
    DEADLINE,
    Proc,
    Scene,
    check_error,
    no_listener,
    pinned,
    process_gone,
    temp_files,
    wait_for,
)
from tests.helpers import free_port_base, run_escp


def remote_args(port: int, remote: Path, *extra: str) -> list[str]:
    return ["-q", "--escp_port", str(port), "-D", str(remote), "--timeout", "10", *extra]


# --- BI-6 / BI-7 --------------------------------------------------------------------------
@case("BI-6")
@pytest.mark.parametrize("shell", [False, True])
def test_remote_path_metacharacters_never_reach_a_shell(fake_ssh: FakeSsh, remote_escp: Path, tmp_path: Path,
                                                        shell: bool) -> None:
    fake_ssh.set_shell(shell)  # even when the "remote" runs the command through sh -c
    src = tmp_path / "f.txt"
    src.write_bytes(b"payload")
    dest = tmp_path / "d"
    dest.mkdir()
    bad = "-x $(touch PWNED1); `touch PWNED2` ;touch PWNED3 'q\"uote"
    r = run_escp(*remote_args(free_port_base(), remote_escp), src, f"localhost:{dest}/{bad}", cwd=tmp_path,
                 env=fake_ssh.env())
    assert r.code == 0, r.stderr
    assert (dest / bad).read_bytes() == b"payload"
    for c in fake_ssh.calls():
        assert c["remote_command"] == f"{remote_escp} --server", c  # the path is never on the command line
        assert bad not in " ".join(c["argv"])
    assert not any(p.name.startswith("PWNED") for p in tmp_path.rglob("PWNED*"))


@case("BI-6")
def test_remote_path_starting_with_dash(fake_ssh: FakeSsh, remote_escp: Path, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"dash")
    home = tmp_path / "home"
    home.mkdir()
    fake_ssh.set_home(home)
    r = run_escp(*remote_args(free_port_base(), remote_escp), src, "localhost:-oProxyCommand=x", env=fake_ssh.env())
    assert r.code == 0, r.stderr
    assert (home / "-oProxyCommand=x").read_bytes() == b"dash"


@case("BI-7")
@pytest.mark.parametrize("target", ["-oProxyCommand=touch PWNED:x", "-lroot@host:x", "a;b@host:x", "-u@host:x",
                                    "us er@host:x", "$(touch PWNED)@host:x", "ho`st`:x", "[-oFoo]:x"])
def test_hostile_host_or_user_refused_before_ssh(fake_ssh: FakeSsh, tmp_path: Path, target: str) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"x")
    r = run_escp("-q", src, target, cwd=tmp_path, env=fake_ssh.env())
    check_error(r.code, r.stderr, [2], causes=["usage"])
    assert fake_ssh.calls() == [], "ssh was started for a hostile host/user"
    assert not (tmp_path / "PWNED").exists()


# --- FT-18 ------------------------------------------------------------------------------------
def one_file(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "f.txt"
    src.write_bytes(b"content")
    dest = tmp_path / "d"
    dest.mkdir()
    return src, dest


@case("FT-18")
@pytest.mark.parametrize("mode, expect", [
    ("missing", "remote escp not found"),
    ("refuse", "ssh failed"),
    ("exit0", "receiver exited (status 0) before the session started"),
    ("banner", "printed unexpected output instead of the escp greeting"),
    ("junk", "unexpected output"),
    ("hang", "ssh failed"),
])
def test_remote_escp_broken(fake_ssh: FakeSsh, remote_escp: Path, tmp_path: Path, mode: str, expect: str) -> None:
    fake_ssh.set_mode(mode)
    src, dest = one_file(tmp_path)
    env = fake_ssh.env(ESCP_FAKESSH_HANG_SECONDS="2", ESCP_FAKESSH_SEED="7")
    r = run_escp(*remote_args(free_port_base(), remote_escp), src, f"localhost:{dest}", env=env, timeout=DEADLINE)
    cause = {"banner": "protocol", "junk": "protocol", "refuse": "auth"}.get(mode, "connection")
    check_error(r.code, r.stderr, [1], causes=[cause])
    assert expect in r.stderr, r.stderr
    assert list(dest.iterdir()) == []


def fake_remote(tmp_path: Path, body: str) -> Path:
    """A stand-in for the remote escp: records its stdin, then runs `body` (Python)."""
    prog = tmp_path / "fake-remote-escp"
    record = tmp_path / "init.bin"
    prog.write_text(f"#!{sys.executable}\nimport os, sys, struct, time\nRECORD = {str(record)!r}\n{body}\n")
    prog.chmod(0o755)
    return prog


READ_INIT = """
hdr = os.read(0, 12)
n = struct.unpack('<4sBBHI', hdr)[4]
body = b''
while len(body) < n:
    chunk = os.read(0, n - len(body))
    if not chunk:
        break
    body += chunk
open(RECORD, 'wb').write(hdr + body)
"""


@case("FT-18")
def test_remote_speaks_another_protocol_version(fake_ssh: FakeSsh, tmp_path: Path) -> None:
    prog = fake_remote(tmp_path, READ_INIT + "os.write(1, struct.pack('<4sBBHI', b'ESCP', 9, 2, 0, 0))\n")
    src, dest = one_file(tmp_path)
    r = run_escp("-q", "-D", str(prog), src, f"localhost:{dest}", env=fake_ssh.env(), timeout=DEADLINE)
    check_error(r.code, r.stderr, [1], causes=["protocol"])
    assert "protocol version 9" in r.stderr


@case("FT-18")
def test_remote_echoing_our_init_never_prints_the_key(fake_ssh: FakeSsh, tmp_path: Path) -> None:
    """A remote that sends our own SessionInit back (key included): refused, key not shown."""
    prog = fake_remote(tmp_path, READ_INIT + "os.write(1, open(RECORD, 'rb').read())\ntime.sleep(1)\n")
    src, dest = one_file(tmp_path)
    r = run_escp("-D", str(prog), src, f"localhost:{dest}", env=fake_ssh.env(), timeout=DEADLINE)
    check_error(r.code, r.stderr, [1], causes=["protocol"])
    init = decode_init((tmp_path / "init.bin").read_bytes()[BOOT_HEADER.size:])
    for form in (init.key.hex(), escape_name(init.key), init.key.hex().upper()):
        assert form not in r.stderr + r.stdout


# --- FT-5: the ssh channel drops while the TCP streams are healthy -----------------------
RELAY = """#!{python}
# A stand-in for ssh: runs the remote command as a child and relays stdin/stdout, so
# SIGKILLing this process drops the "channel" while the receiver lives on.
import os, shlex, subprocess, sys, threading
child = subprocess.Popen(shlex.split(sys.argv[-1]), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
open({pidfile!r}, "w").write(str(child.pid))
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            child.stdin.close()
            return
        child.stdin.write(data)
        child.stdin.flush()
threading.Thread(target=up, daemon=True).start()
while True:
    data = os.read(child.stdout.fileno(), 65536)
    if not data:
        break
    os.write(1, data)
sys.exit(child.wait())
"""


@case("FT-5")
def test_ssh_killed_mid_transfer_receiver_aborts_and_cleans(remote_escp: Path, tmp_path: Path) -> None:
    sc = Scene(tmp_path)
    (sc.src / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    sc.freeze()
    relay = tmp_path / "relay-ssh"
    pidfile = tmp_path / "receiver.pid"
    relay.write_text(RELAY.format(python=sys.executable, pidfile=str(pidfile)))
    relay.chmod(0o755)
    with FaultProxy(sc.upstream, rate=1_000_000) as proxy:
        p = Proc("-q", "-S", str(relay), "-D", str(remote_escp), *pinned(sc), "--connect-to", proxy.address,
                 "--blocksize", "256K", "-t", "2", "--timeout", "20", sc.src / "big.bin", f"localhost:{sc.dest}")
        wait_for(lambda: any(os.path.getsize(t) > 0 for t in temp_files(sc.dest)), 20, "receiver writing")
        proxy.pause()  # the transfer cannot finish before the channel drops, however loaded the machine
        rx = int(pidfile.read_text())
        ssh_pid = p.p.pid  # the sender; its child is the relay ("ssh")
        relays = [int(x) for x in open(f"/proc/{ssh_pid}/task/{ssh_pid}/children").read().split()]
        assert relays, "no ssh child found"
        for r in relays:
            os.kill(r, signal.SIGKILL)
        proxy.resume()
        wait_for(lambda: process_gone(rx), DEADLINE, "receiver exit on stdin EOF")
        code = p.wait()
        check_error(code, p.stderr, [1], causes=["connection"])
        p.wait_gone()
    no_listener(sc.port, 1)
    sc.check_all()


