"""Hostile peer: speaks escp's wire format field by field, as SENDER or as RECEIVER.

SENDER role (`HostileSender`): spawns a real `python -m escp --server` (this checkout,
SSH_CONNECTION unset, so it binds 127.0.0.1) and drives it: the bootstrap on its
stdin/stdout (valid SessionInit, or any raw bytes), the stream handshake (any index,
magic, version or proof), and sealed frames with any content: FILE_LIST entries with
any field values, DATA frames with any header fields, FILE_END, SESSION_END, EOS...

RECEIVER role: tests/hostile/rx_peer.py is a program the real sender runs as its ssh
(`-S`); it uses `accept_peer_stream` below and misbehaves as a scenario says. A sending
SERVER (pull): tests/hostile/tx_peer.py, the same way, for a pulling escp.

Both roles use the product's key schedule and codecs only to produce *valid* bytes;
every field can also be replaced by raw bytes.
"""

from __future__ import annotations

import hmac
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from escp.engine.checksum import FileDigest, block_digest
from escp.protocol import messages as M
from escp.protocol import wire as W
from escp.protocol.bootstrap import SessionInit, SessionReply, decode_reply, encode_init, parse_header
from escp.protocol.crypto import (
    DIR_RECEIVER_TO_SENDER,
    DIR_SENDER_TO_RECEIVER,
    FrameOpener,
    FrameSealer,
    handshake_key,
    hello_proof,
)
from escp.protocol.framing import FrameDecoder

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30.0  # T oracle: every process must be gone within this


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SSH_CONNECTION", None)
    env.pop("SSH_CLIENT", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def boot_raw(kind: int, body: bytes, *, magic: bytes = W.BOOT_MAGIC, version: int = W.PROTOCOL_VERSION,
             length: int | None = None) -> bytes:
    """A bootstrap message with every header field under control."""
    n = len(body) if length is None else length
    return W.BOOT_HEADER.pack(magic, version, kind, 0, n) + body


def data_plain(fino: int, offset: int, payload: bytes, *, raw_len: int | None = None, flags: int = 0,
               ftype: int = W.T_DATA, reserved: int = 0) -> bytes:
    """Plaintext of a DATA frame with every header field under control."""
    n = len(payload) if raw_len is None else raw_len
    return W.DATA_HDR.pack(ftype, flags, reserved, fino, offset, n) + payload


def file_digest(fino: int, content: bytes, block: int) -> bytes:
    """The per-file digest an honest sender would send for content."""
    d = FileDigest(fino, len(content))
    for off in range(0, len(content), block):
        chunk = content[off : off + block]
        d.add(off, len(chunk), block_digest(chunk, off))
    return d.digest()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Up to n bytes (fewer only at EOF); socket.timeout propagates."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class PeerStream:
    """One handshaken stream from the peer's side: seal what we send, open what we get."""

    def __init__(self, sock: socket.socket, index: int, sealer: FrameSealer, opener: FrameOpener) -> None:
        self.sock = sock
        self.index = index
        self.sealer = sealer
        self.opener = opener
        self.decoder = FrameDecoder(opener)
        self._frames: deque[bytes] = deque()  # opened, not yet returned by recv_plain
        self.data_frames = 0
        self.data_bytes = 0

    # sending
    def seal(self, plain: bytes) -> bytes:
        return self.sealer.seal(plain)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_plain(self, plain: bytes) -> None:
        self.sock.sendall(self.sealer.seal(plain))

    def send(self, msg: bytes) -> None:
        """Alias of send_plain for encoded messages (M.encode_*)."""
        self.send_plain(msg)

    def data(self, fino: int, offset: int, payload: bytes, **fields: int) -> None:
        self.send_plain(data_plain(fino, offset, payload, **fields))
        self.data_frames += 1
        self.data_bytes += fields.get("raw_len", len(payload))

    def eos(self, frames: int | None = None, nbytes: int | None = None) -> None:
        self.send_plain(M.encode_eos(M.Eos(self.data_frames if frames is None else frames,
                                           self.data_bytes if nbytes is None else nbytes)))

    # receiving: the product's sans-IO FrameDecoder does the framing and opening
    def recv_plain(self, timeout: float = 10.0) -> bytes | None:
        """Next frame's plaintext; None at EOF/reset/timeout (timeout applies to each read)."""
        while not self._frames:
            self.sock.settimeout(timeout)
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, OSError):
                return None
            if not chunk:
                return None
            self._frames.extend(self.decoder.feed(chunk))
        return self._frames.popleft()

    def recv_message(self, timeout: float = 10.0) -> M.Message | None:
        plain = self.recv_plain(timeout)
        return None if plain is None else M.decode_message(plain)

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True when the other side closes (EOF or reset) within timeout (bytes read are dropped)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                return False
            except OSError:
                return True
        return False

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def stream_keys(key: bytes, session_id: int, index: int, challenge: bytes, rekey: int, block: int,
                role: str) -> tuple[FrameSealer, FrameOpener]:
    send_dir = DIR_SENDER_TO_RECEIVER if role == "sender" else DIR_RECEIVER_TO_SENDER
    recv_dir = DIR_RECEIVER_TO_SENDER if role == "sender" else DIR_SENDER_TO_RECEIVER
    sealer = FrameSealer(key, session_id, index, send_dir, challenge, rekey)
    opener = FrameOpener(key, session_id, index, recv_dir, challenge, rekey, max_len=W.max_frame_len(block))
    return sealer, opener


