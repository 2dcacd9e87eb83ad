"""The "limit" peer: escp's data loop with nothing around it, to show how close escp runs to
what this machine can do.

`python -m harness.limit [-t N] [--blocksize B] [--connect-to HOST:PORT] [--port P] [--json F]
SRC DEST` copies one file over N loopback TCP streams between two processes (the receiver is
forked before any thread starts, as escp's receiver is a process of its own):

    sender worker:    preadv -> xxh3-128 -> AES-GCM encrypt_into -> sendall
    receiver worker:  recv_into -> AES-GCM decrypt_into -> xxh3-128 verify -> pwrite

Blocks are handed out by one shared counter (any stream carries any block). Each frame is a
28-byte header (offset, length, the block's xxh3-128 seeded with its offset), authenticated as
the AEAD's associated data, then the ciphertext and tag. A stream opens with its 4-byte index
(the nonce prefix) and ends with a zero-length header. There is no file list, scheduler,
metadata stream, handshake, per-file digest, temp name or pacing: everything escp adds to this
loop is what escp costs above the limit.

`--connect-to` sends the streams through a relay (the WAN path emulator) instead of straight to
the receiver's port (`--port`, default: any free one; `--bind`, default 127.0.0.1). `--json`
writes {"seconds", "bytes", "streams", "blocksize"}: seconds is the data phase, first connect to
the receiver's exit.
Exit status 0 when every block arrived and verified, 1 otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import xxhash
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HEADER = struct.Struct(">QI16s")  # offset, length, xxh3-128 of the block seeded with the offset
STREAM_ID = struct.Struct(">I")
TAG = 16
ACCEPT_TIMEOUT_S = 30.0  # the receiver gives up when the sender does not connect
IO_TIMEOUT_S = 60.0  # no byte for this long on a stream: the copy failed


def _nonce(stream: int, counter: int) -> bytes:
    return STREAM_ID.pack(stream) + counter.to_bytes(8, "big")


def _recv_exact(sock: socket.socket, view: memoryview) -> bool:
    """Fill view; False at EOF."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:], len(view) - got, socket.MSG_WAITALL)
        if n == 0:
            return False
        got += n
    return True


def send_stream(sock: socket.socket, stream: int, src_fd: int, size: int, blocksize: int,
                aead: AESGCM, blocks: itertools.count[int]) -> None:
    block = memoryview(bytearray(blocksize))
    frame = memoryview(bytearray(HEADER.size + blocksize + TAG))
    sock.sendall(STREAM_ID.pack(stream))
    counter = 0
    while True:
        offset = next(blocks) * blocksize
        if offset >= size:
            break
        length = min(blocksize, size - offset)
        data = block[:length]
        got = os.preadv(src_fd, [data], offset)
        if got != length:
            raise OSError(f"short read at {offset}: {got} of {length} bytes")
        HEADER.pack_into(frame, 0, offset, length, xxhash.xxh3_128_digest(data, seed=offset))
        aead.encrypt_into(_nonce(stream, counter), data, frame[: HEADER.size],
                          frame[HEADER.size : HEADER.size + length + TAG])
        counter += 1
        sock.sendall(frame[: HEADER.size + length + TAG])
    sock.sendall(HEADER.pack(0, 0, bytes(16)))
    sock.shutdown(socket.SHUT_WR)


def receive_stream(sock: socket.socket, dst_fd: int, blocksize: int, aead: AESGCM, errors: list[str]) -> None:
    header = memoryview(bytearray(HEADER.size))
    body = memoryview(bytearray(blocksize + TAG))
    out = memoryview(bytearray(blocksize))
    try:
        sid = memoryview(bytearray(STREAM_ID.size))
        if not _recv_exact(sock, sid):
            raise OSError("stream closed before its index")
        (stream,) = STREAM_ID.unpack(sid)
        counter = 0
        while True:
            if not _recv_exact(sock, header):
                raise OSError("stream closed before its end marker")
            offset, length, digest = HEADER.unpack(header)
            if length == 0:
                return
            if length > blocksize:
                raise OSError(f"block of {length} bytes exceeds the block size")
            if not _recv_exact(sock, body[: length + TAG]):
                raise OSError("stream closed inside a block")
            data = out[:length]
            aead.decrypt_into(_nonce(stream, counter), body[: length + TAG], header, data)
            counter += 1
            if xxhash.xxh3_128_digest(data, seed=offset) != digest:
                raise OSError(f"block at {offset}: digest mismatch")
            os.pwrite(dst_fd, data, offset)
    except Exception as exc:  # every failure is reported by the exit status
        errors.append(f"{type(exc).__name__}: {exc}")


