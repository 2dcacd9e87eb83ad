"""LD-5 at scale (issue 16): many sessions to one host queue for its ports, never fail
because others run, and none can slow or break another, whichever server listens (the
receiver of a push, the sender of a pull or of a remote-to-remote copy, both with -3).

Each test pins its listening servers to a loopback address of its own (`--bind`), so
parallel tests never meet on a port. Sessions are made to overlap by the fault hook, never by
timing: `read:hold:times=inf:file=GATE` holds each sender at its reads, i.e. after its streams
are in and before any data flows, until the test opens the gate (`times=inf`: every
read waits for it, not only the first); blockers (listening
sockets of the test) hold every port of a range busy until the test sees the sessions
wait for one.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

from escp.protocol import messages as M
from escp.protocol.wire import SETUP_PROGRESS
from tests.conftest import FakeSsh
from tests.faults.cases import case
from tests.faults.test_load import B, tree
from tests.faults.util import Proc, fixed_port, private_loopback, process_gone, temp_files
from tests.helpers import assert_same_tree
from tests.hostile.peer import HostileSender, entry, strangers

WAITING = "is busy; waiting for one"  # the initiator's -v line for a SetupProgress (§2.11)
R2R_MODES = {"direct": [], "relay": ["-3"]}  # remote to remote: straight from A to B, or through here
SESSION_DEADLINE = 120.0  # generous: a busy 2-core CI machine starts 16 interpreters here


STREAM_STATES = ("01", "08")  # ESTABLISHED, CLOSE_WAIT (the sender's FIN after its EOS)


def tcp_sockets(addr: str, ports: set[int]) -> dict[str, int]:
    """How many TCP sockets with local address addr:port (port in ports) listen, and how many
    are streams (established, or half-closed by the peer): {"listen": n, "established": m},
    from /proc/net/tcp (IPv4)."""
    local = socket.inet_aton(addr)[::-1].hex().upper()
    counts = {"listen": 0, "established": 0}
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = row.split()
        host, port = cols[1].split(":")
        if host != local or int(port, 16) not in ports:
            continue
        if cols[3] == "0A":
            counts["listen"] += 1
        elif cols[3] in STREAM_STATES:
            counts["established"] += 1
    return counts


def wait_until(what: str, check: object, timeout: float = SESSION_DEADLINE) -> None:
    end = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.05)


class Session(Proc):
    """An escp --local run whose stderr lines are read as they come (to see it wait)."""

    def __init__(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None) -> None:
        super().__init__(*args, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.p.stderr is not None
        for raw in self.p.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def wait(self, timeout: float = SESSION_DEADLINE) -> int:
        try:
            code = self.p.wait(timeout=timeout)
        except Exception:
            self.kill_all()
            raise AssertionError(f"T: sender still running after {timeout} s:\n" + "\n".join(self.lines)) from None
        self._reader.join(10)
        self.stderr = "\n".join(self.lines)
        return code

    def waiting(self, server: str = "") -> bool:
        """The initiator said (-v) that a server waits for a port (`server`: its data role)."""
        return any(WAITING in ln and ln.startswith(f"escp: {server}") for ln in self.lines)


class Blockers:
    """Listening sockets of the test on addr:ports: every port of the range busy."""

    def __init__(self, addr: str, ports: list[int]) -> None:
        self.socks = []
        for port in ports:
            s = socket.socket()
            s.bind((addr, port))
            s.listen(1)
            self.socks.append(s)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def sessions_env(gate: Path) -> dict[str, str]:
    return {**os.environ, "ESCP_FAULT": f"read:hold:times=inf:file={gate}"}


def start_session(base: Path, name: str, addr: str, port: int, port_range: int, env: dict[str, str],
                  files: int = 6, pull_with: Path | None = None, timeout: int = 60) -> tuple[Session, Path, Path]:
    """A push with --local, or with `pull_with` (the remote escp, over the fake ssh) a pull
    from localhost: its sending server listens. `timeout`: its --timeout (idle deadline)."""
    src = base / name / "src"
    dest = base / name / "dest"
    src.mkdir(parents=True)
    dest.mkdir()
    tree(src, files)  # small files: they travel on the metadata stream
    (src / "big.bin").write_bytes(os.urandom(3 * B + 17))  # blocks for both data streams
    server: tuple[str | Path, ...] = ("--local",) if pull_with is None else ("-D", pull_with)
    source = src if pull_with is None else f"localhost:{src}"
    s = Session(*server, "-v", "--bind", addr, "--escp_port", str(port), "--escp_portrange", str(port_range),
                "-t", "2", "--blocksize", "256K", "--timeout", str(timeout), "-r", source, dest, env=env)
    return s, src, dest


def one_file_session(tmp_path: Path, addr: str, port: int, port_range: int, timeout: int) -> tuple[Session, Path]:
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(300_000))
    dest = tmp_path / "dest"
    dest.mkdir()
    s = Session("--local", "-v", "--bind", addr, "--escp_port", str(port), "--escp_portrange", str(port_range),
                "--timeout", str(timeout), src, dest)
    return s, dest


def check_exact(s: Session, src: Path, dest: Path) -> None:
    assert s.wait() == 0, s.stderr
    s.wait_gone()
    assert_same_tree(src, dest / "src")
    assert not temp_files(dest)


@case("LD-5")
def test_eight_sessions_queue_for_two_ports(tmp_path: Path) -> None:
    """--escp_portrange 2, 8 sessions at once. While both ports are held busy each session
    waits for one and says so (-v); freed, they all get in, and each releases its port as
    soon as its streams are in: all 8 are connected at the same time on 2 ports, none
    listening; then all complete, exact."""
    eight_on_two_ports(tmp_path, sessions_env(tmp_path / "GATE"), "receiver")


@case("LD-5")
def test_eight_pulls_queue_for_two_ports(tmp_path: Path, fake_ssh: FakeSsh, remote_escp: Path) -> None:
    """The same with 8 pulls: each sending server listens, waits for a port and says so
    (the initiator's -v names the sender), releases its port once its streams are in; all
    complete, exact."""
    eight_on_two_ports(tmp_path, fake_ssh.env(**sessions_env(tmp_path / "GATE")), "sender", remote_escp)


def eight_on_two_ports(tmp_path: Path, env: dict[str, str], listening: str, pull_with: Path | None = None) -> None:
    """8 sessions (pushes, or pulls with `pull_with`) on 2 ports held busy until each
    initiator says its `listening` server waits; then all 8 in at once, none listening
    (the gate holds their data), then all complete, exact."""
    addr, port = private_loopback(), fixed_port()
    ports = {port, port + 1}
    gate = tmp_path / "GATE"
    blockers = Blockers(addr, sorted(ports))
    runs = []
    try:
        runs = [start_session(tmp_path, f"s{i}", addr, port, 2, env, pull_with=pull_with) for i in range(8)]
        wait_until(f"every {listening} says it waits for a port",
                   lambda: all(s.waiting(listening) for s, _, _ in runs))
        blockers.close()
        # 8 sessions x 3 streams in at once on 2 ports: each stopped listening once its streams were in
        wait_until("all 8 sessions connected at once",
                   lambda: tcp_sockets(addr, ports) == {"listen": 0, "established": 24})
        gate.touch()
        for s, src, dest in runs:
            check_exact(s, src, dest)
    finally:
        gate.touch()
        blockers.close()
        for s, _, _ in runs:
            s.kill_all()
    assert tcp_sockets(addr, ports) == {"listen": 0, "established": 0}


@case("LD-5")
def test_remote_to_remote_servers_wait_for_ports(tmp_path: Path, fake_ssh: FakeSsh, remote_escp: Path) -> None:
    """Remote to remote, directly and with -3, on a range of 2 ports all held busy: A (the
    sending server, which listens in both) waits and says so; freed, the copy completes,
    exact, and no listener stays (with -3 B listened too: on the other port)."""
    addr, base = private_loopback(), fixed_port()
    for n, (mode, flags) in enumerate(R2R_MODES.items()):
        port = base + 2 * n  # the first copy's streams linger in TIME_WAIT on its ports
        ports = {port, port + 1}
        src = tmp_path / mode / "src"
        dest = tmp_path / mode / "dest"
        src.mkdir(parents=True)
        dest.mkdir()
        tree(src, 4)
        (src / "big.bin").write_bytes(os.urandom(2 * B + 5))
        blockers = Blockers(addr, sorted(ports))
        s = Session("-D", remote_escp, *flags, "-v", "--bind", addr, "--escp_port", str(port), "--escp_portrange", "2",
                    "-t", "2", "--blocksize", "256K", "-r", f"localhost:{src}", f"localhost:{dest}",
                    env=fake_ssh.env())
        try:
            wait_until(f"{mode}: A says it waits for a port", lambda s=s: s.waiting("sender"))  # type: ignore[misc]
        finally:
            blockers.close()
        check_exact(s, src, dest)
        assert tcp_sockets(addr, ports)["listen"] == 0, mode


@case("LD-5", "HP-20")
def test_strangers_at_one_session_touch_no_other(tmp_path: Path) -> None:
    """A session still waiting for its streams holds the first port of the range; strangers
    crowd it (idle, junk, a wrongly keyed HELLO, more than the pending-handshake cap). The
    other sessions take the second port one after the other and complete, exact; then the
    crowded session's own streams get in past the strangers and it completes too; its
    listener is gone afterwards (the strangers with it)."""

    addr, port = private_loopback(), fixed_port()
    gate = tmp_path / "GATE"
    crowded_dest = tmp_path / "crowded"
    crowded_dest.mkdir()
    stop = threading.Event()
    held: list[socket.socket] = []
    with HostileSender(crowded_dest, port_base=port, bind_address=addr) as crowded:
        crowded.start()
        assert crowded.address == (addr, port)
        try:
            held += strangers(crowded.address, stop, flood=80)
            runs = [start_session(tmp_path, f"s{i}", addr, port, 2, sessions_env(gate)) for i in range(3)]
            wait_until("the others connected on the second port",
                       lambda: tcp_sockets(addr, {port + 1}) == {"listen": 0, "established": 9})
            gate.touch()
            for s, src, dest in runs:
                check_exact(s, src, dest)
            meta, data = crowded.connect_all()
            content = os.urandom(1000)
            meta.send(M.encode_file_list([entry(0, b"f", len(content))]))
            crowded.send_file(meta, data[0], 0, content)
            crowded.finish(meta, data, 1)
            msgs = crowded.collect(meta)
            code, err = crowded.wait()
        finally:
            gate.touch()
            stop.set()
            for sock in held:
                sock.close()
    assert code == 0, err
    assert any(isinstance(m, M.SessionDone) for m in msgs)
    assert (crowded_dest / "f").read_bytes() == content
    assert tcp_sockets(addr, {port, port + 1})["listen"] == 0


@case("LD-5")
def test_deadline_passes_while_waiting_for_a_port(tmp_path: Path) -> None:
    """Every port stays busy: the receiver waits up to its idle deadline (--timeout 1 asks
    for 1 s, the receiver's floor is 5 s), then a clear error naming the range and how long
    it waited, exit 1, and nothing left: no process, no listening port, no file."""
    addr, port = private_loopback(), fixed_port()
    blockers = Blockers(addr, [port, port + 1])
    try:
        s, dest = one_file_session(tmp_path, addr, port, 2, timeout=1)
        code = s.wait()
        s.wait_gone()
    finally:
        blockers.close()
    assert code == 1, s.stderr
    assert s.waiting(), s.stderr
    assert "Traceback" not in s.stderr
    last = s.stderr.splitlines()[-1]
    m = re.search(rf"no free port in {port}-{port + 1} on {re.escape(addr)} \(Address already in use\) "
                  r"after waiting (\d+\.\d) s for one$", last)
    assert last.startswith("escp: connection error: ") and m and float(m.group(1)) >= 5.0, last
    assert tcp_sockets(addr, {port, port + 1}) == {"listen": 0, "established": 0}
    assert os.listdir(dest) == []


@case("LD-5", "FT-4")
def test_a_waiting_receiver_whose_initiator_dies_exits(tmp_path: Path) -> None:
    """The sender is killed while its receiver waits for a port (up to 60 s here): the
    receiver sees its stdin close and exits well before its wait would end, leaving no
    listener and no file."""
    addr, port = private_loopback(), fixed_port()
    blockers = Blockers(addr, [port])
    s, dest = one_file_session(tmp_path, addr, port, 1, timeout=60)
    try:
        wait_until("the session says it waits", s.waiting)
        receiver = s.wait_receiver()
        os.kill(s.pid, signal.SIGKILL)
        s.wait()
        wait_until("the receiver is gone", lambda: process_gone(receiver), timeout=30)
    finally:
        blockers.close()
        s.kill_all()
    assert tcp_sockets(addr, {port}) == {"listen": 0, "established": 0}
    assert os.listdir(dest) == []


@case("LD-5")
def test_an_initiator_without_progress_gets_its_error_in_time(tmp_path: Path) -> None:
    """An initiator that does not read SetupProgress (one older than it) gets no such message:
    the first bytes are the SessionReply, an error after a wait short enough to beat that
    initiator's own set-up deadline (protocol.md §2.11)."""
    addr, port = private_loopback(), fixed_port()
    blockers = Blockers(addr, list(range(port, port + 10)))  # the hostile sender's range is 10 ports
    try:
        with HostileSender(tmp_path, port_base=port, bind_address=addr, idle_timeout_ms=1000) as hs:
            assert not hs.init.setup_features & SETUP_PROGRESS
            hs.send_boot()
            reply = hs.read_reply(timeout=30)  # a SetupProgress first would fail this read
            code, err = hs.wait()
    finally:
        blockers.close()
    assert "no free port" in reply.error and "after waiting" in reply.error, reply
    assert reply.error_cause == "connection"
    assert code == 1, err


@case("LD-5", "FT-3")
def test_a_killed_session_leaves_the_other_alone(tmp_path: Path) -> None:
    """Two sessions through ONE port (each releases it once its streams are in): SIGKILL of
    one receiver fails that session only; the other completes, exact."""
    addr, port = private_loopback(), fixed_port()
    gate = tmp_path / "GATE"
    env = sessions_env(gate)
    a, _, _ = start_session(tmp_path, "a", addr, port, 1, env)
    try:
        wait_until("session a connected", lambda: tcp_sockets(addr, {port}) == {"listen": 0, "established": 3})
        b, b_src, b_dest = start_session(tmp_path, "b", addr, port, 1, env)
        wait_until("session b connected too", lambda: tcp_sockets(addr, {port}) == {"listen": 0, "established": 6})
        os.kill(a.wait_receiver(), signal.SIGKILL)
        assert a.wait() == 1, a.stderr
        a.wait_gone()
        gate.touch()
        check_exact(b, b_src, b_dest)
    finally:
        gate.touch()
        a.kill_all()


@case("LD-5", "FT-6")
def test_a_stalled_session_slows_no_other(tmp_path: Path) -> None:
    """A receiver that stalls (SIGSTOP) while its session runs, and one that stalls while it
    still listens (its sender never connects) holding a port: the other sessions complete,
    exact, while both are stopped; the first resumes (SIGCONT) and completes too."""
    addr, port = private_loopback(), fixed_port()
    gate = tmp_path / "GATE"
    env = sessions_env(gate)
    with HostileSender(tmp_path / "nowhere", port_base=port, bind_address=addr) as listening:
        listening.start()
        assert listening.address == (addr, port)  # it holds the first port of the range
        os.kill(listening.proc.pid, signal.SIGSTOP)
        # a stays stopped while the others start and finish (minutes on a busy machine): its own
        # idle deadline must not be what ends it
        a, a_src, a_dest = start_session(tmp_path, "a", addr, port, 2, env, timeout=int(5 * SESSION_DEADLINE))
        stopped = None
        try:
            wait_until("session a connected", lambda: tcp_sockets(addr, {port + 1})["established"] == 3)
            stopped = a.wait_receiver()
            os.kill(stopped, signal.SIGSTOP)
            others = [start_session(tmp_path, f"s{i}", addr, port, 2, env) for i in range(3)]
            wait_until("the others connected", lambda: tcp_sockets(addr, {port + 1})["established"] == 12)
            gate.touch()
            for s, src, dest in others:
                check_exact(s, src, dest)
            os.kill(stopped, signal.SIGCONT)
            stopped = None
            check_exact(a, a_src, a_dest)
        finally:
            gate.touch()
            if stopped is not None:
                os.kill(stopped, signal.SIGCONT)
            os.kill(listening.proc.pid, signal.SIGCONT)
            a.kill_all()
