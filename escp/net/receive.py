"""The receiving side of a session, in whichever process it runs: stream threads around
the sans-IO ReceiverCore.

Threads: one per data stream (recv -> decrypt in the stream, then the ReceivePipeline:
decompress -> verify -> write), one for the metadata stream (FILE_LIST, small files'
DATA, FILE_END, SESSION_END), and the metadata writer (results back, in batches). The
streams come from a listener or a connector (streams.py): this class only claims them,
takes them and starts their threads. The core decides; this class does the I/O it asks
for (the actions) and serialises calls into the core with one lock.
"""

from __future__ import annotations

import threading
import time

from ..engine.pipeline import ReceivePipeline
from ..engine.sink import FileStore
from ..errors import EscpError, ProtocolError, TransferIOError
from ..protocol import messages as m
from ..protocol.bootstrap import SessionInit
from ..protocol.data import DATA_HEADER_LEN, DataHeader, decode_data_header
from ..protocol.receiver_core import ReceiverCore, RxFile, unannounced
from ..protocol.request import RequestRule
from ..protocol.roles import DataRole
from ..protocol.states import SessionState
from ..protocol.wire import (
    KIND_DIR,
    META_MAX_PLAINTEXT,
    META_STREAM,
    T_DATA,
    T_EOS,
    TRACE_TOTAL_MAX,
    max_frame_len,
)
from ..results import ProgressSnapshot
from ..sysconf import apply_cpumask
from ..trace import COUNTER_EVERY, NULL_TRACER, Tracer, export_json
from .conn import StreamConn
from .control import SessionControl, incoming, keepalive_interval
from .metastream import ResultWriter
from .rxfiles import ReceivedFiles, ResultHook
from .streams import worker_name

ROLE = DataRole.RECEIVER
ANNOUNCE_WAIT = 30.0  # how long a data frame may wait for its file's announcement
ABORT_SEND_TIMEOUT = 2.0  # how long an ABORT may take to leave


def accept_data(core: ReceiverCore, announced: threading.Condition, ctl: SessionControl, index: int,
                header: DataHeader, payload_len: int) -> RxFile:
    """With the session lock (announced's) held: the core's checks of a DATA frame, waiting
    (bounded) for its file's announcement when a data stream overtook the FILE_LIST."""
    end = time.monotonic() + ANNOUNCE_WAIT
    while (f := core.receive_data(index, header, payload_len)) is None:
        left = end - time.monotonic()
        if left <= 0 or ctl.aborted.is_set():
            raise unannounced(header.fino)
        announced.wait(min(left, 0.5))
    return f


def receiving_snapshot(core: ReceiverCore, bytes_done: int, current: bytes = b"") -> ProgressSnapshot:
    """Where a receiving side stands, as the files announced so far give it (read without the
    lock: a display may lag a little); the totals are known once SESSION_END has passed."""
    done = bytes_done + core.bytes_skipped  # files the destination had count as done
    return ProgressSnapshot(done, max(core.bytes_announced, done), core.files_ok + core.files_failed + core.files_skipped,
                            core.files_announced, core.state is not SessionState.OPEN, current)


