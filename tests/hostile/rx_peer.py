#!/usr/bin/env python3
"""Hostile RECEIVER: a program the real sender runs as its ssh (`escp -S <wrapper>`).

It ignores the ssh arguments, reads the SessionInit from stdin like `escp --server`,
listens on 127.0.0.1, replies, accepts the streams (real handshake), then follows the
scenario named in $ESCP_HOSTILE_RX (a JSON object: {"scenario": ..., "record": path, ...}):

  honest          behave (correct digests, results after FILE_END, SESSION_DONE)
  ok_unknown      FILE_RESULT ok for a file number never announced
  ok_twice        every FILE_RESULT sent twice
  ok_early        FILE_RESULT ok as soon as the file is announced (before its blocks)
  bad_digest      FILE_RESULT ok with a digest that differs from the sender's
  huge_error      FILE_RESULT failed with a ~900 KiB message full of control characters
  ctrl_abort      ABORT whose message carries ESC/CSI/BEL/CR
  malformed       a frame of unknown type, then a truncated FILE_RESULT
  keepalive_flood N keepalives ("count") first, then honest
  zero_window     never read the data streams, never answer
  silent          read everything, answer only keepalives (forever)
  banner          print a login banner on stdout before the greeting
  junk_magic      "ESCP" then a garbage header instead of the reply
  session_done_early  SESSION_DONE right after the handshake
  relay           record the key, then run the real `escp --server` behind the pipe
  waiting_forever SetupProgress "waiting for a port" every 0.2 s, never a reply (claims to
                  have waited 0 s of an endless wait every time; control characters in its text)
With "record", the session key (hex), session id and pid are written there as JSON.
The program ends when stdin closes (the sender went away) or after 60 s.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from escp.engine.checksum import FileDigest, block_digest  # noqa: E402
from escp.protocol import messages as M  # noqa: E402
from escp.protocol import wire as W  # noqa: E402
from escp.protocol.bootstrap import (  # noqa: E402
    SessionReply,
    SetupProgress,
    decode_init,
    encode_progress,
    encode_reply,
    parse_header,
)
from tests.hostile.peer import PeerStream, accept_peer_stream  # noqa: E402

LIFETIME = 60.0
CTRL = "\x1b[31mRED\x1b]0;title\x07\r\x9b2Jbell\x07"


def read_exact(fd: int, n: int) -> bytes:
    buf = b""
    end = time.monotonic() + 30
    while len(buf) < n and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 1.0)
        if r:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                break
            buf += chunk
    return buf


class Rx:
    def __init__(self, cfg: dict, init: object) -> None:
        self.cfg = cfg
        self.scenario = cfg.get("scenario", "honest")
        self.init = init
        self.lock = threading.Lock()
        self.meta: PeerStream | None = None
        self.entries: dict[int, M.FileEntry] = {}
        self.digests: dict[int, FileDigest] = {}
        self.ends: dict[int, M.FileEnd] = {}
        self.eos = 0
        self.session_end = False
        self.done = False

    def send(self, plain: bytes) -> None:
        assert self.meta is not None
        with self.lock:
            self.meta.send_plain(plain)

    def result(self, fino: int, ok: bool, digest: bytes, message: str = "") -> None:
        self.send(M.encode_file_result(M.FileResult(fino, 0 if ok else 1, 0 if ok else 3, digest, message)))

    def data_loop(self, ps: PeerStream) -> None:
        while True:
            plain = ps.recv_plain(timeout=LIFETIME)
            if plain is None:
                return
            if plain[0] == W.T_EOS:
                with self.lock:
                    self.eos += 1
                self.maybe_done()
                return
            _, _flags, _, fino, offset, raw_len = W.DATA_HDR.unpack_from(plain)
            data = plain[W.DATA_HDR.size :]
            for _ in range(300):  # the entry may still be on its way on the metadata stream
                with self.lock:
                    if fino in self.entries:
                        break
                time.sleep(0.01)
            with self.lock:
                d = self.digests.setdefault(fino, FileDigest(fino, self.entries[fino].size))
            d.add(offset, raw_len, block_digest(data, offset))
            self.maybe_finish(fino)

    def maybe_finish(self, fino: int) -> None:
        if self.scenario == "silent":
            return
        with self.lock:
            end = self.ends.get(fino)
            e = self.entries.get(fino)
            d = self.digests.get(fino)
            if end is None or e is None or (d.blocks if d else 0) < end.blocks or fino in getattr(self, "_sent", set()):
                return
            self.__dict__.setdefault("_sent", set()).add(fino)
        digest = d.digest() if d is not None else FileDigest(fino, e.size).digest()
        if self.scenario == "bad_digest":
            digest = bytes(16)
        if self.scenario == "huge_error":
            msg = (CTRL * 40000)[: 900 * 1024]
            raw = W.FILE_RESULT_BODY.pack(W.T_FILE_RESULT, fino, 1, 3, bytes(16)) + msg.encode()
            self.send(raw)
            return
        self.result(fino, end.status == 0, digest, "" if end.status == 0 else "peer failed it")
        if self.scenario == "ok_twice":
            self.result(fino, True, digest)

    def maybe_done(self) -> None:
        if self.scenario == "silent":
            return
        with self.lock:
            ready = (self.session_end and self.eos == self.init.streams and not self.done
                     and all(f in getattr(self, "_sent", set()) for f, e in self.entries.items()
                             if e.kind == W.KIND_FILE))
            if ready:
                self.done = True
        if ready:
            self.send(M.encode_session_done(M.SessionDone(len(self.entries), 0, 0, b"")))

    def meta_loop(self) -> None:
        assert self.meta is not None
        while True:
            msg = self.meta.recv_message(timeout=LIFETIME)
            if msg is None:
                return
            if isinstance(msg, list):
                for e in msg:
                    with self.lock:
                        self.entries[e.fino] = e
                    if e.kind == W.KIND_DIR:
                        self.__dict__.setdefault("_sent", set()).add(e.fino)
                        self.result(e.fino, True, bytes(16))
                    if self.scenario == "ok_early" and e.kind == W.KIND_FILE:
                        self.__dict__.setdefault("_sent", set()).add(e.fino)
                        self.result(e.fino, True, bytes(16))
                if self.scenario == "ok_unknown":
                    self.result(4242, True, bytes(16))
            elif isinstance(msg, M.FileEnd):
                with self.lock:
                    self.ends[msg.fino] = msg
                    if msg.blocks == 0:
                        self.digests.setdefault(msg.fino, FileDigest(msg.fino, self.entries[msg.fino].size))
                self.maybe_finish(msg.fino)
            elif isinstance(msg, M.SessionEnd):
                with self.lock:
                    self.session_end = True
                self.maybe_done()
            elif isinstance(msg, M.Abort):
                return


def guarded(fn: object, *args: object) -> threading.Thread:
    def body() -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except Exception:  # noqa: BLE001 - a broken hostile peer must be visible to the test
            import traceback

            path = json.loads(os.environ.get("ESCP_HOSTILE_RX", "{}")).get("record")
            if path:
                with open(path + ".err", "a") as f:
                    f.write(traceback.format_exc())

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


def main() -> int:
    cfg = json.loads(os.environ.get("ESCP_HOSTILE_RX", "{}"))
    scenario = cfg.get("scenario", "honest")
    header = read_exact(0, W.BOOT_HEADER.size)
    body = read_exact(0, parse_header(header, W.BOOT_SESSION_INIT))
    init = decode_init(body)
    if cfg.get("record"):
        Path(cfg["record"]).write_text(json.dumps({"key": init.key.hex(), "session_id": init.session_id,
                                                   "pid": os.getpid()}))
    out = sys.stdout.buffer
    if scenario == "relay":  # an honest man in the middle of the ssh pipe: the real receiver behind
        import subprocess

        child = subprocess.Popen([sys.executable, "-m", "escp", "--server"], stdin=subprocess.PIPE)
        if cfg.get("record"):
            rec = json.loads(Path(cfg["record"]).read_text())
            Path(cfg["record"]).write_text(json.dumps({**rec, "receiver_pid": child.pid}))
        assert child.stdin is not None
        child.stdin.write(header + body)
        child.stdin.flush()
        while chunk := os.read(0, 65536):
            child.stdin.write(chunk)
            child.stdin.flush()
        child.stdin.close()
        return child.wait(timeout=30)
    if scenario == "banner":
        out.write(b"Welcome to host! \x1b[1mLast login\x1b[0m: yesterday\r\n")
        out.flush()
    if scenario == "waiting_forever":
        end = time.monotonic() + LIFETIME
        while time.monotonic() < end:
            try:
                out.write(encode_progress(SetupProgress(W.STAGE_PORT_WAIT, 0, 0xFFFFFFFF, "1-65535 on " + CTRL)))
                out.flush()
            except OSError:  # the sender went away
                return 0
            r, _, _ = select.select([0], [], [], 0.2)
            if r and not os.read(0, 65536):
                return 0
        return 0
    if scenario == "junk_magic":
        out.write(b"ESCP" + bytes([99, 7, 0, 0]) + b"\xff" * 12)
        out.flush()
        read_exact(0, 1 << 20)
        return 0
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for port in range(init.port_start, init.port_start + init.port_range):
        try:
            lst.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    lst.listen(16)
    out.write(encode_reply(SessionReply("127.0.0.1", lst.getsockname()[1])))
    out.flush()
    rx = Rx(cfg, init)
    threading.Thread(target=lambda: (read_exact(0, 1 << 30), os._exit(0)), daemon=True).start()
    lst.settimeout(LIFETIME)
    streams: list[PeerStream] = []
    for _ in range(init.streams + 1):
        sock, _ = lst.accept()
        ps = accept_peer_stream(sock, init)
        if ps is None:
            return 1
        streams.append(ps)
    streams.sort(key=lambda s: s.index)
    rx.meta = streams[0]
    if scenario == "session_done_early":
        rx.send(M.encode_session_done(M.SessionDone(0, 0, 0, b"")))
    if scenario == "ctrl_abort":
        rx.send(M.encode_abort(M.Abort(2, "receiver says " + CTRL)))
    if scenario == "malformed":
        rx.send(bytes([99]) + b"garbage")
        rx.send(bytes([W.T_FILE_RESULT, 1, 2]))
    if scenario == "keepalive_flood":
        frames = b"".join(rx.meta.seal(M.encode_keepalive()) for _ in range(int(cfg.get("count", 100000))))
        with rx.lock:
            rx.meta.send_raw(frames)
    if scenario == "silent":
        def keepalives() -> None:
            while True:
                time.sleep(0.3)
                rx.send(M.encode_keepalive())
        threading.Thread(target=keepalives, daemon=True).start()
    if scenario != "zero_window":
        for ps in streams[1:]:
            guarded(rx.data_loop, ps)
        guarded(rx.meta_loop)
    time.sleep(LIFETIME)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, ConnectionError):
        sys.exit(1)
