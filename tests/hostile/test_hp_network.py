"""HP-20 .. HP-29: a network attacker who does NOT know the key, between or beside a real
sender and a real receiver on 127.0.0.1 (FrameProxy via --connect-to, stray sockets).

Tampering cases must never end in success: E (integrity/protocol/auth/connection
cause, exit 1), P (no file published), T (both processes and the listener gone). Off-path
cases must keep the legitimate transfer intact (S).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from escp.protocol import messages as M
from escp.protocol import wire as W
from tests.cases import case
from tests.faults.util import fixed_port, private_loopback
from tests.helpers import escp_argv
from tests.hostile.oracles import check_e, check_p, check_t, listening_ports
from tests.hostile.peer import HostileSender, child_env, entry, file_digest, strangers
from tests.hostile.proxy import FrameProxy, replay

B = W.MIN_BLOCK
FIRST_DATA_L = W.DATA_HDR.size + B + W.TAG_LEN  # L of a full data frame with 256K blocks
BAD = ("integrity", "protocol", "auth", "connection", "timeout")


@dataclass
class Outcome:
    code: int
    stderr: str
    src: Path
    out: Path
    proxy: FrameProxy
    port: int


def proxied(tmp_path: Path, tag: str, *, size: int = 4 * B + 5, streams: int = 1, throttle: float = 0.0,
            actions: dict | None = None, flips: dict | None = None, gate: threading.Event | None = None,
            during: Callable[[FrameProxy, tuple[str, int]], None] | None = None,
            extra: tuple[str, ...] = ()) -> Outcome:
    """escp --local through a FrameProxy to a receiver pinned to its own loopback address and
    port; `during(proxy, receiver_address)` runs while the transfer does."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    addr, port = private_loopback(), fixed_port()  # the receiver binds only there (see private_loopback)
    with FrameProxy((addr, port), actions=actions, flips=flips, throttle=throttle, gate=gate) as proxy:
        p = subprocess.Popen(escp_argv("--local", "-q", "--escp_port", str(port), "--escp_portrange", "1",
                                       "--bind", addr, "--connect-to", proxy.connect_to, "--blocksize", "256K", "-t", str(streams),
                                       "--timeout", "10", *extra, src, out),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), text=True)
        try:
            if during is not None:
                during(proxy, (addr, port))
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=5)
    check_t(tag, ports=[port], address=addr)
    return Outcome(p.returncode, err, src, out, proxy, port)


def assert_refused(o: Outcome, *, receiver_may_have_completed: bool = False) -> None:
    """Never success on the sender; nothing published, or (when only the receiver's answers
    were tampered with) the complete, verified copy - never corrupt data."""
    check_e(o.code, o.stderr, cause=BAD, codes=(1,))
    check_p(o.out, {b"src.bin": o.src.read_bytes()} if receiver_may_have_completed else {})


def assert_intact(o: Outcome) -> None:
    assert o.code == 0, o.stderr
    check_p(o.out, {b"src.bin": o.src.read_bytes()})


