"""The sending side of a session, in whichever process it runs: stream threads around
the sans-IO SenderCore and the BlockScheduler.

Threads: one worker per data stream (blocks from the scheduler through the
SendPipeline: read -> checksum -> compress -> encrypt, then send; EOS at the end), the
metadata sender (walk, entries, small files, FILE_ENDs, SESSION_END: metastream.py) and
the metadata reader (results, trace, SESSION_DONE). The streams come from a connector or
a listener (streams.py): this class only claims them, takes them and starts their
threads. The core decides; results and the user's error lines go to results.Report.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..config import TransferConfig
from ..engine.filelist import ListEntry, iter_filelist
from ..engine.manifest import ManifestWriter
from ..engine.pacing import SharedPacer, set_pacing_rate
from ..engine.pipeline import SendPipeline
from ..engine.scheduler import BlockScheduler
from ..engine.sources import SourceItem, SourceProblem, iter_sources
from ..errors import EscpError, TransferIOError
from ..protocol import messages as m
from ..protocol.bootstrap import SessionInit
from ..protocol.roles import DataRole
from ..protocol.sender_core import FileVerdict, InlineBlock, Released, SenderCore, SessionFinished
from ..protocol.wire import KIND_DIR, META_STREAM, max_frame_len
from ..results import ProgressSnapshot, Report, TransferResult
from ..sysconf import apply_cpumask
from ..trace import COUNTER_EVERY, NULL_TRACER, Tracer, tcpinfo
from .conn import StreamConn
from .control import SessionControl, incoming, keepalive_interval
from .metastream import MetaSender
from .streams import worker_name

log = logging.getLogger("escp")

ROLE = DataRole.SENDER
ABORT_SEND_TIMEOUT = 1.0  # how long an ABORT may take to leave
INLINE_MAX = 64 * 1024  # files up to this size travel whole on the metadata stream


@dataclass(frozen=True)
class SendOptions:
    """What only the sending side decides; everything both sides share is in SessionInit."""

    sources: tuple[bytes, ...]
    filelist: tuple[ListEntry, ...] | None = None
    recursive: bool = False
    tx_engine: str = "posix"
    direct: str = "auto"
    limit_bytes_per_s: int = 0
    cpus: tuple[int, ...] | None = None
    checksum_file: str | None = None
    quiet: bool = False
    idle_timeout: float = 60.0
    to_report_only: bool = False  # a server: its problems reach the user in its SessionReport, not on stderr

    @classmethod
    def of(cls, cfg: TransferConfig, sources: list[bytes]) -> SendOptions:
        return cls(tuple(sources), cfg.filelist, cfg.recursive, cfg.tx_engine, cfg.direct, cfg.limit_bytes_per_s,
                   cfg.cpus, cfg.checksum_file, cfg.quiet, cfg.idle_timeout)


class SendSession:
    def __init__(self, init: SessionInit, opts: SendOptions, tracer: Tracer = NULL_TRACER) -> None:
        self.init = init
        self.opts = opts
        self.flags = init.session_flags
        self.tracer = tracer
        self.ctl = SessionControl(opts.idle_timeout)
        self.core = SenderCore(init)
        self.report = Report(opts.quiet, silent=opts.to_report_only)
        self.result = self.report.result
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)  # the metadata sender's: something to send
        self.meta: StreamConn | None = None
        self.scheduler: BlockScheduler | None = None
        self.sender: MetaSender | None = None
        self.top_rename: bytes | None = None  # DEST's base name when it replaces the top-level name
        self.dest_root = b""  # the directory that receives the top-level names, as error lines name it
        # for progress displays (snapshot): plain counters written under self.lock, and the
        # file being sent (written by whichever thread moved on to a file, without the lock)
        self.bytes_known = self.bytes_skipped = self.files_known = self.files_done = 0
        self.current = b""
        self.manifest = ManifestWriter(opts.checksum_file, init.block_size) if opts.checksum_file else None
        # -l: one limit for the whole transfer, shared by every stream and the metadata stream
        rate = opts.limit_bytes_per_s
        self.pacer = SharedPacer(rate, sleep=self.ctl.aborted.wait) if rate else None
        self.ctl.on_abort(self.send_abort)

    @property
    def bytes_sent(self) -> int:
        return self.core.bytes_sent

    def snapshot(self) -> ProgressSnapshot:
        """Where the transfer stands (read without the lock: a display may lag a little)."""
        sched = self.scheduler
        return ProgressSnapshot(self.core.bytes_sent + self.bytes_skipped, self.bytes_known, self.files_done,
                                self.files_known, sched is not None and sched.exhausted, self.current)

    def start(self, top_rename: bytes | None, peer_idle_timeout: float, dest_root: bytes = b"") -> None:
        """The bootstrap is over: `top_rename` is DEST's base name when the single top-level
        item lands under it (scp rule); `dest_root` names the directory that receives the
        top-level names (`host:path` for a remote one) in error lines; keepalives suit the
        shorter of both idle timeouts (the peer's may be shorter than ours, OP-14)."""
        opts, flags, init = self.opts, self.flags, self.init
        self.top_rename = top_rename
        self.dest_root = dest_root
        self.scheduler = BlockScheduler(
            self.source_items(), init.block_size, sparse=flags.sparse, dummy=opts.tx_engine == "dummy",
            checksums=flags.checksum, announce=self._announce, file_end=self._queue_file_end,
            problem=self._source_problem, preserve_ids=flags.preserve,
            inline=self._queue_inline, inline_max=min(INLINE_MAX, init.block_size), on_room=self._wake,
            direct=opts.direct if opts.tx_engine == "posix" else "never", content_digests=self.manifest is not None,
            gated=flags.gated, file_sum=self._queue_file_sum if flags.skip_digest else None,
        )
        self.sender = MetaSender(self.core, self.scheduler, self.lock, self.wake, self.ctl,
                                 interval=keepalive_interval(opts.idle_timeout, peer_idle_timeout),
                                 compress_level=init.compress_level if flags.compress else None, pacer=self.pacer)

    # --- streams (a StreamUser) ------------------------------------------------------------------
    def claim_stream(self, index: int) -> bool:
        with self.lock:
            return self.core.claim_stream(index)

    def stream_timeout(self, index: int) -> float | None:
        return self.opts.idle_timeout  # every stream carries our frames: a send may block that long

    def adopt(self, conn: StreamConn) -> None:
        if conn.index == META_STREAM:
            self.meta = conn

    def start_stream(self, conn: StreamConn) -> None:
        name = worker_name("tx", conn.index)
        if conn.index == META_STREAM:
            sender = self.sender
            assert sender is not None, "start() comes first"
            self.ctl.guard(lambda: sender.run(conn), f"{name}-send")
            self.ctl.guard(lambda: self.meta_recv_loop(conn), f"{name}-recv")
        else:
            self.ctl.guard(lambda: self.worker(conn), name)

    # --- sources --------------------------------------------------------------------------------
    def dest_name(self, name: bytes) -> bytes:
        """A sent name as it lands below the directory that receives the top-level names."""
        if self.top_rename is None:
            return name
        _, sep, rest = name.partition(b"/")
        return self.top_rename + sep + rest

    def dest_shown(self, name: bytes) -> bytes:
        """A sent name as error lines show it at the destination: `host:path/name`."""
        root = self.dest_root
        return root + name if not root or root.endswith((b"/", b":")) else root + b"/" + name

    def source_items(self) -> Iterator[SourceItem | SourceProblem]:
        items = iter_sources(list(self.opts.sources), self.opts.recursive)
        if self.opts.filelist is not None:
            items = itertools.chain(items, iter_filelist(list(self.opts.filelist), self.opts.recursive))
        return items

    # callbacks from the scheduler (called with the scheduler lock held)
    def _announce(self, entry: m.FileEntry, path: bytes) -> None:
        if self.tracer.enabled:
            self.tracer.instant("meta", "file start", {"name": os.fsdecode(entry.name), "size": entry.size})
        with self.lock:
            self.core.announce(entry, path)
            if entry.kind != KIND_DIR:
                self.bytes_known += entry.size
                self.files_known += 1
                self.current = path
            self.wake.notify()

    def _source_problem(self, problem: SourceProblem) -> None:
        with self.lock:
            if not problem.warning:
                self.files_known += 1
                self.files_done += 1
            self.report.source_problem(problem.error, problem.warning)

    def _queue_file_end(self, end: m.FileEnd) -> None:
        with self.lock:
            self.core.file_end(end)
            self.wake.notify()

    def _queue_file_sum(self, msg: m.FileSum) -> None:
        with self.lock:
            self.core.content_sum(msg)

    def _queue_inline(self, block: InlineBlock) -> None:
        with self.lock:
            self.core.inline(block)

    def _wake(self) -> None:
        with self.lock:
            self.wake.notify()

    # --- data streams -------------------------------------------------------------------------------
    def worker(self, conn: StreamConn) -> None:
        """One data stream: blocks from the scheduler through the stage pipeline onto the wire,
        then the stream's EOS."""
        sched = self.scheduler
        assert sched is not None
        opts, tr = self.opts, self.tracer
        wname = worker_name("tx", conn.index)
        apply_cpumask(opts.cpus)
        pipe = SendPipeline(self.init.block_size, tr, wname, checksum=self.flags.checksum,
                            compress_level=self.init.compress_level if self.flags.compress else None,
                            sparse=self.flags.sparse, dummy=opts.tx_engine == "dummy")
        if self.pacer is not None:
            set_pacing_rate(conn.sock, opts.limit_bytes_per_s)  # a hint: no one socket above the whole limit
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
            self.current = job.file.path  # for progress displays: the file being read and sent
            try:
                encoded = pipe.encode(job, conn.sealer)
            except TransferIOError as exc:
                sched.block_done(job, None, exc)
                continue
            if encoded is None:  # an all-zero block, skipped (--sparse)
                with self.lock:
                    self.bytes_skipped += job.length
                sched.block_done(job, None)
                continue
            frame, digest = encoded
            self.send_frame(conn, frame, wname)
            frames += 1
            with self.lock:
                self.core.data_sent(conn.index, job.length)
            self.ctl.progress()
            sched.block_done(job, digest)
            if tr.enabled and frames % COUNTER_EVERY == 1:  # the stream worker's trace counters
                tr.counter("sender bytes sent", self.core.bytes_sent)
                tr.counter(f"{wname} bytes in flight", conn.unacked_bytes())
                tcpinfo.sample(tr, wname, conn.sock)
        tcpinfo.sample(tr, wname, conn.sock)  # the stream's final retransmits and limited times
        if self.ctl.aborted.is_set():
            return
        with self.lock:
            eos = self.core.end_stream(conn.index)
        conn.send_plain(m.encode_eos(eos))
        conn.shutdown_write()  # FIN after the end-of-stream frame: anything more is a forgery

    def send_frame(self, conn: StreamConn, frame: memoryview, wname: str) -> None:
        """One frame onto the wire; with -l, booked whole on the shared schedule and sent in
        slices, each at its moment."""
        if self.pacer is None:
            conn.sendall(frame)
            return
        tr = self.tracer
        for start, end, moment in self.pacer.slices(len(frame)):
            t0 = tr.now()
            if not self.pacer.wait_until(moment):
                return  # aborted
            tr.wait(wname, "send", t0, "blocked")  # held back by -l: the (emulated) link
            conn.sendall(frame[start:end])
            self.ctl.progress()

    # --- what the receiver says -----------------------------------------------------------------
    def meta_recv_loop(self, conn: StreamConn) -> None:
        plain = memoryview(bytearray(max_frame_len(self.init.block_size)))
        for k in incoming(conn, plain, self.ctl, self.meta_closed):
            msg = m.decode_message(bytes(plain[:k]))
            with self.lock:
                outcome = self.core.receive(msg)
            if isinstance(outcome, FileVerdict):
                self.file_done(outcome)
            elif isinstance(outcome, Released):
                assert self.scheduler is not None
                self.scheduler.release(outcome.file.entry.fino, outcome.offer)
            elif isinstance(outcome, SessionFinished):
                self.session_done(outcome)
                return

    def meta_closed(self) -> None:
        with self.lock:
            self.core.stream_closed()

    def file_done(self, v: FileVerdict) -> None:
        entry, path = v.file.entry, v.file.path
        content = self.scheduler.content.pop(entry.fino, None) if self.scheduler is not None else None
        kept = self.scheduler.kept.pop(entry.fino, 0) if self.scheduler is not None else 0
        dest_name = self.dest_name(entry.name)
        with self.lock:
            self.files_done += entry.kind != KIND_DIR
            self.bytes_skipped += entry.size if v.skipped else kept
            self.report.file_done(path, dest_name, entry.size, entry.kind == KIND_DIR, v.ok, v.cause, v.message,
                                  shown=path if v.at_source else self.dest_shown(dest_name), skipped=v.skipped,
                                  resumed=kept if v.ok else 0)
            if v.ok and self.manifest is not None and content is not None:
                self.manifest.add(dest_name, entry.size, content)
        if (not v.ok or v.skipped) and self.scheduler is not None:
            self.scheduler.cancel(entry.fino)

    def session_done(self, done: SessionFinished) -> None:
        if done.receiver_trace:
            try:
                self.result.traces[ROLE.peer.value] = json.loads(done.receiver_trace)
            except ValueError:
                log.warning("receiver sent an unreadable trace; ignored")
        self.ctl.finish()

    # --- the end ----------------------------------------------------------------------------------
    def send_abort(self, err: EscpError) -> None:
        if self.meta is not None:
            self.meta.send_abort(err, ABORT_SEND_TIMEOUT)

    def finish(self, seconds: float) -> TransferResult:
        """The session is over (done or aborted): the result, with the error if it failed."""
        if self.manifest is not None:
            self.manifest.close()
        self.result.seconds = seconds
        self.result.bytes_sent = self.core.bytes_sent
        if self.ctl.error is not None and not self.ctl.done.is_set():
            self.result.error = self.ctl.error
        return self.result
