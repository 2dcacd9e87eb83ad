"""Sender adapter: start the receiver, open the authenticated streams, and run the
stream workers (read -> checksum -> compress -> encrypt -> send) and the metadata
threads over the BlockScheduler and the sans-IO SenderCore.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator

from ..config import TransferConfig
from ..engine.compress import BlockCompressor
from ..engine.filelist import iter_filelist
from ..engine.manifest import ManifestWriter
from ..engine.pacing import PACE_SLICE, TokenBucket, set_pacing_rate
from ..engine.pipeline import SendPipeline
from ..engine.scheduler import BlockScheduler
from ..engine.sources import SourceItem, SourceProblem, iter_sources, top_level_kinds
from ..errors import ConnectionFailure, EscpError, TransferIOError
from ..logsetup import set_session
from ..protocol import messages as m
from ..protocol.bootstrap import SessionInit
from ..protocol.data import encode_data
from ..protocol.flags import SessionFlags
from ..protocol.sender_core import (
    FileVerdict,
    InlineBlock,
    MetaItem,
    SenderCore,
    SessionFinished,
    advances,
    encode_batch,
)
from ..protocol.wire import (
    KIND_DIR,
    META_STREAM,
    max_frame_len,
)
from ..results import Report, TransferResult
from ..sysconf import apply_cpumask
from ..trace import COUNTER_EVERY, NULL_TRACER, Tracer
from .conn import StreamConn, connect_stream
from .control import SessionControl, keepalive_interval
from .spawn import ReceiverProcess

log = logging.getLogger("escp")
SETUP_MIN_S = 10.0  # shortest wait for the receiver's SessionReply, whatever --timeout says
ABORT_SEND_TIMEOUT = 1.0  # how long an ABORT may take to leave
INLINE_MAX = 64 * 1024  # files up to this size travel whole on the metadata stream




class SenderSession:
    def __init__(self, cfg: TransferConfig, sources: list[bytes], dest_path: bytes,
                 proc: ReceiverProcess, tracer: Tracer = NULL_TRACER) -> None:
        self.cfg = cfg
        self.sources = sources
        self.dest_path = dest_path
        self.proc = proc
        self.tracer = tracer
        self.ctl = SessionControl(cfg.idle_timeout)
        self.init = self.session_init()
        self.core = SenderCore(self.init)
        self.report = Report(cfg.quiet)
        self.result = self.report.result
        self.lock = threading.Lock()
        self.meta_cond = threading.Condition(self.lock)
        self.meta: StreamConn | None = None
        self.scheduler: BlockScheduler | None = None
        self.session_done = threading.Event()
        self.keepalive_s = keepalive_interval(cfg.idle_timeout)  # until the receiver's reply
        self.meta_pacer = (TokenBucket(cfg.limit_bytes_per_s, PACE_SLICE, sleep=self.ctl.aborted.wait)
                           if cfg.limit_bytes_per_s else None)
        self.top_rename: bytes | None = None  # DEST's base name when it replaces the top-level name
        self.manifest = ManifestWriter(cfg.checksum_file, cfg.block_size) if cfg.checksum_file else None

    # --- set-up ---------------------------------------------------------------------
    def session_init(self) -> SessionInit:
        cfg = self.cfg
        kinds = top_level_kinds(self.sources)
        traced = self.tracer.enabled
        flags = SessionFlags(
            compress=cfg.compress, sparse=cfg.sparse, preserve=cfg.preserve, no_checksum=not cfg.checksum,
            no_direct=cfg.direct == "never", trace=traced, verbose=cfg.verbose, recursive=cfg.recursive,
            fsync=cfg.fsync, top_dir=len(kinds) == 1 and kinds[0] == KIND_DIR,
            trace_events=traced and bool(cfg.trace_path), dest_dir=cfg.filelist is not None,
        )
        return SessionInit(
            session_id=secrets.randbits(64), key=secrets.token_bytes(16), flags=flags.to_bits(),
            block_size=cfg.block_size, streams=cfg.streams, port_start=cfg.port_start,
            port_range=cfg.port_range, dest_path=self.dest_path,
            top_level_count=sum(1 for k in kinds if k is not None) or len(kinds),
            bind_address=cfg.bind_address, rx_engine=cfg.rx_engine, rekey_bytes=cfg.rekey_bytes,
            compress_level=cfg.compress_level, log_path=cfg.log_path or "",
            client_time_ns=time.monotonic_ns(), idle_timeout_ms=int(cfg.idle_timeout * 1000),
        )

    def run(self) -> TransferResult:
        start = time.monotonic()
        try:
            self._run()
        except EscpError as exc:
            self.ctl.abort(exc)
        finally:
            if self.manifest is not None:
                self.manifest.close()
        self.result.seconds = time.monotonic() - start
        self.result.bytes_sent = self.bytes_sent
        if self.ctl.error is not None and not self.session_done.is_set():
            self.result.error = self.ctl.error
        return self.result

    @property
    def bytes_sent(self) -> int:
        return self.core.bytes_sent

    def _run(self) -> None:
        cfg = self.cfg
        init = self.init
        set_session(init.session_id)
        log.debug("session %016x: %d streams, block %d, flags %#x", init.session_id, init.streams,
                  init.block_size, init.flags)
        t0 = time.monotonic_ns()
        # the set-up (ssh login, remote start) is bounded by --timeout too (never below
        # SETUP_MIN_S, so a slow remote start is not a timeout): a hung ssh ends
        reply = self.proc.exchange(init, min(cfg.connect_timeout, max(cfg.idle_timeout, SETUP_MIN_S)))
        t1 = time.monotonic_ns()
        if not reply.dest_is_dir:  # scp rule: the single top-level item lands under DEST's name
            self.top_rename = os.path.basename(self.dest_path.rstrip(b"/")) or None
        # keepalives often enough for the shorter of both idle timeouts: the receiver's may be
        # shorter than ours (its own --timeout, or the 5 s floor), and it reports it (OP-14)
        self.keepalive_s = keepalive_interval(cfg.idle_timeout, reply.idle_timeout_ms / 1000)
        if reply.server_time_ns:
            self.result.clock_offset_ns = (t0 + t1) // 2 - reply.server_time_ns
        conns: list[StreamConn] = []
        address, port = cfg.connect_to or (reply.address, reply.port)
        for index in range(cfg.streams + 1):
            try:
                conn = connect_stream(address, port, index, init.key, init.session_id, init.rekey_bytes,
                                      init.block_size, cfg.connect_timeout, cfg.idle_timeout)
            except EscpError as exc:
                err = self.proc.explain(exc)  # before closing ours: closing would cause another error there
                for c in conns:
                    c.close()
                raise err from None
            self.ctl.add_socket(conn.sock)
            conns.append(conn)
            self.core.stream_accepted(index)
        self.meta = conns[META_STREAM]
        self.ctl.on_abort(self._send_abort)
        self.scheduler = BlockScheduler(
            self.source_items(), cfg.block_size, sparse=cfg.sparse,
            dummy=cfg.tx_engine == "dummy", checksums=cfg.checksum, announce=self._announce,
            file_end=self._queue_file_end, problem=self._problem, preserve_ids=cfg.preserve,
            inline=self._queue_inline, inline_max=min(INLINE_MAX, cfg.block_size), on_room=self._wake_meta,
            direct=cfg.direct if cfg.tx_engine == "posix" else "never", content_digests=self.manifest is not None,
        )
        self.ctl.guard(self.meta_send_loop, "tx-meta-send")
        self.ctl.guard(self.meta_recv_loop, "tx-meta-recv")
        self.ctl.guard(self.process_watch, "tx-ssh-watch")
        for conn in conns[1:]:
            self.ctl.guard(lambda c=conn: self.worker(c), f"tx-{conn.index}")  # type: ignore[misc]
        self.ctl.wait()

    def dest_name(self, name: bytes) -> bytes:
        """A sent name as it lands below the directory that receives the top-level names."""
        if self.top_rename is None:
            return name
        _, sep, rest = name.partition(b"/")
        return self.top_rename + sep + rest

    def source_items(self) -> Iterator[SourceItem | SourceProblem]:
        items = iter_sources(self.sources, self.cfg.recursive)
        if self.cfg.filelist is not None:
            items = itertools.chain(items, iter_filelist(list(self.cfg.filelist), self.cfg.recursive))
        return items

    # --- callbacks from the scheduler (called with the scheduler lock held) ---------------
    def _announce(self, entry: m.FileEntry, path: bytes) -> None:
        if self.tracer.enabled:
            self.tracer.instant("meta", "file start", {"name": os.fsdecode(entry.name), "size": entry.size})
        with self.lock:
            self.core.announce(entry, path)
            self.meta_cond.notify()

    def _queue_file_end(self, end: m.FileEnd) -> None:
        with self.lock:
            self.core.file_end(end)
            self.meta_cond.notify()

    def _queue_inline(self, block: InlineBlock) -> None:
        with self.lock:
            self.core.inline(block)

    def _wake_meta(self) -> None:
        with self.lock:
            self.meta_cond.notify()

    def _problem(self, p: SourceProblem) -> None:
        self.report.source_problem(p.error, p.warning)

    # --- data streams -----------------------------------------------------------------------
    def worker(self, conn: StreamConn) -> None:
        """One data stream: blocks from the scheduler through the stage pipeline onto the wire,
        then the stream's EOS."""
        cfg = self.cfg
        sched = self.scheduler
        assert sched is not None
        tr = self.tracer
        wname = f"tx-{conn.index}"
        apply_cpumask(cfg.cpus)
        pipe = SendPipeline(cfg.block_size, tr, wname, checksum=cfg.checksum,
                            compress_level=cfg.compress_level if cfg.compress else None, sparse=cfg.sparse,
                            dummy=cfg.tx_engine == "dummy")
        pacer = None
        if cfg.limit_bytes_per_s:
            set_pacing_rate(conn.sock, cfg.limit_bytes_per_s)
            pacer = TokenBucket(cfg.limit_bytes_per_s, PACE_SLICE, sleep=self.ctl.aborted.wait)
        frames = 0
        conn.trace_as(tr, wname)  # the stream records send and its blocked waits
        while not self.ctl.aborted.is_set():
            job = sched.ready_job() if tr.enabled else None
            if job is None:
                t0 = tr.now()
                job = sched.next_job(self.ctl.aborted)
                if job is None:
                    break
                tr.wait(wname, "read", t0, "starved")  # no block to read yet (the walk is behind)
            if job.file.cancelled or job.file.error is not None:
                sched.block_done(job, None)
                continue
            try:
                encoded = pipe.encode(job, conn.sealer)
            except TransferIOError as exc:
                sched.block_done(job, None, exc)
                continue
            if encoded is None:  # an all-zero block, skipped (--sparse)
                sched.block_done(job, None)
                continue
            frame, digest = encoded
            self._send_frame(conn, frame, pacer, wname)
            frames += 1
            with self.lock:
                self.core.data_sent(conn.index, job.length)
            self.ctl.progress()
            sched.block_done(job, digest)
            if tr.enabled and frames % COUNTER_EVERY == 1:  # the stream worker's trace counters
                tr.counter("sender bytes sent", self.core.bytes_sent)
                tr.counter(f"{wname} bytes in flight", conn.unacked_bytes())
        if self.ctl.aborted.is_set():
            return
        with self.lock:
            eos = self.core.end_stream(conn.index)
        conn.send_plain(m.encode_eos(eos))
        conn.shutdown_write()  # FIN after the end-of-stream frame: anything more is a forgery

    def _send_frame(self, conn: StreamConn, frame: memoryview, pacer: TokenBucket | None, wname: str) -> None:
        if pacer is None:
            conn.sendall(frame)
            return
        tr = self.tracer
        n = len(frame)
        for start in range(0, n, PACE_SLICE):
            t0 = tr.now()
            if not pacer.take(min(PACE_SLICE, n - start)):
                return  # aborted
            tr.wait(wname, "send", t0, "blocked")  # held back by -l: the (emulated) link
            conn.sendall(frame[start : min(n, start + PACE_SLICE)])
            self.ctl.progress()

    # --- metadata ---------------------------------------------------------------------
    def meta_send_loop(self) -> None:
        """Walks the sources (small files inline) and sends entries, blocks and FILE_ENDs in
        order, then SESSION_END, then keepalives until SESSION_DONE."""
        assert self.meta is not None and self.scheduler is not None
        sched = self.scheduler
        interval = self.keepalive_s
        compressor = BlockCompressor(self.cfg.compress_level) if self.cfg.compress else None
        while not self.ctl.aborted.is_set():
            if sched.wants_more:
                sched.pump()
            with self.lock:
                walk_done = sched.exhausted and not sched.files
                if not self.core.queue and not sched.wants_more and not self.core.may_end_session(walk_done):
                    if not self.meta_cond.wait(interval) and not self.core.queue:
                        self.core.keepalive()
                batch = self.core.take_batch()
                # marked before it is sent: the receiver may answer SESSION_DONE at once
                end = self.core.end_session() if not batch and self.core.may_end_session(walk_done) else None
            if end is not None:
                self.meta.send_plain(m.encode_session_end(end))
                self._keepalive_until_done(interval)
                return
            if batch:
                self._send_batch(batch, compressor)

    def _send_batch(self, batch: list[MetaItem], compressor: BlockCompressor | None) -> None:
        """Sending stamps progress unless the batch is only our own keepalive (OP-15)."""
        assert self.meta is not None
        progress = advances(batch)
        frames = encode_batch(batch, lambda block: self._inline_frame(block, compressor))
        if self.meta_pacer is None:
            self.meta.send_many(frames)
            if progress:
                self.ctl.progress()
            return
        group: list[bytes] = []  # -l: small files on the metadata stream are paced as well
        size = 0
        for i, frame in enumerate(frames):
            group.append(frame)
            size += len(frame)
            if size >= PACE_SLICE or i == len(frames) - 1:
                if not self.meta_pacer.take(size):
                    return  # aborted
                self.meta.send_many(group)
                if progress:
                    self.ctl.progress()
                group, size = [], 0

    @staticmethod
    def _inline_frame(block: InlineBlock, compressor: BlockCompressor | None) -> bytes:
        payload, compressed = block.data, False
        if compressor is not None:
            packed = compressor.compress(memoryview(block.data))
            if packed is not None:
                payload, compressed = packed, True
        return encode_data(block.fino, 0, len(block.data), payload, compressed)

    def _keepalive_until_done(self, interval: float) -> None:
        assert self.meta is not None
        while not self.session_done.wait(interval) and not self.ctl.aborted.is_set():
            with self.lock:
                self.core.keepalive()
                batch = self.core.take_batch()
            self.meta.send_many(encode_batch(batch, lambda block: b""))

    def meta_recv_loop(self) -> None:
        assert self.meta is not None
        plain = memoryview(bytearray(max_frame_len(self.cfg.block_size)))
        while True:
            msg = self.meta.recv_message(plain)
            if isinstance(msg, m.Keepalive):
                self.ctl.alive()
            else:
                self.ctl.progress()
            if msg is None:
                if self.session_done.is_set() or self.ctl.aborted.is_set():
                    return
                with self.lock:
                    self.core.stream_closed()
                return
            with self.lock:
                outcome = self.core.receive(msg)
            if isinstance(outcome, FileVerdict):
                self._on_verdict(outcome)
            elif isinstance(outcome, SessionFinished):
                self._on_done(outcome)
                return

    def _on_verdict(self, v: FileVerdict) -> None:
        f = v.file
        entry = f.entry
        content = self.scheduler.content.pop(entry.fino, None) if self.scheduler is not None else None
        dest_name = self.dest_name(entry.name)
        with self.lock:
            self.report.file_done(f.path, dest_name, entry.size, entry.kind == KIND_DIR, v.ok, v.cause, v.message)
            if v.ok and self.manifest is not None and content is not None:
                self.manifest.add(dest_name, entry.size, content)
        if not v.ok and self.scheduler is not None:
            self.scheduler.cancel(entry.fino)

    def _on_done(self, done: SessionFinished) -> None:
        if done.receiver_trace:
            try:
                self.result.receiver_trace = json.loads(done.receiver_trace)
            except ValueError:
                log.warning("receiver sent an unreadable trace; ignored")
        self.session_done.set()
        self.ctl.finish()

    def _send_abort(self, err: EscpError) -> None:
        if self.meta is not None:
            self.meta.send_abort(err, ABORT_SEND_TIMEOUT)

    def process_watch(self) -> None:
        while not self.ctl.done.is_set() and not self.ctl.aborted.is_set():
            if self.proc.proc.poll() is not None and not self.ctl.done.wait(0.5):
                errs = self.proc.remote_errors()
                raise ConnectionFailure(f"ssh channel closed (receiver exited): {errs}" if errs else
                                        "ssh channel closed (receiver exited)")
            self.ctl.done.wait(0.2)

