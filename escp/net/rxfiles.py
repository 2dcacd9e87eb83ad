"""The receiving side's files, from their first block to their one result: temp files,
completion (digest verdict, publish or discard), and the actions the ReceiverCore asks for.

Used by ReceiveSession's stream threads, under the session's lock (an RLock) for every
call into the core; a file's completion (reading its digest, renaming it into place)
runs outside the lock. cleanup() at the session's end removes the temp files of every
unfinished file, and from then on no temp file is created.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from ..engine.sink import FileStore, Sink
from ..errors import EscpError, TransferIOError, escape_name
from ..protocol import messages as m
from ..protocol.flags import SessionFlags
from ..protocol.receiver_core import (
    CheckExisting,
    CompleteFile,
    Completion,
    DiscardFile,
    ReceiverCore,
    RxAction,
    RxFile,
    SendResult,
    SendWant,
)
from ..protocol.wire import NO_DIGEST, STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from ..trace import Tracer
from .metastream import ResultWriter

log = logging.getLogger("escp.server")

SINK_LOCKS = 64  # stripes of the per-file temp-file creation lock


ResultHook = Callable[[RxFile, m.FileResult, str], None]  # a file's result, its cause by name


class ReceivedFiles:
    def __init__(self, core: ReceiverCore, lock: threading.RLock, store: FileStore, writer: ResultWriter,
                 tracer: Tracer, flags: SessionFlags, trace_json: Callable[[], bytes] | None,
                 on_result: ResultHook | None = None, progress: Callable[[], None] | None = None) -> None:
        self.core = core
        self.lock = lock
        self.store = store
        self.writer = writer
        self.tracer = tracer
        self.flags = flags
        self.trace_json = trace_json  # this side's trace, sent before SESSION_DONE (None: not to the peer)
        self.on_result = on_result  # the user's view of each result (a pulling initiator)
        self.progress = progress  # stamps the session's progress while a kept temp file is read (--resume)
        self.sink_locks = [threading.Lock() for _ in range(SINK_LOCKS)]
        self.closing = False  # cleanup() ran: no more temp files
        self.current = b""  # the destination name of the file opened most recently (progress)

    def open_sink(self, f: RxFile) -> Sink | None:
        """The file's temp file, created on first use (one creator per file)."""
        if f.sink is not None:
            return f.sink  # type: ignore[return-value]
        with self.sink_locks[f.entry.fino % SINK_LOCKS]:
            # under self.lock: cleanup() either sees this temp file or it is never made
            with self.lock:
                if f.sink is None and not self.closing:
                    try:
                        f.sink = self.store.open(f.parts, f.entry)
                        self.current = b"/".join(f.parts)
                    except TransferIOError as exc:
                        self.fail_file(f, exc)
        return f.sink  # type: ignore[return-value]

    # --- what the core says to do ------------------------------------------------------------
    def act(self, actions: list[RxAction]) -> None:
        """Carry out the core's actions. Completing a file runs without self.lock (it reads
        and renames); everything else runs under it (an RLock: callers may hold it)."""
        for action in actions:
            if isinstance(action, CompleteFile):
                self.complete(action.file)
                continue
            if isinstance(action, CheckExisting):
                self.check_existing(action.file)
                continue
            with self.lock:
                if isinstance(action, SendResult):
                    self.send_result(action)
                elif isinstance(action, SendWant):
                    self.writer.queue(m.encode_file_want(action.want))
                elif isinstance(action, DiscardFile):
                    self.drop_sink(action.file)
                else:
                    self.finish_session(action.done)

    def send_result(self, action: SendResult) -> None:
        """Queue a file's one FILE_RESULT (with self.lock held)."""
        f, r = action.file, action.result
        name = self.store.display(f.parts, f.entry.name)
        if self.tracer.enabled:
            what = "file done" if r.status == STATUS_OK else "file skipped" if r.status == STATUS_SKIPPED else "file failed"
            self.tracer.instant("meta", what, {"name": os.fsdecode(name), "cause": action.cause})
        if r.status == STATUS_FAILED:  # a server's log; where on_result reports it (a pull), -v's
            log.log(logging.DEBUG if self.on_result is not None else logging.WARNING, "%s error: %s: %s",
                    action.cause, escape_name(name), escape_name(r.message))
        if self.on_result is not None:
            self.on_result(f, r, action.cause)
        self.writer.queue(m.encode_file_result(r))

    def fail_file(self, f: RxFile, err: EscpError) -> None:
        """Fail f and report it now; its temp file goes when its last block is in."""
        with self.lock:
            result = self.core.fail(f, err)
            if result is not None:
                self.send_result(result)

    def check_existing(self, f: RxFile) -> None:
        """Without self.lock (it may read whole files): what the destination holds under a
        gated file's name, and (--resume) what an earlier session left of it, for the core
        to decide on (skip, or want with the kept ranges)."""
        core = self.core
        have = self.store.existing(f.parts, core.block_size, lambda size: core.digest_needed(f, size)) \
            if core.skips else None
        offer: tuple[m.KeptRange, ...] = ()
        if core.resume and not core.matches(f, have):
            kept = self.store.resume_offer(f.parts, f.entry, self.progress)
            if kept is not None:
                f.sink, offer = kept
        with self.lock:
            actions = core.decide(f, have, offer)
        self.act(actions)

    def complete(self, f: RxFile) -> None:
        """Once per file, without self.lock: every block is in; verify and publish, or clean up."""
        with self.lock:
            how = self.core.completion(f)
        result = None
        sink = self.open_sink(f) if how is Completion.VERIFY else None  # no block: an empty file
        if how is Completion.DISCARD and isinstance(f.sink, Sink):
            self.store.keep(f.parts, f.sink, f.entry)  # failed here (a full disk): resumable with --resume
        if how is Completion.REJECT:
            with self.lock:
                result = self.core.verdict(f, NO_DIGEST)
        elif sink is not None:
            digest = sink.digest.digest() if self.flags.checksum else NO_DIGEST
            with self.lock:
                result = self.core.verdict(f, digest)
            if result is None:
                result = self.publish(f, sink, digest)
        self.drop_sink(f)  # unless published: rejected, failed, or its one result is already out
        with self.lock:
            if result is not None:
                self.send_result(result)
            actions = self.core.retire(f)
        self.act(actions)

    def publish(self, f: RxFile, sink: Sink, digest: bytes) -> SendResult | None:
        try:
            self.store.publish(f.parts, sink, f.entry)
        except TransferIOError as exc:
            with self.lock:
                return self.core.published(f, digest, exc)
        with self.lock:
            return self.core.published(f, digest)

    def drop_sink(self, f: RxFile) -> None:
        if isinstance(f.sink, Sink):
            self.store.discard(f.parts, f.sink)


    def finish_session(self, done: m.SessionDone) -> None:
        """With self.lock held, once: directories get their final metadata, then the trace
        (when asked) and SESSION_DONE are queued behind every result."""
        for err in self.store.finish_dirs():
            log.warning("%s", err.one_line())
        if self.flags.trace and self.trace_json is not None:
            for chunk in m.encode_trace_chunks(self.trace_json()):
                self.writer.queue(chunk)
        self.writer.queue(m.encode_session_done(done), last=True)


    def cleanup(self) -> None:
        """Remove the temp files of unfinished files; no stream thread creates one after this."""
        with self.lock:
            self.closing = True
            for f in list(self.core.files.values()):
                if isinstance(f.sink, Sink) and not f.claimed:
                    self.store.keep(f.parts, f.sink, f.entry)  # unfinished: kept for --resume, else removed
                self.drop_sink(f)
            self.store.close()
