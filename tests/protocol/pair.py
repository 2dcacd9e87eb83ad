"""CorePair: a SenderCore against a ReceiverCore in memory (h11's ConnectionPair habit).

No sockets, threads, clock or files: frames travel as encoded plaintext between the two
cores (so the codecs run too), the receiver's "disk" is a dict, and its digests are the
real ones (engine/checksum.py is pure). Every step is explicit, so a test can reorder,
drop, forge or truncate anything between the two cores, and see what each core says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from escp.engine.checksum import FileDigest, block_digest, range_digest
from escp.paths import split_peer_name
from escp.protocol import messages as m
from escp.protocol.bootstrap import SessionInit
from escp.protocol.data import DATA_HEADER_LEN, decode_data_header, encode_data
from escp.protocol.flags import SessionFlags
from escp.protocol.receiver_core import (
    CheckExisting,
    CompleteFile,
    Completion,
    DiscardFile,
    Existing,
    FinishSession,
    ReceiverCore,
    RxAction,
    RxFile,
    SendResult,
    SendWant,
)
from escp.protocol.sender_core import (
    FileVerdict,
    InlineBlock,
    Released,
    SenderCore,
    SessionFinished,
    encode_batch,
)
from escp.protocol.wire import KIND_DIR, KIND_FILE, META_STREAM, MIN_BLOCK, NO_DIGEST, STATUS_OK, T_DATA

BS = MIN_BLOCK
NO_FLAGS = SessionFlags()


def session_init(streams: int = 2, flags: SessionFlags = NO_FLAGS, top_level_count: int = 1) -> SessionInit:
    return SessionInit(session_id=7, key=bytes(16), flags=flags.to_bits(), block_size=BS, streams=streams,
                       port_start=1, port_range=1, dest_path=b"/dest", top_level_count=top_level_count)


@dataclass
class StoredFile:
    """The receiver's in-memory temp file."""

    blocks: dict[int, bytes] = field(default_factory=dict)
    digest: FileDigest | None = None


