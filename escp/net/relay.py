"""The bridge of remote to remote through this host (`-3`): the local escp receives from A
and sends to B in one stream of frames, for when A and B cannot reach each other's ports
(docs/protocol.md §2.10; net/remote.py sets both sessions up).

Two sessions, each an ordinary one: with A the relay is the receiver and the connector (A
is a sending server, as in a pull), with B the sender and the connector (B is a receiving
server, as in a push). Nothing is written here. Every frame A sends passes A's session
rules in a ReceiverCore (with the request rule: only what was asked for reaches B), and
goes on to B through a SenderCore unchanged in substance: the same file numbers, entries,
block offsets and FILE_END digests, so the digest B computes over what it received is
checked against the one A computed over what it read: the copy is verified end to end.
Data frames go from A's stream i to B's stream i, re-sealed with B's keys; small files
pass the metadata stream in order. B's FILE_RESULT for a file is the user's verdict (the
SenderCore's, against A's digest) and becomes A's FILE_RESULT (the ReceiverCore's digest
verdict, so A checks B's digest against its own too). In a gated session (--skip-existing)
B decides: A's FILE_SUMs go on to B, B's FILE_WANT and SKIPPED results go back to A (the
relay's ReceiverCore never looks at a destination: it has none). The relay is done when A
has its SESSION_DONE and B has sent its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..engine.compress import BlockCompressor, BlockDecompressor
from ..errors import EscpError, ProtocolError
from ..paths import split_peer_name
from ..protocol import messages as m
from ..protocol.bootstrap import SessionInit
from ..protocol.data import DATA_HEADER_LEN, decode_data_header
from ..protocol.receiver_core import CompleteFile, FinishSession, ReceiverCore, RxAction, SendResult, SendWant
from ..protocol.request import RequestRule
from ..protocol.roles import DataRole
from ..protocol.sender_core import (
    FileVerdict,
    InlineBlock,
    Released,
    SenderCore,
    SessionFinished,
    encode_batch,
)
from ..protocol.wire import (
    LEN_PREFIX,
    META_MAX_PLAINTEXT,
    META_STREAM,
    STATUS_OK,
    STATUS_SKIPPED,
    T_DATA,
    T_EOS,
    TAG_LEN,
    cause_name,
    max_frame_len,
)
from ..results import ProgressSnapshot
from .conn import StreamConn
from .control import SessionControl, incoming, keepalive_interval
from .metastream import ResultWriter, inline_frame
from .receive import accept_data, receiving_snapshot
from .streams import worker_name

ABORT_SEND_TIMEOUT = 1.0


class Facing:
    """The relay as the StreamUser of one of its two sessions (the data role it plays there)."""

    def __init__(self, relay: Relay, role: DataRole) -> None:
        self.relay = relay
        self.role = role
        self.ctl = relay.ctl

    def claim_stream(self, index: int) -> bool:
        with self.relay.lock:
            core = self.relay.rcore if self.role is DataRole.RECEIVER else self.relay.score
            return core.claim_stream(index)

    def stream_timeout(self, index: int) -> float | None:
        # as for a ReceiveSession: A's data streams may stay silent (OP-13); everything else
        # carries our frames or keepalives
        return None if self.role is DataRole.RECEIVER and index != META_STREAM else self.ctl.idle_timeout

    def adopt(self, conn: StreamConn) -> None:
        self.relay.adopt(self.role, conn)

    def start_stream(self, conn: StreamConn) -> None:
        self.relay.start_stream(self.role, conn)


class Relay:
    """Both sessions of a `-3` copy, joined: a ReceiverCore facing A, a SenderCore facing B."""

    def __init__(self, rx_init: SessionInit, tx_init: SessionInit, request: RequestRule, idle: float,
                 peer_idle_b: float, on_verdict: Callable[[FileVerdict], None]) -> None:
        self.ctl = SessionControl(idle)
        self.lock = threading.RLock()
        self.announced = threading.Condition(self.lock)
        self.rcore = ReceiverCore(rx_init, request)  # facing A
        self.score = SenderCore(tx_init)  # facing B
        self.block_size = tx_init.block_size
        flags = tx_init.session_flags
        self.compressor = BlockCompressor(tx_init.compress_level) if flags.compress else None
        self.decompressor = BlockDecompressor(self.block_size)
        self.on_verdict = on_verdict
        self.writer = ResultWriter(self.ctl, keepalive_interval(idle, rx_init.idle_timeout_ms / 1000), self._a_done)
        self.interval_b = keepalive_interval(idle, peer_idle_b)
        self.b_send = threading.Lock()  # B's metadata stream: a batch is taken and sent in one go
        self.a_meta: StreamConn | None = None
        self.b_conns: dict[int, StreamConn] = {}
        self.a_finished = self.b_finished = False
        self.b_trace = b""
        self.kept: dict[int, int] = {}  # fino -> bytes A kept of B's offer (--resume), for the verdict
        self.facing_a = Facing(self, DataRole.RECEIVER)
        self.facing_b = Facing(self, DataRole.SENDER)
        self.ctl.on_abort(self.send_aborts)

    @property
    def bytes_sent(self) -> int:
        return self.score.bytes_sent

    def snapshot(self) -> ProgressSnapshot:
        return receiving_snapshot(self.rcore, self.score.bytes_sent)

    def adopt(self, role: DataRole, conn: StreamConn) -> None:
        if role is DataRole.SENDER:
            self.b_conns[conn.index] = conn
        elif conn.index == META_STREAM:
            self.a_meta = conn

    def start_stream(self, role: DataRole, conn: StreamConn) -> None:
        if role is DataRole.SENDER:
            if conn.index == META_STREAM:
                self.ctl.guard(lambda: self.b_meta_loop(conn), "relay-b-meta")
                self.ctl.guard(lambda: self.b_keepalives(conn), "relay-b-keepalive")
        elif conn.index == META_STREAM:
            self.writer.attach(conn)
            self.ctl.guard(lambda: self.a_meta_loop(conn), "relay-a-meta")
        else:
            self.ctl.guard(lambda: self.a_data_loop(conn), worker_name("relay", conn.index))

    # --- from A ---------------------------------------------------------------------------------
    def a_data_loop(self, conn: StreamConn) -> None:
        """A's stream i onto B's stream i: each DATA frame checked, re-sealed, sent on."""
        index, out = conn.index, self.b_conns[conn.index]
        plain = memoryview(bytearray(max_frame_len(self.block_size)))
        frame = memoryview(bytearray(LEN_PREFIX.size + max_frame_len(self.block_size) + TAG_LEN))
        while True:
            k = conn.recv_frame_into(plain)
            if k is None:
                if not self.ctl.aborted.is_set():
                    with self.lock:
                        self.rcore.stream_closed(index)
                return
            self.ctl.progress()
            self.rcore.check_data_stream_frame(index, plain[0])
            if plain[0] == T_EOS:
                eos = m.decode_message(bytes(plain[:k]))
                assert isinstance(eos, m.Eos)
                with self.lock:
                    actions = self.rcore.receive_eos(index, eos.frames, eos.nbytes)
                    forwarded = self.score.end_stream(index)
                out.send_plain(m.encode_eos(forwarded))
                out.shutdown_write()
                self.act(actions)
                return
            header = decode_data_header(plain, k)
            with self.lock:
                f = accept_data(self.rcore, self.announced, self.ctl, index, header, k - DATA_HEADER_LEN)
            out.sendall(frame[: out.sealer.seal_into(plain[:k], frame)])
            with self.lock:
                self.score.data_sent(index, header.raw_len)
                actions = self.rcore.block_stored(f, header.raw_len)
            self.act(actions)

    def a_meta_loop(self, conn: StreamConn) -> None:
        plain = memoryview(bytearray(max_frame_len(self.block_size)))
        self.writer.reader = threading.get_ident()
        for k in incoming(conn, plain, self.ctl, lambda: self.closed(self.rcore), self.writer.flush):
            if plain[0] == T_DATA:
                self.forward_inline(plain, k)
                continue
            if k > META_MAX_PLAINTEXT:
                raise ProtocolError(f"metadata frame of {k} bytes exceeds {META_MAX_PLAINTEXT}")
            msg = m.decode_message(bytes(plain[:k]))
            if isinstance(msg, list):
                self.forward_list(msg)
                continue
            with self.lock:
                actions = self.rcore.receive(msg)
                if isinstance(msg, m.FileEnd):
                    self.score.file_end(msg)  # A's digest goes on to B unchanged
                elif isinstance(msg, m.FileSum):
                    self.score.content_sum(msg)  # B decides on it
                elif isinstance(msg, m.SessionEnd):
                    self.announced.notify_all()
            if isinstance(msg, m.FileEnd | m.FileSum | m.SessionEnd):
                self.send_b(end=isinstance(msg, m.SessionEnd))
            self.act(actions)

    def forward_list(self, entries: list[m.FileEntry]) -> None:
        """A's entries, checked as a whole, announced to B under the same numbers."""
        items = [(e, split_peer_name(e.name)) for e in entries]
        with self.lock:
            self.rcore.check_file_list(items)
            for e in entries:
                self.score.announce(e, e.name)
        self.send_b()
        with self.lock:
            actions = self.rcore.add_file_list(items, [None] * len(items))
            self.announced.notify_all()
        self.act(actions)

    def forward_inline(self, plain: memoryview, k: int) -> None:
        """A small file's one block, from A's metadata stream to B's, after its entry."""
        header = decode_data_header(plain, k)
        with self.lock:
            f = accept_data(self.rcore, self.announced, self.ctl, META_STREAM, header, k - DATA_HEADER_LEN)
        data = plain[DATA_HEADER_LEN:k]
        if header.compressed:
            raw = memoryview(bytearray(header.raw_len))
            self.decompressor.decompress_into(data, raw, header.raw_len)
            data = raw
        with self.lock:
            self.score.inline(InlineBlock(header.fino, bytes(data)))
            actions = self.rcore.block_stored(f, header.raw_len)
        self.send_b()
        self.act(actions)

    # --- to B ---------------------------------------------------------------------------------------
    def send_b(self, end: bool = False) -> None:
        """What the SenderCore queued for B, in order; then SESSION_END when `end`."""
        conn = self.b_conns[META_STREAM]
        with self.b_send:
            with self.lock:
                batch = self.score.take_batch()
                session_end = self.score.end_session() if end else None
            if batch:
                conn.send_many(encode_batch(batch, lambda block: inline_frame(block, self.compressor)))
            if session_end is not None:
                conn.send_plain(m.encode_session_end(session_end))

    def b_keepalives(self, conn: StreamConn) -> None:
        while not self.ctl.done.wait(self.interval_b) and not self.ctl.aborted.is_set():
            with self.b_send:
                with self.lock:
                    self.score.keepalive()
                    batch = self.score.take_batch()
                conn.send_many(encode_batch(batch, lambda block: inline_frame(block, self.compressor)))

    # --- from B -----------------------------------------------------------------------------------
    def b_meta_loop(self, conn: StreamConn) -> None:
        plain = memoryview(bytearray(max_frame_len(self.block_size)))
        for k in incoming(conn, plain, self.ctl, lambda: self.closed(self.score)):
            msg = m.decode_message(bytes(plain[:k]))
            actions: list[RxAction] = []
            with self.lock:
                outcome = self.score.receive(msg)
                if isinstance(msg, m.FileResult):
                    actions = self.answer_a(msg)
                elif isinstance(outcome, Released):  # B wants it: so does the relay, from A
                    f = self.rcore.files.get(outcome.file.entry.fino)
                    actions = self.rcore.want(f, outcome.offer) if f is not None else []
            if isinstance(outcome, FileVerdict):
                self.on_verdict(outcome)
            self.act(actions)
            if isinstance(outcome, SessionFinished):
                self.b_trace = outcome.receiver_trace
                self.b_finished = True
                self._check_done()
                return

    def closed(self, core: ReceiverCore | SenderCore) -> None:
        """A metadata stream's EOF, judged by the core of its session."""
        with self.lock:
            if isinstance(core, ReceiverCore):
                core.stream_closed(META_STREAM)
            else:
                core.stream_closed()

    def answer_a(self, r: m.FileResult) -> list[RxAction]:
        """With self.lock held: B's result for a file becomes A's (directories were answered
        when they were announced; a file already given up on gets none)."""
        f = self.rcore.files.get(r.fino)
        if f is None:
            return []
        if r.status == STATUS_SKIPPED:
            return self.rcore.skip(f)
        if r.status == STATUS_OK:
            self.kept[r.fino] = self.rcore.kept_bytes(f)
            result = self.rcore.verdict(f, r.digest) or self.rcore.published(f, r.digest)
        else:
            err = EscpError(r.message)
            err.cause = cause_name(r.cause)
            result = self.rcore.fail(f, err)
        actions: list[RxAction] = [result] if result is not None else []
        return actions + (self.rcore.retire(f) if f.claimed else [])

    # --- A's side of the session: results, completion, the end -----------------------------------
    def act(self, actions: list[RxAction]) -> None:
        for action in actions:
            if isinstance(action, SendResult):
                self.writer.queue(m.encode_file_result(action.result))
            elif isinstance(action, SendWant):
                self.writer.queue(m.encode_file_want(action.want))
            elif isinstance(action, CompleteFile):
                with self.lock:  # every block went on to B: the file ends when B's result is in
                    more = self.rcore.retire(action.file) if action.file.finished else []
                self.act(more)
            elif isinstance(action, FinishSession):
                self.writer.queue(m.encode_session_done(action.done), last=True)

    def _a_done(self) -> None:
        self.a_finished = True
        self._check_done()

    def _check_done(self) -> None:
        with self.lock:
            if self.a_finished and self.b_finished:
                self.ctl.finish()

    def send_aborts(self, err: EscpError) -> None:
        for conn in (self.a_meta, self.b_conns.get(META_STREAM)):
            if conn is not None:
                conn.send_abort(err, ABORT_SEND_TIMEOUT)
