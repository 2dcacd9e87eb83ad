"""One authenticated TCP stream after its handshake (streams.py): framed, sealed sends
and buffered, opened receives over its socket. The framing is the sans-IO FrameDecoder's;
this class makes the socket calls: recv_into straight into the decoder's buffer, frames
decrypted into the caller's buffer, sends sealed into one buffer per batch.

A data stream's worker may attach a recording tracer (trace_as): the stream then records
its own "recv", "decrypt" and "send" spans and, separately, the time spent waiting for the
peer: a wait for readable data is "recv starved", a wait for send-buffer room is "send
blocked" (back-pressure). A traced socket is non-blocking: a call that would wait fails
with EAGAIN and the wait happens in poll(), where it is timed, so the spans hold only the
copying and no system call is added. With tracing off the socket calls are the plain ones.
"""

from __future__ import annotations

import fcntl
import select
import socket
import struct
import termios
import threading

from ..errors import ConnectionFailure, EscpError, TimeoutError_
from ..protocol import messages as m
from ..protocol.crypto import FrameOpener, FrameSealer
from ..protocol.framing import FrameDecoder
from ..protocol.states import stream_name
from ..protocol.wire import LEN_PREFIX, TAG_LEN, cause_code
from ..trace import Tracer, WaitKind


class StreamConn:
    """A stream after its handshake: seals what we send, opens what we receive."""

    def __init__(self, sock: socket.socket, index: int, sealer: FrameSealer, opener: FrameOpener) -> None:
        self.sock = sock
        self.index = index
        self.sealer = sealer
        self.opener = opener
        self.name = stream_name(index)
        self._send_lock = threading.Lock()
        self._decoder = FrameDecoder(opener)  # the receive buffer: one whole frame plus read-ahead
        self._tr: Tracer | None = None  # set by trace_as for data streams when tracing is on
        self._worker = ""
        self._poll_in: select.poll | None = None
        self._io_timeout: float | None = None  # the socket's timeout before trace_as

    def trace_as(self, tracer: Tracer, worker: str) -> None:
        """Record this stream's recv/decrypt/send spans and peer waits as `worker`."""
        self._tr = tracer if tracer.enabled else None
        self._worker = worker
        if self._tr is None:
            return
        # Traced streams are non-blocking: a socket call that would wait raises
        # BlockingIOError instead, and the wait happens in poll() where it is measured. No
        # extra system call when data or buffer room is there.
        self._io_timeout = self.sock.gettimeout()
        self.sock.settimeout(0.0)
        self._poll_in = select.poll()  # one reader thread per stream: reused
        self._poll_in.register(self.sock, select.POLLIN)

    def _traced_wait(self, poller: select.poll, stage: str, kind: WaitKind) -> int:
        """Wait until poller says ready (the stream's timeout applies), record the wait; the
        time it ended. Called after a non-blocking socket call found the socket not ready."""
        tr = self._tr
        assert tr is not None
        t_wait = tr.now()
        timeout = self._io_timeout
        if not poller.poll(-1 if timeout is None else max(1, int(timeout * 1000))):
            raise TimeoutError
        tr.wait(self._worker, stage, t_wait, kind)
        return tr.now()

    def send_plain(self, plain: bytes) -> None:
        frame = bytearray(LEN_PREFIX.size + len(plain) + TAG_LEN)
        with self._send_lock:
            n = self.sealer.seal_into(memoryview(plain), memoryview(frame))
            self.sendall(memoryview(frame)[:n])

    def send_many(self, plains: list[bytes]) -> None:
        """Seal several frames and send them with as few syscalls as possible."""
        out = bytearray()
        with self._send_lock:
            for plain in plains:
                start = len(out)
                out += bytes(LEN_PREFIX.size + len(plain) + TAG_LEN)
                self.sealer.seal_into(memoryview(plain), memoryview(out)[start:])
                if len(out) >= 1 << 20:
                    self.sendall(out)
                    out = bytearray()
            if out:
                self.sendall(out)

    def send_abort(self, err: EscpError, timeout: float) -> None:
        """Best effort: tell the peer why the session ends (ABORT with the error's cause and
        one-line text), waiting at most `timeout` for the socket; failures are ignored, the
        session is ending anyway."""
        try:
            self.sock.settimeout(timeout)
            self.send_plain(m.encode_abort(m.Abort(cause_code(err.cause), err.one_line())))
        except (EscpError, OSError):
            pass

    def sendall(self, data: memoryview | bytes | bytearray) -> None:
        try:
            if self._tr is None:
                self.sock.sendall(data)
            else:
                self._sendall_traced(memoryview(data))
        except TimeoutError:
            raise TimeoutError_(f"no progress sending on {self.name} within the idle deadline") from None
        except OSError as exc:
            raise ConnectionFailure(f"{self.name}: {exc.strerror or exc}") from None

    def _sendall_traced(self, view: memoryview) -> None:
        """sendall with one `send` span per stretch of copying and a `send blocked` wait
        whenever the send buffer is full (few events: not one per send call)."""
        tr = self._tr
        assert tr is not None
        poller: select.poll | None = None  # one per call: an abort from another thread may send too
        sent, n, moved = 0, len(view), 0
        t_busy = tr.now()
        while sent < n:
            try:
                k = self.sock.send(view[sent:])
            except BlockingIOError:
                if moved:
                    tr.span(self._worker, "send", t_busy, moved)
                    moved = 0
                if poller is None:
                    poller = select.poll()
                    poller.register(self.sock, select.POLLOUT)
                t_busy = self._traced_wait(poller, "send", "blocked")
                continue
            except InterruptedError:
                continue
            sent += k
            moved += k
        if moved:
            tr.span(self._worker, "send", t_busy, moved)

    def unacked_bytes(self) -> int:
        """Bytes sent and not yet acknowledged by the peer (TIOCOUTQ, which takes no socket
        lock, unlike FIONREAD); -1 when the kernel will not say. A trace counter."""
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
        except (OSError, ValueError):
            return -1
        return int(struct.unpack("i", raw)[0])

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed as frames."""
        return self._decoder.pending

    def _fill(self) -> bool:
        """Receive until the decoder holds a whole frame; False on a clean EOF between frames."""
        dec = self._decoder
        tr = self._tr  # traced: one `recv` span per stretch of copying, a wait when starved
        t_busy = tr.now() if tr is not None else 0
        moved = 0
        while dec.missing():
            try:
                k = self.sock.recv_into(dec.recv_buffer())
            except BlockingIOError:  # traced streams only: no data yet, the sender is behind
                assert tr is not None and self._poll_in is not None
                if moved:
                    tr.span(self._worker, "recv", t_busy, moved)
                    moved = 0
                t_busy = self._traced_wait(self._poll_in, "recv", "starved")
                continue
            except TimeoutError:
                raise TimeoutError_(f"no progress on {self.name} within the idle deadline") from None
            except InterruptedError:
                continue
            except OSError as exc:
                raise ConnectionFailure(f"{self.name}: {exc.strerror or exc}") from None
            if k == 0:
                dec.eof(self.name)
                return False
            dec.received(k)
            moved += k
        if tr is not None and moved:
            tr.span(self._worker, "recv", t_busy, moved)
        return True

    def recv_frame_into(self, out: memoryview) -> int | None:
        """Receive one frame; decrypt into out; plaintext length, or None on clean TCP EOF."""
        if not self._fill():
            return None
        tr = self._tr
        t0 = tr.now() if tr is not None else 0
        k = self._decoder.next_frame_into(out)
        assert k is not None  # _fill made the frame whole
        if tr is not None:
            tr.span(self._worker, "decrypt", t0, k)
        return k

    def recv_message(self, out: memoryview) -> m.Message | None:
        k = self.recv_frame_into(out)
        if k is None:
            return None
        return m.decode_message(bytes(out[:k]))

    def close(self) -> None:
        for how in (socket.SHUT_RDWR,):
            try:
                self.sock.shutdown(how)
            except OSError:
                pass
        self.sock.close()

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