class CorePair:
    def __init__(self, streams: int = 2, flags: SessionFlags = NO_FLAGS, top_level_count: int = 1) -> None:
        self.init = session_init(streams, flags, top_level_count)
        self.tx = SenderCore(self.init)
        self.rx = ReceiverCore(self.init)
        for index in range(streams + 1):
            assert self.rx.claim_stream(index)  # the listener's ACCEPT goes out ...
            assert self.tx.claim_stream(index)  # ... and the connector reads it
        self.sources: dict[int, bytes] = {}  # fino -> content the sender reads
        self.digests: dict[int, FileDigest] = {}  # the sender's running file digests
        self.published: dict[bytes, bytes] = {}  # the receiver's destination: name -> content
        self.discarded: set[int] = set()
        self.to_sender: list[bytes] = []  # receiver -> sender frames, not yet delivered
        self.verdicts: dict[int, FileVerdict] = {}
        self.finished: SessionFinished | None = None
        self.existing: dict[bytes, Existing] = {}  # what the receiver's destination holds (gated sessions)
        self.released: list[int] = []  # files the sender may now send (FILE_WANT)
        self.offers: dict[int, tuple[m.KeptRange, ...]] = {}  # FILE_WANT's kept ranges, as the sender got them
        self.kept: dict[bytes, dict[int, bytes]] = {}  # the receiver's kept temp files: name -> offset -> block

    # --- the sender's side --------------------------------------------------------------------
    def announce(self, name: bytes, content: bytes = b"", kind: int = KIND_FILE, mtime_ns: int = 0) -> int:
        fino = self.tx.entries
        size = 0 if kind == KIND_DIR else len(content)
        self.tx.announce(m.FileEntry(fino, name, kind, 0o644, size, mtime_ns=mtime_ns), b"/src/" + name)
        if kind == KIND_FILE:
            self.sources[fino] = content
            self.digests[fino] = FileDigest(fino, size)
        return fino

    def inline(self, fino: int) -> None:
        """A small file's one block, queued on the metadata stream after its entry."""
        data = self.sources[fino]
        self.digests[fino].add(0, len(data), block_digest(data, 0))
        self.tx.inline(InlineBlock(fino, data))

    def end_file(self, fino: int, *, status: int = STATUS_OK, blocks: int | None = None, message: str = "",
                 digest: bytes | None = None) -> None:
        nblocks = -(-len(self.sources[fino]) // BS) if blocks is None else blocks
        if digest is None:
            digest = self.digests[fino].digest() if status == STATUS_OK else NO_DIGEST
        self.tx.file_end(m.FileEnd(fino, status, nblocks, digest, message))

    def flush(self) -> None:
        """The sender's metadata thread sends its queue; the receiver reads it."""
        frames = encode_batch(self.tx.take_batch(),
                              lambda b: encode_data(b.fino, 0, len(b.data), b.data, False))
        for plain in frames:
            self.receive_meta(plain)

    def send_block(self, stream: int, fino: int, offset: int, data: bytes | None = None) -> None:
        """A stream worker reads, digests and sends one block; the receiver handles it."""
        block = self.sources[fino][offset : offset + BS] if data is None else data
        self.digests[fino].add(offset, len(block), block_digest(self.sources[fino][offset : offset + BS], offset))
        self.tx.data_sent(stream, len(block))
        self.receive_data(stream, encode_data(fino, offset, len(block), block, False))

    def send_file(self, fino: int, streams: list[int]) -> None:
        """Every block of a big file, round robin over `streams`, then its FILE_END."""
        for i, offset in enumerate(range(0, len(self.sources[fino]), BS)):
            self.send_block(streams[i % len(streams)], fino, offset)
        self.end_file(fino)

    def end_stream(self, stream: int, eos: m.Eos | None = None) -> None:
        sent = self.tx.end_stream(stream)
        plain = m.encode_eos(sent if eos is None else eos)
        msg = m.decode_message(plain)
        assert isinstance(msg, m.Eos)
        self.act(self.rx.receive_eos(stream, msg.frames, msg.nbytes))

    def end_session(self) -> None:
        assert self.tx.may_end_session(walk_done=True)
        self.receive_meta(m.encode_session_end(self.tx.end_session()))

    def deliver(self) -> None:
        """The receiver's metadata writer sends its queue; the sender reads it."""
        frames, self.to_sender = self.to_sender, []
        for plain in frames:
            outcome = self.tx.receive(m.decode_message(plain))
            if isinstance(outcome, FileVerdict):
                self.verdicts[outcome.file.entry.fino] = outcome
            elif isinstance(outcome, Released):
                self.released.append(outcome.file.entry.fino)
                self.offers[outcome.file.entry.fino] = outcome.offer
            elif isinstance(outcome, SessionFinished):
                self.finished = outcome

    # --- the receiver's side ----------------------------------------------------------------------
    def receive_meta(self, plain: bytes) -> None:
        if plain[0] == T_DATA:
            self.receive_data(META_STREAM, plain)
            return
        msg = m.decode_message(plain)
        if isinstance(msg, list):
            items = [(e, split_peer_name(e.name)) for e in msg]
            self.rx.check_file_list(items)
            self.act(self.rx.add_file_list(items, [None] * len(items)))
        else:
            self.act(self.rx.receive(msg))

    def receive_data(self, stream: int, plain: bytes) -> RxFile | None:
        hdr = decode_data_header(plain, len(plain))
        f = self.rx.receive_data(stream, hdr, len(plain) - DATA_HEADER_LEN)
        if f is None:
            return None  # not announced yet: an adapter would wait and call again
        data = plain[DATA_HEADER_LEN:]
        if not f.failed:
            store = f.sink if isinstance(f.sink, StoredFile) else StoredFile(digest=FileDigest(hdr.fino, f.entry.size))
            f.sink = store
            store.blocks[hdr.offset] = data
            assert store.digest is not None
            store.digest.add(hdr.offset, len(data), block_digest(data, hdr.offset))
        self.act(self.rx.block_stored(f, hdr.raw_len))
        return f

    def take_kept(self, f: RxFile, blocks: dict[int, bytes]) -> tuple[m.KeptRange, ...]:
        """A kept temp file of f (--resume): its blocks become f's sink, one range each."""
        if not blocks:
            return ()
        store = StoredFile(dict(blocks), FileDigest(f.entry.fino, f.entry.size))
        offer = []
        for offset, data in sorted(blocks.items()):
            d = block_digest(data, offset)
            assert store.digest is not None
            store.digest.add(offset, len(data), d)
            offer.append(m.KeptRange(offset, len(data), range_digest([(offset, len(data), d)])))
        f.sink = store
        return tuple(offer)

    def act(self, actions: list[RxAction]) -> None:
        for action in actions:
            if isinstance(action, SendResult):
                self.to_sender.append(m.encode_file_result(action.result))
            elif isinstance(action, DiscardFile):
                self.discarded.add(action.file.entry.fino)
            elif isinstance(action, FinishSession):
                self.to_sender.append(m.encode_session_done(action.done))
            elif isinstance(action, SendWant):
                self.to_sender.append(m.encode_file_want(action.want))
            elif isinstance(action, CheckExisting):
                f = action.file
                name = b"/".join(f.parts)
                self.act(self.rx.decide(f, self.existing.get(name), self.take_kept(f, self.kept.get(name, {}))))
            else:
                assert isinstance(action, CompleteFile)
                self.complete(action.file)

    def complete(self, f: RxFile) -> None:
        how = self.rx.completion(f)
        result: SendResult | None = None
        if how is Completion.REJECT:
            result = self.rx.verdict(f, NO_DIGEST)
            self.discarded.add(f.entry.fino)
        elif how is Completion.VERIFY:
            store = f.sink if isinstance(f.sink, StoredFile) else StoredFile(digest=FileDigest(f.entry.fino, 0))
            assert store.digest is not None
            digest = store.digest.digest() if self.rx.checksums else NO_DIGEST
            result = self.rx.verdict(f, digest)
            if result is None:
                self.published[b"/".join(f.parts)] = b"".join(store.blocks[o] for o in sorted(store.blocks))
                result = self.rx.published(f, digest)
            else:
                self.discarded.add(f.entry.fino)
        else:
            self.discarded.add(f.entry.fino)
        if result is not None:
            self.to_sender.append(m.encode_file_result(result.result))
        self.act(self.rx.retire(f))

    # --- a whole session ----------------------------------------------------------------------------
    def transfer(self, files: dict[bytes, bytes], directories: tuple[bytes, ...] = ()) -> None:
        """A well-behaved session: directories, then small files inline, big files over the
        data streams; then SESSION_END, every EOS, and the receiver's answers."""
        for d in directories:
            self.announce(d, kind=KIND_DIR)
        streams = list(range(1, self.init.streams + 1))
        for name, content in files.items():
            fino = self.announce(name, content)
            if len(content) <= BS // 4:
                if content:
                    self.inline(fino)
                self.end_file(fino)
                continue
            self.flush()
            self.send_file(fino, streams)
        self.flush()
        self.end_session()
        for stream in streams:
            self.end_stream(stream)
        self.deliver()

