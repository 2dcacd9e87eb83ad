"""A session's TCP streams: the listener/connector axis (docs/protocol.md §3).

The CONNECTOR opens streams 0..T one after the other and hands them over only once
each has passed its handshake. The LISTENER binds a port of the session's range (while
every port is busy, it waits for one: backoff with jitter, bounded) and accepts: every
connection gets a short-lived handshake thread (at most MAX_PENDING_HANDSHAKES at once,
the oldest dropped first) and becomes a stream only after a valid HELLO claimed a free
index; bad connections are logged and closed and the session goes on. Once every stream
of the session is in, it stops listening: the port is free for the next session. Which
way a stream's keys point is the local data role's business (protocol/handshake.py), not
the link role's: either side may listen.

The session a listener serves is a StreamUser: it claims indexes, says each stream's
socket timeout, takes a stream before its ACCEPT goes out (so that an abort can reach the
peer from then on), and starts using it after.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ..errors import AuthError, ConnectionFailure, EscpError, OutOfMemory, TimeoutError_, escape_name
from ..protocol import messages as m
from ..protocol.handshake import StreamSecrets, check_accept, check_hello, hello, stream_ciphers
from ..protocol.roles import DataRole
from ..protocol.wire import CHALLENGE_LEN, HELLO, META_STREAM
from .conn import StreamConn
from .control import SessionControl

log = logging.getLogger("escp")

HANDSHAKE_DEADLINE = 10.0  # the listener's bound from accept to a complete HELLO
MAX_PENDING_HANDSHAKES = 64
LISTEN_BACKLOG = 64
ACCEPT_POLL = 0.5  # seconds between looks at the session's end while no connection comes
ACCEPT_ROOM = 256  # the connector's buffer for the listener's first frame (ACCEPT: 3 bytes)
PORT_RETRY_FIRST = 0.05  # seconds before the first new try when every port of the range is busy
PORT_RETRY_MAX = 1.0  # the backoff between tries doubles up to this (sessions hold a port briefly)


class StreamUser(Protocol):
    """What a listener needs from the session it serves."""

    ctl: SessionControl

    def claim_stream(self, index: int) -> bool: ...

    def stream_timeout(self, index: int) -> float | None: ...

    def adopt(self, conn: StreamConn) -> None: ...

    def start_stream(self, conn: StreamConn) -> None: ...


def recv_handshake(sock: socket.socket, n: int, deadline: float, fail: type[EscpError], closed: str) -> bytes:
    """Exactly n clear-text handshake bytes (the challenge, or HELLO) by the monotonic
    deadline: TimeoutError_ after it; `fail(closed)` at EOF, `fail(...)` on a socket error.
    Frames after the handshake go through StreamConn's buffered reader instead."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError_("handshake deadline passed")
        sock.settimeout(left)
        try:
            k = sock.recv_into(view[got:])
        except TimeoutError:
            raise TimeoutError_("handshake deadline passed") from None
        except InterruptedError:
            continue
        except OSError as exc:
            raise fail(f"handshake failed: {exc.strerror or exc}") from None
        if k == 0:
            raise fail(closed)
        got += k
    return bytes(buf)


# --- connector ---------------------------------------------------------------------------------
def connect_stream(address: str, port: int, index: int, secrets: StreamSecrets, role: DataRole,
                   timeout: float, idle_timeout: float | None) -> StreamConn:
    """Connect, answer the challenge for stream `index`, wait for the listener's ACCEPT."""
    peer = role.peer.value
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise ConnectionFailure(f"cannot connect to {peer} at {address}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        challenge = recv_handshake(sock, CHALLENGE_LEN, time.monotonic() + timeout, ConnectionFailure,
                                   f"{peer} closed the connection during the handshake")
        sock.settimeout(timeout)
        sock.sendall(hello(secrets, challenge, index))
        conn = StreamConn(sock, index, *stream_ciphers(secrets, index, challenge, role))
        check_accept(conn.recv_message(memoryview(bytearray(ACCEPT_ROOM))), index, role.peer)
        sock.settimeout(idle_timeout)
        return conn
    except BaseException:
        sock.close()
        raise


