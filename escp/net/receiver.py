"""Receiver adapter (`escp --server`): bootstrap on stdin/stdout, listen, accept
authenticated streams, and drive the sans-IO ReceiverCore with real files.

Thread layout: one acceptor, one short-lived handshake thread per pending connection
(bounded), one thread per data stream (recv -> decrypt -> decompress -> verify ->
write), one metadata thread, a keepalive thread and a stdin watcher: EOF on stdin
(the ssh channel closed) ends the session.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque

from ..engine import faults
from ..engine.pipeline import ReceivePipeline
from ..engine.sink import FileStore, Sink
from ..errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    ConnectionFailure,
    EscpError,
    OutOfMemory,
    ProtocolError,
    TimeoutError_,
    TransferIOError,
    UsageError,
    escape_name,
)
from ..logsetup import set_session, setup_logging
from ..protocol import messages as m
from ..protocol.bootstrap import SessionInit, SessionReply, decode_init, encode_reply, parse_header
from ..protocol.data import DATA_HEADER_LEN, DataHeader, decode_data_header
from ..protocol.receiver_core import (
    CompleteFile,
    Completion,
    DiscardFile,
    ReceiverCore,
    RxAction,
    RxFile,
    SendResult,
    unannounced,
)
from ..protocol.wire import (
    BOOT_HEADER,
    BOOT_SESSION_INIT,
    KIND_DIR,
    META_MAX_PLAINTEXT,
    META_STREAM,
    NO_DIGEST,
    STATUS_OK,
    T_DATA,
    T_EOS,
    T_KEEPALIVE,
    TRACE_CHUNK_MAX,
    TRACE_TOTAL_MAX,
    max_frame_len,
)
from ..sysconf import apply_cpumask, load_host_config
from ..trace import COUNTER_EVERY, NULL_TRACER, Tracer
from .conn import StreamConn, accept_stream
from .control import SessionControl, keepalive_interval, wait_readable

log = logging.getLogger("escp.server")

HANDSHAKE_DEADLINE = 10.0
MAX_PENDING_HANDSHAKES = 64
ANNOUNCE_WAIT = 30.0  # how long a data frame may wait for its file's announcement
ABORT_SEND_TIMEOUT = 2.0  # how long an ABORT may take to leave


def read_exact_fd(fd: int, n: int, deadline: float) -> bytes:
    out = bytearray()
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError_("no session set-up received on stdin")
        if not wait_readable(fd, left):
            continue
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise ConnectionFailure("stdin closed before the session set-up arrived")
        out += chunk
    return bytes(out)


def choose_bind_address(init: SessionInit) -> str:
    if init.bind_address:
        return init.bind_address
    conn = os.environ.get("SSH_CONNECTION", "").split()
    if len(conn) == 4:
        return conn[2]
    return "127.0.0.1"


def bind_listener(address: str, port_start: int, port_range: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    last: OSError | None = None
    for port in range(port_start, port_start + port_range):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
            sock.listen(64)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                break
    raise ConnectionFailure(
        f"no free port in {port_start}-{port_start + port_range - 1} on {address} ({last.strerror if last else ''})"
    )


class ReceiverSession:
    def __init__(self, init: SessionInit, tracer: Tracer = NULL_TRACER, idle_cap: float | None = None) -> None:
        self.init = init
        self.tracer = tracer
        # the sender's wish, clamped (SessionInit.receiver_idle_timeout); the receiver's own
        # --timeout, when given, caps it: a peer can shorten the deadline, never lift it
        idle = init.receiver_idle_timeout if idle_cap is None else min(init.receiver_idle_timeout, idle_cap)
        self.ctl = SessionControl(idle_timeout=idle)
        self.flags = flags = init.session_flags
        self.core = ReceiverCore(init)
        self.lock = threading.RLock()
        self.announced = threading.Condition(self.lock)
        self.meta: StreamConn | None = None
        self.meta_accepted = threading.Event()  # the metadata stream's ACCEPT is sent
        self.store = FileStore(None, sparse=flags.sparse, preserve=flags.preserve, fsync=flags.fsync)
        self.pending: deque[socket.socket] = deque()  # connections still in their handshake
        self.sink_locks = [threading.Lock() for _ in range(64)]
        self.meta_cond = threading.Condition(threading.Lock())
        self.meta_out: list[bytes] = []
        self.meta_last_queued = False
        self.meta_thread = 0
        self.started = time.monotonic()
        self.cpus: tuple[int, ...] | None = None  # stream workers' CPUs (host configuration)
        self.closing = False  # cleanup() ran: no more temp files

    # --- set-up ------------------------------------------------------------------
    def prepare(self) -> None:
        """Plan the destination by scp's rules (UsageError when they cannot be met)."""
        self.store = FileStore.for_session(self.init)

    def pipeline(self, worker: str) -> ReceivePipeline:
        return ReceivePipeline(self.init.block_size, self.tracer, worker, self.store, checksum=self.flags.checksum)

    def claim(self, index: int) -> bool:
        with self.lock:
            return self.core.claim_stream(index)

    # --- accepting -----------------------------------------------------------------
    def acceptor(self, listener: socket.socket) -> None:
        listener.settimeout(0.5)
        while not self.ctl.aborted.is_set() and not self.ctl.done.is_set():
            try:
                sock, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.ctl.aborted.is_set():
                    return
                raise
            with self.lock:
                self.pending.append(sock)
                # full: drop the OLDEST pending connection, not the new one, so that idle
                # strangers cannot lock the sender out (its HELLO follows the challenge at once)
                while len(self.pending) > MAX_PENDING_HANDSHAKES:
                    old = self.pending.popleft()
                    log.warning("pending connection dropped: more than %d handshakes pending",
                                MAX_PENDING_HANDSHAKES)
                    try:
                        old.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            threading.Thread(target=self.handshake, args=(sock, peer), daemon=True).start()

    def handshake(self, sock: socket.socket, peer: object) -> None:
        """One pending connection (own thread). A resource failure here is fatal for the
        session (the sender needs every stream): it must abort, never die silently and
        leave the sender waiting for ACCEPT."""
        try:
            self._handshake(sock, peer)
        except (MemoryError, RuntimeError) as exc:  # RuntimeError: can't start new thread
            sock.close()
            what = "out of memory" if isinstance(exc, MemoryError) else f"cannot start a thread ({exc})"
            self.ctl.abort(OutOfMemory(f"{what} while accepting a stream"))

    def _handshake(self, sock: socket.socket, peer: object) -> None:
        try:
            conn = accept_stream(sock, self.init.key, self.init.session_id, self.init.rekey_bytes,
                                 self.init.block_size, HANDSHAKE_DEADLINE, self.claim, send_accept=False)
        except (EscpError, OSError) as exc:
            msg = exc.one_line() if isinstance(exc, EscpError) else escape_name(str(exc))
            log.warning("connection from %s closed: %s", peer, msg)
            sock.close()
            return
        finally:
            with self.lock:
                try:
                    self.pending.remove(sock)
                except ValueError:
                    pass
        # the metadata stream carries keepalives, so a read that waits longer than the idle
        # timeout there means the sender is gone; a data stream may legitimately stay silent
        # while only small files travel on the metadata stream (OP-13): no timeout of its
        # own there, the session deadline decides (SessionControl.wait) and an abort wakes it
        sock.settimeout(self.ctl.idle_timeout if conn.index == META_STREAM else None)
        if conn.index == META_STREAM:
            self.meta = conn  # before ACCEPT: an abort from then on can always reach the sender
        try:
            conn.send_plain(m.encode_accept(m.Accept(conn.index)))
        except EscpError as exc:
            log.warning("connection from %s closed: %s", peer, exc.one_line())
            sock.close()
            return
        if conn.index == META_STREAM:
            self.meta_accepted.set()  # only now may the metadata writer use it (OP-16)
        self.ctl.add_socket(sock)
        self.ctl.progress()
        log.info("stream %d connected from %s", conn.index, peer)
        if conn.index == META_STREAM:
            self.ctl.guard(lambda: self.meta_loop(conn), "rx-meta")
        else:
            self.ctl.guard(lambda: self.data_loop(conn), f"rx-{conn.index}")

    # --- data streams --------------------------------------------------------------
    def data_loop(self, conn: StreamConn) -> None:
        worker = f"rx-{conn.index}"
        apply_cpumask(self.cpus)
        tr = self.tracer
        plain = memoryview(bytearray(max_frame_len(self.init.block_size)))
        pipe = self.pipeline(worker)
        frames = 0
        conn.trace_as(tr, worker)  # the stream records recv, decrypt and its starved waits
        while True:
            k = conn.recv_frame_into(plain)
            if k is None:
                if self.ctl.aborted.is_set():
                    return
                with self.lock:
                    self.core.stream_closed(conn.index)
                return
            self.ctl.progress()
            ftype = plain[0]
            self.core.check_data_stream_frame(conn.index, ftype)
            if ftype == T_EOS:
                eos = m.decode_message(bytes(plain[:k]))
                assert isinstance(eos, m.Eos)
                with self.lock:
                    actions = self.core.receive_eos(conn.index, eos.frames, eos.nbytes)
                self.act(actions)
                return
            self.handle_data(conn.index, plain, k, pipe)
            frames += 1
            if tr.enabled and frames % COUNTER_EVERY == 1:
                tr.counter("receiver bytes written", self.core.bytes_written)

    def accept_data(self, index: int, header: DataHeader, payload_len: int) -> RxFile:
        """With self.lock held: the core's checks of a DATA frame, waiting (bounded) for its
        file's announcement when a data stream overtook the FILE_LIST."""
        end = time.monotonic() + ANNOUNCE_WAIT
        while (f := self.core.receive_data(index, header, payload_len)) is None:
            left = end - time.monotonic()
            if left <= 0 or self.ctl.aborted.is_set():
                raise unannounced(header.fino)
            self.announced.wait(min(left, 0.5))
        return f

    def handle_data(self, index: int, plain: memoryview, k: int, pipe: ReceivePipeline) -> None:
        """One DATA frame (from a data stream or, for small files, the metadata stream)."""
        header = decode_data_header(plain, k)
        with self.lock:
            f = self.accept_data(index, header, k - DATA_HEADER_LEN)
            failed = f.failed
        sink = None if failed else self.open_sink(f)
        data = pipe.payload(plain, k, header)
        if sink is not None:
            try:
                pipe.write(sink, data, header.offset)
            except TransferIOError as exc:
                self.fail_file(f, exc)
        with self.lock:
            actions = self.core.block_stored(f, header.raw_len)
        self.act(actions)

    def display(self, f: RxFile) -> bytes:
        return self.store.display(f.parts, f.entry.name)

    def open_sink(self, f: RxFile) -> Sink | None:
        """The file's temp file, created on first use (one creator per file)."""
        if f.sink is not None:
            return f.sink  # type: ignore[return-value]
        with self.sink_locks[f.entry.fino % len(self.sink_locks)]:
            # under self.lock: cleanup() either sees this temp file or it is never made
            with self.lock:
                if f.sink is None and not self.closing:
                    try:
                        f.sink = self.store.open(f.parts, f.entry)
                    except TransferIOError as exc:
                        self.fail_file(f, exc)
        return f.sink  # type: ignore[return-value]

    # --- what the core says to do --------------------------------------------------------
    def act(self, actions: list[RxAction]) -> None:
        """Carry out the core's actions. Completing a file runs without self.lock (it reads
        and renames); everything else runs under it (an RLock: callers may hold it)."""
        for action in actions:
            if isinstance(action, CompleteFile):
                self.complete(action.file)
                continue
            with self.lock:
                if isinstance(action, SendResult):
                    self.send_result(action)
                elif isinstance(action, DiscardFile):
                    self.drop_sink(action.file, action.file.sink)  # type: ignore[arg-type]
                else:
                    self.finish_session(action.done)

    def send_result(self, action: SendResult) -> None:
        """Queue a file's one FILE_RESULT (with self.lock held)."""
        f, r = action.file, action.result
        if self.tracer.enabled:
            self.tracer.instant("meta", "file done" if r.status == STATUS_OK else "file failed",
                                {"name": os.fsdecode(self.display(f)), "cause": action.cause})
        if r.status != STATUS_OK:
            log.warning("%s error: %s: %s", action.cause, escape_name(self.display(f)), escape_name(r.message))
        self.queue_meta(m.encode_file_result(r))

    def fail_file(self, f: RxFile, err: EscpError) -> None:
        """Fail f and report it now; its temp file goes when its last block is in."""
        with self.lock:
            result = self.core.fail(f, err)
            if result is not None:
                self.send_result(result)

    def complete(self, f: RxFile) -> None:
        """Called once per file, without self.lock: every block is in; verify and publish or clean up."""
        sink: Sink | None = f.sink  # type: ignore[assignment]
        with self.lock:
            how = self.core.completion(f)
        result = None
        if how is Completion.VERIFY and sink is None:
            sink = self.open_sink(f)  # a file without blocks: publish it empty
        if how is Completion.REJECT:
            self.drop_sink(f, sink)
            with self.lock:
                result = self.core.verdict(f, NO_DIGEST)
        elif how is Completion.VERIFY and sink is not None:
            digest = sink.digest.digest() if self.flags.checksum else NO_DIGEST
            with self.lock:
                result = self.core.verdict(f, digest)
            if result is None:
                result = self.publish(f, sink, digest)
            else:
                self.drop_sink(f, sink)
        else:
            self.drop_sink(f, sink)  # failed earlier: its one result is out
        with self.lock:
            if result is not None:
                self.send_result(result)
            actions = self.core.retire(f)
        self.act(actions)

    def publish(self, f: RxFile, sink: Sink, digest: bytes) -> SendResult | None:
        try:
            self.store.publish(f.parts, sink, f.entry)
        except TransferIOError as exc:
            self.drop_sink(f, sink)
            with self.lock:
                return self.core.published(f, digest, exc)
        with self.lock:
            return self.core.published(f, digest)

    def drop_sink(self, f: RxFile, sink: Sink | None) -> None:
        if sink is not None:
            self.store.discard(f.parts, sink)

    # --- metadata stream ---------------------------------------------------------------
    def meta_loop(self, conn: StreamConn) -> None:
        plain = memoryview(bytearray(max_frame_len(self.init.block_size)))
        pipe = self.pipeline("rx-meta")
        self.meta_thread = threading.get_ident()
        while True:
            if not conn.buffered:
                self.flush_meta()  # about to wait for input: send what this batch produced
            k = conn.recv_frame_into(plain)
            if k is not None and k == 1 and plain[0] == T_KEEPALIVE:
                self.ctl.alive()  # liveness only: keepalives cannot hold the idle deadline off
            else:
                self.ctl.progress()
            if k is None:
                if self.ctl.done.is_set() or self.ctl.aborted.is_set():
                    return
                with self.lock:
                    self.core.stream_closed(META_STREAM)
                return
            if plain[0] == T_DATA:  # a small file's block, in order after its entry
                self.handle_data(META_STREAM, plain, k, pipe)
                continue
            if k > META_MAX_PLAINTEXT:
                raise ProtocolError(f"metadata frame of {k} bytes exceeds {META_MAX_PLAINTEXT}")
            msg = m.decode_message(bytes(plain[:k]))
            if isinstance(msg, list):
                self.on_file_list(msg)
                continue
            with self.lock:
                actions = self.core.receive(msg)
                if isinstance(msg, m.SessionEnd):
                    self.announced.notify_all()  # data waiting for an entry: none will come now
            self.act(actions)

    def on_file_list(self, entries: list[m.FileEntry]) -> None:
        """The whole list is checked first (names, numbering, duplicates, top-level count), so
        a refused list creates nothing (OP-18); then its directories are made, then its
        entries registered, so files inside can be created."""
        # without a destination tree (rx_engine dummy) names are still checked (OP-19)
        items = [(e, self.store.map_name(e.name)) for e in entries]
        with self.lock:
            self.core.check_file_list(items)
        errors: list[EscpError | None] = []
        for e, parts in items:
            error = None
            if e.kind == KIND_DIR:
                try:
                    self.store.make_dir(parts, e)
                except TransferIOError as exc:
                    error = exc
            errors.append(error)
        with self.lock:
            actions = self.core.add_file_list(items, errors)
            self.announced.notify_all()
        self.act(actions)

    def finish_session(self, done: m.SessionDone) -> None:
        """With self.lock held, once: directories get their final metadata, then the trace
        (when asked) and SESSION_DONE are queued behind every result."""
        for err in self.store.finish_dirs():
            log.warning("%s", err.one_line())
        if self.flags.trace:
            for chunk in self.trace_chunks():
                self.queue_meta(chunk)
        self.queue_meta(m.encode_session_done(done), last=True)

    def trace_chunks(self) -> list[bytes]:
        """The receiver's trace as JSON in TRACE_CHUNK frames; never fails the session."""
        export = getattr(self.tracer, "export", None)
        if not callable(export):
            return []
        try:
            blob = json.dumps(export(include_events=self.flags.trace_events)).encode()
            if len(blob) > TRACE_TOTAL_MAX:
                blob = json.dumps(export(include_events=False)).encode()
            if len(blob) > TRACE_TOTAL_MAX:
                log.warning("receiver trace too large to send; omitted")
                return []
        except Exception:  # noqa: BLE001 - a broken trace must not break the transfer
            log.warning("could not export the receiver trace", exc_info=True)
            return []
        return [m.encode_trace_chunk(m.TraceChunk(blob[i : i + TRACE_CHUNK_MAX]))
                for i in range(0, len(blob), TRACE_CHUNK_MAX)]

    # --- metadata writer ------------------------------------------------------------------
    def queue_meta(self, plain: bytes, last: bool = False) -> None:
        """Queue a frame for the metadata writer. The metadata thread's own results wait for
        flush_meta() (called when its input runs dry), so they go out in batches."""
        with self.meta_cond:
            self.meta_out.append(plain)
            if last:
                self.meta_last_queued = True
            if last or threading.get_ident() != self.meta_thread:
                self.meta_cond.notify()

    def flush_meta(self) -> None:
        with self.meta_cond:
            if self.meta_out:
                self.meta_cond.notify()

    def meta_writer(self) -> None:
        """Sends queued results in batches, keepalives when idle, SESSION_DONE last. Nothing
        goes out before the metadata stream's ACCEPT (its first frame, OP-16); what is
        queued before then waits."""
        interval = keepalive_interval(self.ctl.idle_timeout, self.init.idle_timeout_ms / 1000)
        while not self.meta_accepted.wait(min(interval, 0.5)):
            if self.ctl.aborted.is_set() or self.ctl.done.is_set():
                return
        assert self.meta is not None
        while not self.ctl.aborted.is_set():
            with self.meta_cond:
                if not self.meta_out:
                    self.meta_cond.wait(interval)
                batch = list(self.meta_out)
                self.meta_out.clear()
                finished = self.meta_last_queued and not self.meta_out
            self.meta.send_many(batch or [m.encode_keepalive()])
            if finished:
                self.ctl.finish()
                return

    def stdin_watch(self) -> None:
        while True:
            try:
                chunk = os.read(0, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                if not self.ctl.done.is_set():
                    self.ctl.abort(ConnectionFailure("ssh channel closed (sender went away)"))
                return

    def send_abort(self, err: EscpError) -> None:
        """Tell the sender why the session ends (best effort, before sockets close)."""
        if self.meta is not None:
            self.meta.send_abort(err, ABORT_SEND_TIMEOUT)

    def cleanup(self) -> None:
        """Remove the temp files of unfinished files; no stream thread creates one after this."""
        with self.lock:
            self.closing = True
            for f in list(self.core.files.values()):
                sink: Sink | None = f.sink  # type: ignore[assignment]
                self.drop_sink(f, sink)
            self.store.close()


def install_signal_handlers(ctl: SessionControl) -> None:
    """SIGTERM, SIGHUP and SIGINT end the session like a fatal error: temp files are removed
    and the listener closed before exit (the abort runs in a thread, not in the handler)."""

    def handler(signum: int, _frame: object) -> None:
        err = ConnectionFailure(f"receiver terminated by signal {signal.Signals(signum).name}")
        threading.Thread(target=ctl.abort, args=(err,), daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, handler)


def serve(tracer: Tracer = NULL_TRACER, idle_cap: float | None = None) -> int:
    """Entry point of `escp --server`: returns the process exit code."""
    out_fd = os.dup(1)
    os.dup2(2, 1)  # nothing but bootstrap replies may reach the ssh stdout
    sys.stdout = sys.stderr

    def reply(r: SessionReply) -> None:
        data = encode_reply(r)
        while data:
            data = data[os.write(out_fd, data):]

    try:
        faults.configure()
        header = read_exact_fd(0, BOOT_HEADER.size, time.monotonic() + 60)
        body = read_exact_fd(0, parse_header(header, BOOT_SESSION_INIT), time.monotonic() + 60)
        init = decode_init(body)
    except EscpError as exc:
        print(exc.one_line(), file=sys.stderr)
        if isinstance(exc, ProtocolError):  # tell the sender why, if it speaks our bootstrap
            try:
                reply(SessionReply("", 0, error=exc.one_line(), error_cause=exc.cause))
            except OSError:
                pass
        return exc.exit_code
    setup_logging(init.session_flags.verbose, init.log_path or None, "server")
    set_session(init.session_id)
    try:
        host = load_host_config()
    except UsageError as exc:
        reply(SessionReply("", 0, error=f"receiver host configuration: {exc.message}", error_cause="usage"))
        return exc.exit_code
    log.debug("session %016x: %s", init.session_id, host.describe())
    if init.session_flags.trace and tracer is NULL_TRACER:
        tracer = _recording_tracer()
    session = ReceiverSession(init, tracer, idle_cap)
    session.cpus = host.cpus
    listener = None
    try:
        session.prepare()
        listener = bind_listener(choose_bind_address(init), init.port_start, init.port_range)
        addr, port = listener.getsockname()[:2]
        plan = session.store.plan
        reply(SessionReply(addr, port, dest_is_dir=bool(plan and plan.dest_is_dir),
                           server_time_ns=time.monotonic_ns(),
                           idle_timeout_ms=int(session.ctl.idle_timeout * 1000)))
    except EscpError as exc:
        reply(SessionReply("", 0, error=exc.one_line(), error_cause=exc.cause))
        if listener is not None:
            listener.close()
        return exc.exit_code
    ctl = session.ctl
    ctl.on_abort(session.send_abort)
    ctl.add_socket(listener)
    ctl.guard(lambda: session.acceptor(listener), "rx-accept")
    ctl.guard(session.meta_writer, "rx-meta-writer")
    threading.Thread(target=session.stdin_watch, name="rx-stdin", daemon=True).start()
    install_signal_handlers(ctl)
    ctl.wait()
    listener.close()
    session.cleanup()
    if ctl.error is not None and not ctl.done.is_set():
        print(ctl.error.one_line(), file=sys.stderr)
        return ctl.error.exit_code
    # wait (bounded) for the sender to close the ssh channel so it reads SESSION_DONE first
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if wait_readable(0, 0.2) and not os.read(0, 4096):
            break
    return EXIT_OK if session.core.files_failed == 0 else EXIT_PARTIAL


def _recording_tracer() -> Tracer:
    try:
        from ..trace.recorder import RecordingTracer

        return RecordingTracer("receiver")
    except Exception:  # noqa: BLE001 - tracing is optional and never breaks a transfer
        return NULL_TRACER
