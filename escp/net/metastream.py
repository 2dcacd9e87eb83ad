"""The outgoing side of the metadata stream, one writer thread per data role.

MetaSender (the sending side) drives the source walk and sends what the SenderCore
queued, in order: entries in as few FILE_LIST frames as fit, small files' DATA,
FILE_ENDs; then SESSION_END, then keepalives until SESSION_DONE (docs/protocol.md §7.6,
§9.7). A batch that holds only its own keepalive is not progress (OP-15); with -l the
metadata stream draws from the data streams' shared pacer (keepalives alone are not paced).

ResultWriter (the receiving side) sends results in batches (§9.12): FILE_RESULTs,
TRACE_CHUNKs and SESSION_DONE are queued from any thread and sealed back to back by the
writer, in queue order; SESSION_DONE is queued last and ends it. Frames the metadata
reader queues itself wait until it is about to block on its socket (flush), so a burst
of small files is answered in a few large writes. A KEEPALIVE goes out whenever the
writer waited one keepalive interval with nothing to send. Nothing is sent before the
stream is attached, i.e. before its ACCEPT went out (OP-16): what is queued before then
waits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..engine.compress import BlockCompressor
from ..engine.pacing import PACE_SLICE, SharedPacer
from ..engine.scheduler import BlockScheduler
from ..protocol import messages as m
from ..protocol.data import encode_data
from ..protocol.sender_core import InlineBlock, MetaItem, SenderCore, advances, encode_batch
from .conn import StreamConn
from .control import SessionControl

ATTACH_POLL = 0.5  # seconds between looks at the session's end before the stream is attached


def inline_frame(block: InlineBlock, compressor: BlockCompressor | None) -> bytes:
    """A small file's DATA: compressed when that shrinks it (the compress stage)."""
    payload, compressed = block.data, False
    if compressor is not None:
        packed = compressor.compress(memoryview(block.data))
        if packed is not None:
            payload, compressed = packed, True
    return encode_data(block.fino, 0, len(block.data), payload, compressed)


class ResultWriter:
    """`on_last`: what sending the session's last frame means (by default: the session is
    done; a relay, which runs two sessions, decides for itself)."""

    def __init__(self, ctl: SessionControl, interval: float, on_last: Callable[[], None] | None = None) -> None:
        self.ctl = ctl
        self.interval = interval  # keepalive interval (control.keepalive_interval)
        self.on_last = on_last or ctl.finish
        self.reader = 0  # thread id of the metadata reader, whose frames wait for flush()
        self._conn: StreamConn | None = None
        self._attached = threading.Event()
        self._cond = threading.Condition(threading.Lock())
        self._out: list[bytes] = []
        self._last = False

    def attach(self, conn: StreamConn) -> None:
        """The metadata stream's handshake is over: the writer may use it."""
        self._conn = conn
        self._attached.set()

    def queue(self, plain: bytes, last: bool = False) -> None:
        """Queue a frame; `last` marks the session's last frame (SESSION_DONE)."""
        with self._cond:
            self._out.append(plain)
            if last:
                self._last = True
            if last or threading.get_ident() != self.reader:
                self._cond.notify()

    def flush(self) -> None:
        """The reader is about to wait for input: send what its batch produced."""
        with self._cond:
            if self._out:
                self._cond.notify()

    def run(self) -> None:
        while not self._attached.wait(min(self.interval, ATTACH_POLL)):
            if self.ctl.aborted.is_set() or self.ctl.done.is_set():
                return
        conn = self._conn
        assert conn is not None
        while not self.ctl.aborted.is_set():
            with self._cond:
                if not self._out:
                    self._cond.wait(self.interval)
                batch = list(self._out)
                self._out.clear()
                finished = self._last and not self._out
            conn.send_many(batch or [m.encode_keepalive()])
            if finished:
                self.on_last()
                return


class MetaSender:
    """The sending side's metadata thread. `lock` guards the core (the session's lock) and
    `wake` (a condition on it) is notified whenever the core queued something or the
    scheduler has room for the walk."""

    def __init__(self, core: SenderCore, scheduler: BlockScheduler, lock: threading.Lock,
                 wake: threading.Condition, ctl: SessionControl, *, interval: float, compress_level: int | None,
                 pacer: SharedPacer | None) -> None:
        self.core = core
        self.scheduler = scheduler
        self.lock = lock
        self.wake = wake
        self.ctl = ctl
        self.interval = interval  # keepalive interval
        self.compressor = BlockCompressor(compress_level) if compress_level else None
        self.pacer = pacer

    def run(self, conn: StreamConn) -> None:
        sched, core = self.scheduler, self.core
        while not self.ctl.aborted.is_set():
            if sched.wants_more:
                sched.pump()
            with self.lock:
                walk_done = sched.done
                if not core.queue and not sched.wants_more and not core.may_end_session(walk_done):
                    if not self.wake.wait(self.interval) and not core.queue:
                        core.keepalive()
                batch = core.take_batch()
                # marked before it is sent: the receiver may answer SESSION_DONE at once
                end = core.end_session() if not batch and core.may_end_session(walk_done) else None
            if end is not None:
                conn.send_plain(m.encode_session_end(end))
                self.keepalive_until_done(conn)
                return
            if batch:
                self.send_batch(conn, batch)

    def send_batch(self, conn: StreamConn, batch: list[MetaItem]) -> None:
        """Sending stamps progress unless the batch is only our own keepalive (OP-15)."""
        progress = advances(batch)
        frames = encode_batch(batch, self.inline_frame)
        if self.pacer is None or not progress:  # a lone keepalive is not held behind booked frames
            conn.send_many(frames)
            if progress:
                self.ctl.progress()
            return
        group: list[bytes] = []  # -l: small files on the metadata stream are paced as well
        size = 0
        for i, frame in enumerate(frames):
            group.append(frame)
            size += len(frame)
            if size >= PACE_SLICE or i == len(frames) - 1:
                if not self.pacer.take(size):
                    return  # aborted
                conn.send_many(group)
                if progress:
                    self.ctl.progress()
                group, size = [], 0

    def inline_frame(self, block: InlineBlock) -> bytes:
        return inline_frame(block, self.compressor)

    def keepalive_until_done(self, conn: StreamConn) -> None:
        while not self.ctl.done.wait(self.interval) and not self.ctl.aborted.is_set():
            with self.lock:
                self.core.keepalive()
                batch = self.core.take_batch()
            conn.send_many(encode_batch(batch, self.inline_frame))