def accept_peer_stream(sock: socket.socket, init: SessionInit, timeout: float = 10.0,
                       role: str = "receiver") -> PeerStream | None:
    """Listener side, in the data role `role`: challenge, check HELLO, answer ACCEPT. None
    when the HELLO is bad."""
    challenge = os.urandom(W.CHALLENGE_LEN)
    sock.settimeout(timeout)
    sock.sendall(challenge)
    hello = recv_exact(sock, W.HELLO.size)
    if len(hello) < W.HELLO.size:
        return None
    magic, _version, index, proof = W.HELLO.unpack(hello)
    expected = hello_proof(handshake_key(init.key, init.session_id), init.session_id, challenge, index)
    if magic != W.HELLO_MAGIC or not hmac.compare_digest(proof, expected):
        return None
    sealer, opener = stream_keys(init.key, init.session_id, index, challenge, init.rekey_bytes,
                                 init.block_size, role)
    ps = PeerStream(sock, index, sealer, opener)
    ps.send_plain(M.encode_accept(M.Accept(index)))
    return ps


class HostileSender:
    """A scripted sender driving a real `escp --server` child process.

    The child is reaped with wait4 (never by Popen), so `max_rss_kib` is the kernel's peak
    RSS over its whole life: a memory bound checked after exit, with no timing to guess."""

    def __init__(self, dest: Path | bytes, *, streams: int = 1, block_size: int = W.MIN_BLOCK, flags: int = 0,
                 top_level_count: int = 1, port_base: int | None = None, cwd: Path | None = None,
                 server_args: tuple[str, ...] = (), env: dict[str, str] | None = None, **init_fields: object) -> None:
        from tests.helpers import free_port_base

        self.block = block_size
        self.init = SessionInit(
            session_id=int.from_bytes(os.urandom(8), "big"), key=os.urandom(16), flags=flags,
            block_size=block_size, streams=streams, port_start=port_base or free_port_base(), port_range=10,
            dest_path=os.fsencode(dest), top_level_count=top_level_count, **init_fields,  # type: ignore[arg-type]
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "escp", "--server", *server_args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(cwd or REPO), env=child_env(env),
        )
        self.reply: SessionReply | None = None
        self.streams: list[PeerStream] = []
        self.code: int | None = None
        self.max_rss_kib = 0  # set when reaped
        self._stderr = bytearray()
        self._drain = threading.Thread(target=self._drain_stderr, name="hs-stderr", daemon=True)
        self._drain.start()

    # --- context management ----------------------------------------------------------
    def __enter__(self) -> HostileSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        for s in self.streams:
            s.close()
        if not self.exited():
            self.proc.kill()
        self._reap()

    # --- process ----------------------------------------------------------------------------
    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        try:
            while chunk := os.read(fd, 65536):
                self._stderr += chunk
        except OSError:  # closed by _reap after a kill
            pass

    def exited(self) -> bool:
        """True once the receiver has exited (without reaping it: that is _reap's job)."""
        if self.proc.returncode is not None:
            return True
        return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def _reap(self) -> int:
        """Wait for the exited child with wait4: exit code, and max_rss_kib from its rusage."""
        if self.proc.returncode is None:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.max_rss_kib = usage.ru_maxrss  # KiB on Linux
        self._drain.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        return self.proc.returncode

    # --- bootstrap ------------------------------------------------------------------------
    def send_boot(self, data: bytes | None = None) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode_init(self.init) if data is None else data)
        self.proc.stdin.flush()

    def read_reply(self, timeout: float = 15.0) -> SessionReply:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        header = self._read(fd, W.BOOT_HEADER.size, timeout)
        body = self._read(fd, parse_header(header, W.BOOT_SESSION_REPLY), timeout)
        self.reply = decode_reply(body)
        return self.reply

    @staticmethod
    def _read(fd: int, n: int, timeout: float) -> bytes:
        end = time.monotonic() + timeout
        buf = b""
        while len(buf) < n:
            r, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
            if not r:
                raise TimeoutError("receiver did not reply")
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError("receiver closed stdout")
            buf += chunk
        return buf

    def start(self) -> SessionReply:
        self.send_boot()
        reply = self.read_reply()
        assert not reply.error, reply.error
        return reply

    @property
    def address(self) -> tuple[str, int]:
        assert self.reply is not None
        return (self.reply.address, self.reply.port)

    # --- streams --------------------------------------------------------------------------
    def raw_connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=10)

    def connect(self, index: int, *, proof: bytes | None = None, magic: bytes = W.HELLO_MAGIC,
                version: int = W.PROTOCOL_VERSION, key: bytes | None = None) -> PeerStream | None:
        """Handshake for stream `index`; None when the receiver does not ACCEPT."""
        sock = self.raw_connect()
        challenge = recv_exact(sock, W.CHALLENGE_LEN)
        k = key or self.init.key
        if proof is None:
            proof = hello_proof(handshake_key(k, self.init.session_id), self.init.session_id, challenge, index)
        sock.sendall(W.HELLO.pack(magic, version, index, proof))
        sealer, opener = stream_keys(k, self.init.session_id, index, challenge, self.init.rekey_bytes,
                                     self.block, "sender")
        ps = PeerStream(sock, index, sealer, opener)
        msg = None
        try:
            msg = ps.recv_message(timeout=10)
        except Exception:  # noqa: BLE001 - anything but a valid ACCEPT means refused
            msg = None
        if not isinstance(msg, M.Accept) or msg.stream_index != index:
            sock.close()
            return None
        self.streams.append(ps)
        return ps

    def connect_all(self) -> tuple[PeerStream, list[PeerStream]]:
        conns = []
        for i in range(self.init.streams + 1):
            c = self.connect(i)
            assert c is not None, f"stream {i} refused"
            conns.append(c)
        return conns[0], conns[1:]

    # --- an honest transfer, as building blocks ------------------------------------------------
    def send_file(self, meta: PeerStream, data: PeerStream, fino: int, content: bytes) -> bytes:
        """DATA frames and FILE_END for an already announced file; returns its digest."""
        nblocks = 0
        for off in range(0, len(content), self.block):
            data.data(fino, off, content[off : off + self.block])
            nblocks += 1
        digest = file_digest(fino, content, self.block)
        meta.send(M.encode_file_end(M.FileEnd(fino, W.STATUS_OK, nblocks, digest)))
        return digest

    def finish(self, meta: PeerStream, data: list[PeerStream], entries: int) -> None:
        for d in data:
            d.eos()
        meta.send(M.encode_session_end(M.SessionEnd(entries)))

    def collect(self, meta: PeerStream, timeout: float = 15.0) -> list[M.Message]:
        """Messages from the receiver until SESSION_DONE, ABORT or EOF (keepalives dropped)."""
        out: list[M.Message] = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = meta.recv_message(timeout=max(0.1, end - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - recorded for the test to inspect
                out.append(M.Abort(255, f"peer-side decode failure: {exc}"))
                break
            if msg is None:
                break
            if isinstance(msg, M.Keepalive):
                continue
            out.append(msg)
            if isinstance(msg, (M.SessionDone, M.Abort)):
                break
        return out

    def _wait_exited(self, timeout: float, failure: str) -> None:
        end = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() > end:
                self.kill()
                raise AssertionError(f"T: {failure} within {timeout} s")
            time.sleep(0.02)

    def wait(self, timeout: float = DEADLINE) -> tuple[int, str]:
        """Close our side (stdin and sockets), wait for exit: (exit code, stderr)."""
        for s in self.streams:
            s.close()
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        self._wait_exited(timeout, "receiver did not exit")
        self.code = self._reap()
        return self.code, bytes(self._stderr).decode("utf-8", "replace")

    def wait_exit_alone(self, timeout: float = DEADLINE) -> tuple[int, str]:
        """Wait for exit WITHOUT closing stdin (the receiver must end the session itself)."""
        self._wait_exited(timeout, "receiver did not end the session")
        return self.wait(5)


def entry(fino: int, name: bytes, size: int = 0, *, kind: int = W.KIND_FILE, mode: int = 0o644,
          **fields: int) -> M.FileEntry:
    return M.FileEntry(fino=fino, name=name, kind=kind, mode=mode, size=size, **fields)


def strangers(addr: tuple[str, int], stop: threading.Event, flood: int = 200) -> list[socket.socket]:
    """HP-20's strangers at a listener: one idle, one byte and close, 16 random bytes, a
    wrongly keyed HELLO, a trickle of a byte every 0.5 s (until `stop`), then `flood` idle
    connections. Returns the connections still held (the caller closes them)."""
    held = []
    held.append(socket.create_connection(addr))  # sends nothing
    s = socket.create_connection(addr)
    s.sendall(b"x")
    s.close()  # one byte and close
    s = socket.create_connection(addr)
    s.sendall(os.urandom(16))
    held.append(s)  # 16 random bytes
    s = socket.create_connection(addr)
    s.settimeout(5)
    s.recv(32)
    s.sendall(W.HELLO.pack(W.HELLO_MAGIC, W.PROTOCOL_VERSION, 1, os.urandom(32)))  # wrongly keyed
    held.append(s)

    def trickle() -> None:
        t = socket.create_connection(addr)
        for i in range(10):
            if stop.wait(0.5):
                break
            try:
                t.sendall(bytes([i]))
            except OSError:
                break
        t.close()

    threading.Thread(target=trickle, daemon=True).start()
    for _ in range(flood):
        try:
            held.append(socket.create_connection(addr, timeout=5))
        except OSError:
            pass
    return held