def wait_listening(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while port not in listening_ports():
        assert time.monotonic() < end, f"receiver never listened on {port}"
        time.sleep(0.05)


# --- HP-20 strangers ------------------------------------------------------------------------------


@case("HP-20")
def test_strangers_before_and_during_the_transfer(tmp_path: Path, tag: str) -> None:
    gate = threading.Event()
    stop = threading.Event()
    held: list[socket.socket] = []

    def during(proxy: FrameProxy, receiver: tuple[str, int]) -> None:
        wait_listening(receiver[1])
        held.extend(strangers(receiver, stop))  # all before the sender's streams reach the receiver
        gate.set()

    try:
        o = proxied(tmp_path, tag, size=8 * B + 3, streams=2, gate=gate, during=during)
    finally:
        stop.set()
        for s in held:
            s.close()
    assert_intact(o)


@case("HP-20")
def test_strangers_closed_at_their_deadline_and_logged(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    hs = HostileSender(dest)
    with hs:
        hs.start()
        stop = threading.Event()
        held = strangers(hs.address, stop, flood=0)
        idle = held[0]
        t0 = time.monotonic()
        idle.settimeout(20)
        try:
            idle.recv(32)  # the challenge
            assert idle.recv(1) == b""  # then EOF at the handshake deadline
        except ConnectionResetError:
            pass
        waited = time.monotonic() - t0
        assert waited < 16, waited
        meta, data = hs.connect_all()  # S: the legitimate peer still gets in and completes
        meta.send(M.encode_file_list([entry(0, b"f", 3)]))
        hs.send_file(meta, data[0], 0, b"abc")
        hs.finish(meta, data, 1)
        msgs = hs.collect(meta)
        stop.set()
        for s in held:
            s.close()
        code, err = hs.wait()
    assert code == 0, err
    assert any(isinstance(m, M.SessionDone) for m in msgs)
    assert (dest / "f").read_bytes() == b"abc"
    lines = [ln for ln in err.splitlines() if "connection from ('127.0.0.1'" in ln]
    assert any("auth error" in ln for ln in lines), err[-3000:]
    assert any("timeout error" in ln for ln in lines), err[-3000:]
    assert "Traceback" not in err


@case("HP-20", "HP-22")
def test_listening_ends_once_every_stream_is_in(tmp_path: Path) -> None:
    """While the receiver listens, a replayed HELLO, a second HELLO for a taken index and an
    idle stranger get nothing; the last stream's ACCEPT ends the listening (protocol.md
    §3.2): the idle stranger is dropped, a new connection is refused, and the established
    streams carry the session to its end as before."""
    from escp.protocol.crypto import handshake_key, hello_proof

    dest = tmp_path / "dest"
    dest.mkdir()
    with HostileSender(dest, streams=2, port_base=fixed_port(), bind_address=private_loopback()) as hs:
        hs.start()
        meta, first = hs.connect(0), hs.connect(1)
        assert meta is not None and first is not None
        stale = hello_proof(handshake_key(hs.init.key, hs.init.session_id), hs.init.session_id, os.urandom(32), 2)
        assert hs.connect(2, proof=stale) is None  # a replay: its proof answers another challenge
        assert hs.connect(1) is None  # a valid proof, but the index is taken
        idle = socket.create_connection(hs.address, timeout=20)
        assert len(idle.recv(32)) > 0  # a pending handshake: it got its challenge
        second = hs.connect(2)
        assert second is not None  # every stream is in
        try:
            while idle.recv(64):  # dropped (at once, at the latest at its handshake deadline)
                pass
        except OSError:
            pass
        idle.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(hs.address, timeout=10).close()
        meta.send(M.encode_file_list([entry(0, b"f", 2 * B + 1)]))
        content = os.urandom(2 * B + 1)
        first.data(0, 0, content[:B])
        second.data(0, B, content[B : 2 * B])
        first.data(0, 2 * B, content[2 * B :])
        digest = file_digest(0, content, B)
        meta.send(M.encode_file_end(M.FileEnd(0, W.STATUS_OK, 3, digest)))
        hs.finish(meta, [first, second], 1)
        msgs = hs.collect(meta)
        code, err = hs.wait()
    assert code == 0, err
    assert any(isinstance(m, M.SessionDone) for m in msgs)
    assert (dest / "f").read_bytes() == content


# --- HP-21 ports ---------------------------------------------------------------------------------------


@case("HP-21")
def test_occupied_ports(tmp_path: Path, tag: str) -> None:
    from tests.helpers import local

    src = tmp_path / "s.bin"
    src.write_bytes(os.urandom(1000))
    out = tmp_path / "out"
    out.mkdir()
    addr, port = private_loopback(), fixed_port()  # an address of its own: nobody else holds port + 2
    blockers: list[socket.socket] = []
    try:
        for p in (port, port + 1):
            s = socket.socket()
            blockers.append(s)
            s.bind((addr, p))
            s.listen(1)
        r = local("--bind", addr, "--escp_portrange", "3", src, out, port=port)
        assert r.code == 0, r.stderr
        assert (out / "s.bin").read_bytes() == src.read_bytes()
        # every port busy: the receiver waits for one up to its idle deadline (5 s at least)
        r = local("--bind", addr, "--escp_portrange", "2", "--timeout", "1", src, tmp_path / "none.bin", port=port)
        line = check_e(r.code, r.stderr, cause="connection", codes=(1,))
        assert "no free port" in line and "after waiting" in line
        assert not (tmp_path / "none.bin").exists()
    finally:
        for s in blockers:
            s.close()
    check_t(tag, ports=[port + 2])


# --- HP-22 / HP-23 replays -------------------------------------------------------------------------


@case("HP-22")
def test_replayed_handshake_and_stream_in_the_same_session(tmp_path: Path, tag: str) -> None:
    results: dict[str, str] = {}

    def during(proxy: FrameProxy, receiver: tuple[str, int]) -> None:
        end = time.monotonic() + 30
        while proxy.frames_seen.get((1, "c2s"), 0) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        proxy.pause()  # the session cannot finish (and its receiver go) while the replays run
        try:
            results["stream"] = replay(receiver, bytes(proxy.recorded[(1, "c2s")]))
            results["meta"] = replay(receiver, bytes(proxy.recorded[(0, "c2s")][:40]))
        finally:
            proxy.resume()

    o = proxied(tmp_path, tag, size=12 * B, throttle=1_000_000, during=during)
    # every stream is in, so the receiver no longer listens (protocol.md §3.2): refused outright
    assert results == {"stream": "refused", "meta": "refused"}, results
    assert_intact(o)  # S, and no duplicate or foreign write


@case("HP-23")
def test_recorded_session_replayed_against_a_new_receiver(tmp_path: Path, tag: str) -> None:
    o = proxied(tmp_path, tag, size=2 * B + 1)
    assert_intact(o)
    dest = tmp_path / "dest2"
    dest.mkdir()
    with HostileSender(dest) as hs:
        hs.start()
        for link in (0, 1):
            assert replay(hs.address, bytes(o.proxy.recorded[(link, "c2s")])) == "closed"
        assert not hs.exited()  # the new session goes on, untouched
    assert os.listdir(dest) == []


# --- HP-24 bit flips ---------------------------------------------------------------------------------

FLIPS = {
    "hello-magic": (1, "c2s", 1, 0x01),
    "hello-proof": (1, "c2s", 20, 0x10),
    "len-low-bit": (1, "c2s", 40, 0x01),
    "len-high-bit": (1, "c2s", 43, 0x80),
    "data-header": (1, "c2s", 44 + 3, 0x01),
    "data-payload": (1, "c2s", 44 + 5000, 0x04),
    "data-tag": (1, "c2s", 44 + FIRST_DATA_L - 1, 0x80),
    "challenge": (0, "s2c", 7, 0x01),
    "accept-frame": (0, "s2c", 32 + 4 + 1, 0x01),
    "file-list": (0, "c2s", 44 + 10, 0x01),
}


@case("HP-24")
@pytest.mark.parametrize("where", list(FLIPS))
def test_one_flipped_bit(tmp_path: Path, tag: str, where: str) -> None:
    link, direction, offset, mask = FLIPS[where]
    o = proxied(tmp_path, tag, flips={(link, direction): {offset: mask}})
    assert any(e.startswith("flip") for e in o.proxy.events), o.proxy.events
    assert_refused(o)


# --- HP-25 .. HP-29 frame games --------------------------------------------------------------------

GAMES = {
    "drop-data": ((1, "c2s", 1), ("drop",), 1),
    "dup-data": ((1, "c2s", 1), ("dup",), 1),
    "swap-data": ((1, "c2s", 1), ("swap",), 1),
    "dup-meta": ((0, "c2s", 0), ("dup",), 1),
    "drop-result": ((0, "s2c", 1), ("drop",), 1),
    "cut-data": ((1, "c2s", 2), ("cut",), 1),
    "forge-eos": ((1, "c2s", 2), ("forge_eos",), 1),
    "cut-meta": ((0, "c2s", 1), ("cut",), 1),
    "reflect-meta": ((0, "c2s", 0), ("reflect",), 1),
    "reflect-accept": ((1, "s2c", 0), ("reflect",), 1),
    "move-data": ((1, "c2s", 1), ("move", 2), 2),
    "rst-data": ((1, "c2s", 2), ("rst",), 1),
    "rst-meta": ((0, "c2s", 1), ("rst",), 1),
}
GAME_CASE = {"drop-data": "HP-25", "dup-data": "HP-25", "swap-data": "HP-25", "dup-meta": "HP-25",
             "drop-result": "HP-25", "cut-data": "HP-26", "forge-eos": "HP-26", "cut-meta": "HP-26",
             "reflect-meta": "HP-27", "reflect-accept": "HP-27", "move-data": "HP-28", "rst-data": "HP-29",
             "rst-meta": "HP-29"}


@pytest.mark.parametrize("game", [pytest.param(g, marks=case(GAME_CASE[g])) for g in GAMES])
def test_frame_games(tmp_path: Path, tag: str, game: str) -> None:
    key, action, streams = GAMES[game]
    # 40 blocks: every stream carries data frames, so "frame 1 of link 1" is a data frame (with 6,
    # a loaded machine sometimes let one stream take every block, and the tampered frame was then
    # an empty stream's end-of-stream: the file itself arrived intact and was rightly published)
    o = proxied(tmp_path, tag, size=40 * B + 5, streams=streams, actions={key: action})
    assert any(e.startswith(str(action[0])) for e in o.proxy.events), (o.proxy.events, o.code, o.stderr)
    assert_refused(o, receiver_may_have_completed=game in ("drop-result", "reflect-meta"))  # s2c tampered