def connect_streams(address: str, port: int, secrets: StreamSecrets, role: DataRole, timeout: float,
                    session: StreamUser, explain: Callable[[EscpError], EscpError] = lambda exc: exc) -> None:
    """Open streams 0..T in order and, once all have passed their handshake, hand them to
    the session. On a failure nothing is started: `explain(error)` runs first (a peer that
    failed first may say why: closing ours would cause another error there), then the
    streams already open are closed and its answer is raised."""
    conns: list[StreamConn] = []
    try:
        for index in range(secrets.streams + 1):
            conn = connect_stream(address, port, index, secrets, role, timeout, session.stream_timeout(index))
            conns.append(conn)
            if not session.claim_stream(index):
                raise AuthError(f"stream index {index} claimed twice")
    except EscpError as exc:
        err = explain(exc)
        for c in conns:
            c.close()
        raise err from None
    for conn in conns:
        session.ctl.add_socket(conn.sock)
        session.adopt(conn)
    for conn in conns:
        session.start_stream(conn)


# --- listener -----------------------------------------------------------------------------------
def port_span(address: str, port_start: int, port_range: int) -> str:
    """The range as messages name it: "1232-1241 on 127.0.0.1"."""
    return f"{port_start}-{port_start + port_range - 1} on {address}"


def _bind_first(address: str, port_start: int, port_range: int) -> tuple[socket.socket | None, OSError | None, bool]:
    """One pass over the range (§2.7): (listening socket, None, _) on the first free port,
    else (None, the last error, whether some port was merely in use)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    last: OSError | None = None
    in_use = False
    for port in range(port_start, port_start + port_range):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
            sock.listen(LISTEN_BACKLOG)
            return sock, None, False
        except OSError as exc:
            sock.close()
            last = exc
            in_use = in_use or exc.errno == errno.EADDRINUSE
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                return None, exc, False
    return None, last, in_use


def bind_listener(address: str, port_start: int, port_range: int, wait: float = 0.0,
                  on_wait: Callable[[float], None] = lambda waited: None,
                  pause: Callable[[float], None] = time.sleep) -> socket.socket:
    """Listen on the first free port of the range (§2.7). While every port is in use by
    someone else, try again (backoff doubling from PORT_RETRY_FIRST to PORT_RETRY_MAX, each
    pause drawn from its upper half: jitter, so that waiting sessions do not retry in step)
    for up to `wait` seconds (§2.11); `on_wait(seconds waited)` runs before each pause and
    `pause` sleeps (it may raise to give up early). ConnectionFailure when no port came."""
    start = time.monotonic()
    backoff = PORT_RETRY_FIRST
    paused = False
    while True:
        sock, err, in_use = _bind_first(address, port_start, port_range)
        if sock is not None:
            return sock
        waited = time.monotonic() - start
        if not in_use or waited >= wait:
            why = f"no free port in {port_span(address, port_start, port_range)} ({err.strerror if err else ''})"
            raise ConnectionFailure(f"{why} after waiting {waited:.1f} s for one" if paused else why)
        on_wait(waited)
        pause(min(backoff * random.uniform(0.5, 1.0), wait - waited))
        paused = True
        backoff = min(2 * backoff, PORT_RETRY_MAX)


def accept_stream(sock: socket.socket, secrets: StreamSecrets, role: DataRole, deadline_s: float,
                  session: StreamUser) -> StreamConn:
    """Challenge a new connection and verify its HELLO within deadline_s; the stream's
    ACCEPT is the caller's to send. AuthError/TimeoutError_ for bad peers."""
    end = time.monotonic() + deadline_s
    challenge = os.urandom(CHALLENGE_LEN)
    sock.settimeout(deadline_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.sendall(challenge)
    except OSError as exc:
        raise AuthError(f"handshake failed: {exc}") from None
    index = check_hello(secrets, challenge,
                        recv_handshake(sock, HELLO.size, end, AuthError, "connection closed during the handshake"))
    if not session.claim_stream(index):
        raise AuthError(f"stream index {index} invalid or already connected")
    return StreamConn(sock, index, *stream_ciphers(secrets, index, challenge, role))


class StreamListener:
    """Accepts the streams of one session on a bound socket (run() is a session thread).

    It listens only until every stream of the session is in (§3.2): the last ACCEPT
    shuts the listening socket down (new connections are refused at once, the port can be
    bound again), drops the handshakes still pending (strangers: no index is left) and
    run() closes the socket. The established streams are separate sockets: untouched."""

    def __init__(self, sock: socket.socket, secrets: StreamSecrets, role: DataRole, session: StreamUser) -> None:
        self.sock = sock
        self.secrets = secrets
        self.role = role
        self.session = session
        self.ctl = session.ctl
        self._lock = threading.Lock()
        self._pending: deque[socket.socket] = deque()  # connections still in their handshake
        self._accepted = 0  # streams whose ACCEPT went out
        self.all_in = threading.Event()  # every stream 0..T is in: no longer listening

    def run(self) -> None:
        self.sock.settimeout(ACCEPT_POLL)
        try:
            self._accept_loop()
        finally:
            if self.all_in.is_set():
                self.sock.close()

    def _accept_loop(self) -> None:
        while not self.ctl.aborted.is_set() and not self.ctl.done.is_set() and not self.all_in.is_set():
            try:
                sock, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.ctl.aborted.is_set() or self.all_in.is_set():
                    return
                raise
            with self._lock:
                self._pending.append(sock)
                # full: drop the OLDEST pending connection, not the new one, so that idle
                # strangers cannot lock the peer out (its HELLO follows the challenge at once)
                while len(self._pending) > MAX_PENDING_HANDSHAKES:
                    log.warning("pending connection dropped: more than %d handshakes pending",
                                MAX_PENDING_HANDSHAKES)
                    _shutdown(self._pending.popleft())
            threading.Thread(target=self.handshake, args=(sock, peer), daemon=True).start()

    def handshake(self, sock: socket.socket, peer: object) -> None:
        """One pending connection (own thread). A resource failure here is fatal for the
        session (the peer needs every stream): it must abort, never die silently and
        leave the peer waiting for ACCEPT."""
        try:
            self._handshake(sock, peer)
        except (MemoryError, RuntimeError) as exc:  # RuntimeError: can't start new thread
            sock.close()
            what = "out of memory" if isinstance(exc, MemoryError) else f"cannot start a thread ({exc})"
            self.ctl.abort(OutOfMemory(f"{what} while accepting a stream"))

    def _handshake(self, sock: socket.socket, peer: object) -> None:
        try:
            conn = accept_stream(sock, self.secrets, self.role, HANDSHAKE_DEADLINE, self.session)
        except (EscpError, OSError) as exc:
            msg = exc.one_line() if isinstance(exc, EscpError) else escape_name(str(exc))
            log.warning("connection from %s closed: %s", peer, msg)
            sock.close()
            return
        finally:
            with self._lock:
                try:
                    self._pending.remove(sock)
                except ValueError:
                    pass
        sock.settimeout(self.session.stream_timeout(conn.index))
        self.session.adopt(conn)  # before ACCEPT: an abort from then on can always reach the peer
        try:
            conn.send_plain(m.encode_accept(m.Accept(conn.index)))
        except EscpError as exc:
            log.warning("connection from %s closed: %s", peer, exc.one_line())
            sock.close()
            return
        self.ctl.add_socket(sock)
        self.ctl.progress()
        log.info("stream %d connected from %s", conn.index, peer)
        self.session.start_stream(conn)
        self._count_accepted()

    def _count_accepted(self) -> None:
        """One more stream is in; after the last one, stop listening (§3.2)."""
        with self._lock:
            self._accepted += 1
            if self._accepted <= self.secrets.streams:
                return
            self.all_in.set()
            strangers = list(self._pending)
            self._pending.clear()
        _shutdown(self.sock)  # wakes accept(); refused from now on; run() closes it
        for s in strangers:
            _shutdown(s)
        log.debug("all %d streams connected: no longer listening", self._accepted)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def worker_name(prefix: str, index: int) -> str:
    """A stream thread's name, also its trace worker name: "rx-meta", "tx-3"..."""
    return f"{prefix}-meta" if index == META_STREAM else f"{prefix}-{index}"