def run_receiver(listener: socket.socket, dest: Path, size: int, streams: int, blocksize: int, key: bytes) -> int:
    """The forked receiver: accept the streams, receive, verify and write; the exit status."""
    listener.settimeout(ACCEPT_TIMEOUT_S)
    conns = []
    try:
        for _ in range(streams):
            conn, _addr = listener.accept()
            conn.settimeout(IO_TIMEOUT_S)
            conns.append(conn)
    except OSError as exc:
        print(f"limit receiver: {exc}", file=sys.stderr)
        return 1
    listener.close()
    aead = AESGCM(key)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    errors: list[str] = []
    workers = [threading.Thread(target=receive_stream, args=(c, fd, blocksize, aead, errors)) for c in conns]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    os.ftruncate(fd, size)
    os.close(fd)
    for e in errors:
        print(f"limit receiver: {e}", file=sys.stderr)
    return 1 if errors else 0


def copy(src: Path, dest: Path, *, streams: int, blocksize: int, port: int = 0, bind: str = "127.0.0.1",
         connect_to: tuple[str, int] | None = None) -> float:
    """Copy src to dest; the data phase in seconds. Raises OSError when the copy failed."""
    size = src.stat().st_size
    key = AESGCM.generate_key(bit_length=128)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, port))
    listener.listen(streams)
    address = connect_to or listener.getsockname()[:2]
    pid = os.fork()
    if pid == 0:  # the receiver: no thread exists yet in this process
        status = 1
        try:
            status = run_receiver(listener, dest, size, streams, blocksize, key)
        finally:
            os._exit(status)
    listener.close()
    t0 = time.perf_counter()
    src_fd = os.open(src, os.O_RDONLY)
    aead = AESGCM(key)
    blocks = itertools.count()
    errors: list[str] = []

    def worker(stream: int) -> None:
        try:
            with socket.create_connection(address, timeout=IO_TIMEOUT_S) as sock:
                send_stream(sock, stream, src_fd, size, blocksize, aead, blocks)
        except OSError as exc:
            errors.append(f"stream {stream}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:  # the receiver would wait for streams that never come
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - t0
    os.close(src_fd)
    if errors or os.waitstatus_to_exitcode(status) != 0:
        raise OSError("; ".join(errors) or f"receiver exited {os.waitstatus_to_exitcode(status)}")
    return seconds


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    from harness.datasets import parse_size

    ap = argparse.ArgumentParser(prog="python -m harness.limit", description=__doc__.split("\n")[0])
    ap.add_argument("-t", "--streams", type=int, default=4)
    ap.add_argument("--blocksize", default="1M")
    ap.add_argument("--port", type=int, default=0, help="the receiver's port (default: any free one)")
    ap.add_argument("--bind", default="127.0.0.1", help="the receiver's address (default 127.0.0.1)")
    ap.add_argument("--connect-to", type=_address, help="HOST:PORT the streams connect to (a relay)")
    ap.add_argument("--json", type=Path, help="write {seconds, bytes, streams, blocksize} here")
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    a = ap.parse_args(argv)
    blocksize = parse_size(a.blocksize)
    dest = a.dest / a.src.name if a.dest.is_dir() else a.dest
    try:
        seconds = copy(a.src, dest, streams=a.streams, blocksize=blocksize, port=a.port, bind=a.bind,
                       connect_to=a.connect_to)
    except OSError as exc:
        print(f"limit: {exc}", file=sys.stderr)
        return 1
    if a.json:
        doc = {"seconds": seconds, "bytes": a.src.stat().st_size, "streams": a.streams, "blocksize": blocksize}
        a.json.write_text(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