class ReceiveSession:
    """`request`: a pulling receiver's rule of what it asked for; `trace_to_peer`: send this
    side's trace to the sender before SESSION_DONE (version 1's push; otherwise the trace
    stays with the caller); `on_result`: the user's view of each file's result."""

    def __init__(self, init: SessionInit, store: FileStore, idle_timeout: float, tracer: Tracer = NULL_TRACER,
                 cpus: tuple[int, ...] | None = None, *, request: RequestRule | None = None,
                 trace_to_peer: bool = True, on_result: ResultHook | None = None) -> None:
        self.init = init
        self.store = store  # the destination (FileStore.for_session)
        self.tracer = tracer
        self.cpus = cpus  # stream workers' CPUs (host configuration)
        self.ctl = SessionControl(idle_timeout=idle_timeout)
        self.flags = flags = init.session_flags
        self.core = ReceiverCore(init, request)
        self.lock = threading.RLock()
        self.announced = threading.Condition(self.lock)
        self.meta: StreamConn | None = None
        self.writer = ResultWriter(self.ctl, keepalive_interval(idle_timeout, init.idle_timeout_ms / 1000))
        self.files = ReceivedFiles(self.core, self.lock, store, self.writer, tracer, flags,
                                   self.trace_json if trace_to_peer else None, on_result, self.ctl.progress)
        self.failed_dirs: set[tuple[bytes, ...]] = set()  # directories that could not be made
        self.ctl.on_abort(self.send_abort)

    @property
    def bytes_received(self) -> int:
        return self.core.bytes_written

    def snapshot(self) -> ProgressSnapshot:
        return receiving_snapshot(self.core, self.core.bytes_written, self.files.current)

    def start(self) -> None:
        self.ctl.guard(self.writer.run, "rx-meta-writer")

    def pipeline(self, worker: str) -> ReceivePipeline:
        return ReceivePipeline(self.init.block_size, self.tracer, worker, self.store, checksum=self.flags.checksum)

    # --- streams (a StreamUser) ----------------------------------------------------------------
    def claim_stream(self, index: int) -> bool:
        with self.lock:
            return self.core.claim_stream(index)

    def stream_timeout(self, index: int) -> float | None:
        # the metadata stream carries keepalives, so a read that waits longer than the idle
        # timeout there means the sender is gone; a data stream may legitimately stay silent
        # while only small files travel on the metadata stream (OP-13): no timeout of its
        # own there, the session deadline decides (SessionControl.wait) and an abort wakes it
        return self.ctl.idle_timeout if index == META_STREAM else None

    def adopt(self, conn: StreamConn) -> None:
        if conn.index == META_STREAM:
            self.meta = conn

    def start_stream(self, conn: StreamConn) -> None:
        if conn.index == META_STREAM:
            self.writer.attach(conn)  # only now may the writer use it (OP-16)
            self.ctl.guard(lambda: self.meta_loop(conn), worker_name("rx", conn.index))
        else:
            self.ctl.guard(lambda: self.data_loop(conn), worker_name("rx", conn.index))

    # --- data streams --------------------------------------------------------------------------
    def data_loop(self, conn: StreamConn) -> None:
        worker = worker_name("rx", conn.index)
        apply_cpumask(self.cpus)
        tr = self.tracer
        plain = memoryview(bytearray(max_frame_len(self.init.block_size)))
        pipe = self.pipeline(worker)
        frames = 0
        conn.trace_as(tr, worker)  # the stream records recv, decrypt and its starved waits
        while True:
            k = conn.recv_frame_into(plain)
            if k is None:
                if not self.ctl.aborted.is_set():
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
                self.files.act(actions)
                return
            self.handle_data(conn.index, plain, k, pipe)
            frames += 1
            if tr.enabled and frames % COUNTER_EVERY == 1:
                tr.counter("receiver bytes written", self.core.bytes_written)

    def handle_data(self, index: int, plain: memoryview, k: int, pipe: ReceivePipeline) -> None:
        """One DATA frame (from a data stream or, for small files, the metadata stream)."""
        header = decode_data_header(plain, k)
        with self.lock:
            f = accept_data(self.core, self.announced, self.ctl, index, header, k - DATA_HEADER_LEN)
            failed = f.failed
        sink = None if failed else self.files.open_sink(f)
        data = pipe.payload(plain, k, header)
        if sink is not None:
            try:
                pipe.write(sink, data, header.offset)
                self.store.note_written(f.parts, sink, f.entry)
            except TransferIOError as exc:
                self.files.fail_file(f, exc)
        with self.lock:
            actions = self.core.block_stored(f, header.raw_len)
        self.files.act(actions)

    # --- metadata stream ---------------------------------------------------------------------
    def meta_loop(self, conn: StreamConn) -> None:
        plain = memoryview(bytearray(max_frame_len(self.init.block_size)))
        pipe = self.pipeline(worker_name("rx", META_STREAM))
        self.writer.reader = threading.get_ident()
        # before each wait for input: send what this batch produced
        for k in incoming(conn, plain, self.ctl, self.meta_closed, self.writer.flush):
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
            self.files.act(actions)

    def meta_closed(self) -> None:
        with self.lock:
            self.core.stream_closed(META_STREAM)

    def on_file_list(self, entries: list[m.FileEntry]) -> None:
        """The whole list is checked first (names, numbering, duplicates, top-level count), so
        a refused list creates nothing (OP-18); then its directories are made, then its
        entries registered, so files inside can be created. What lies below a directory that
        could not be made fails with it, without another try."""
        # without a destination tree (rx_engine dummy) names are still checked (OP-19)
        items = [(e, self.store.map_name(e.name)) for e in entries]
        with self.lock:
            self.core.check_file_list(items)
        errors: list[EscpError | None] = []
        for e, parts in items:
            error = None
            if any(parts[:i] in self.failed_dirs for i in range(1, len(parts))):
                error = TransferIOError("not written: its directory could not be created",
                                        path=self.store.display(parts, e.name))
            elif e.kind == KIND_DIR:
                try:
                    self.store.make_dir(parts, e)
                except TransferIOError as exc:
                    error = exc
            if error is not None and e.kind == KIND_DIR:
                self.failed_dirs.add(parts)
            errors.append(error)
        with self.lock:
            actions = self.core.add_file_list(items, errors)
            self.announced.notify_all()
        self.files.act(actions)

    def trace_json(self) -> bytes:
        """This side's trace as JSON (b"" when there is none); never fails the session."""
        return export_json(self.tracer, self.flags.trace_events, TRACE_TOTAL_MAX)

    # --- the end ------------------------------------------------------------------------------
    def send_abort(self, err: EscpError) -> None:
        """Tell the peer why the session ends (best effort, before sockets close)."""
        if self.meta is not None:
            self.meta.send_abort(err, ABORT_SEND_TIMEOUT)

    def cleanup(self) -> None:
        self.files.cleanup()
