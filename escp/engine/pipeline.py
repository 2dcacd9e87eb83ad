"""The per-block stages of one stream, composed over buffers allocated once per stream.

SendPipeline:    read -> checksum -> compress -> encrypt    (the worker then sends the frame)
ReceivePipeline: decompress -> verify -> write             (after the stream decrypted it)

Each stage is its own module (reader, checksum, compress, protocol/crypto, sink); this one
runs them for one stream worker, in place: the block is read with preadv into the
page-aligned frame buffer right behind its DATA header, compressed into a second buffer
only when that shrinks it, and sealed with encrypt_into into the frame buffer; on the
receiving side the decrypted frame is decompressed into one buffer and written from
there. No Python copy of a block. Every stage records its span in the tracer under the
worker's name, with the stage names escp.trace documents (the verdict reads them).
"""

from __future__ import annotations

from ..protocol.crypto import FrameSealer
from ..protocol.data import DATA_HEADER_LEN, DataHeader, pack_data_header
from ..protocol.wire import LEN_PREFIX, NO_DIGEST, TAG_LEN
from ..trace import Tracer
from .checksum import block_digest
from .compress import BlockCompressor, BlockDecompressor
from .directio import FrameBuffer
from .reader import read_block
from .scheduler import BlockJob
from .sink import FileStore, Sink
from .writer import io_error


class SendPipeline:
    """read -> checksum -> compress -> encrypt for one sender stream worker; not thread-safe."""

    def __init__(self, block_size: int, tracer: Tracer, worker: str, *, checksum: bool,
                 compress_level: int | None, sparse: bool, dummy: bool) -> None:
        self.tracer = tracer
        self.worker = worker
        self.block_size = block_size
        self.checksum = checksum
        self.dummy = dummy
        hdr = DATA_HEADER_LEN
        self._buf = FrameBuffer(hdr, block_size)  # data page-aligned for O_DIRECT
        self._zplain = memoryview(bytearray(hdr + block_size)) if compress_level else None
        self._frame = memoryview(bytearray(LEN_PREFIX.size + hdr + block_size + TAG_LEN))
        self._compressor = BlockCompressor(compress_level) if compress_level else None
        self._zeros = bytes(block_size) if sparse else None

    def encode(self, job: BlockJob, sealer: FrameSealer) -> tuple[memoryview, bytes] | None:
        """One block as a sealed DATA frame, with its block digest; None for an all-zero
        block that --sparse skips. TransferIOError when the source cannot be read."""
        tr, worker, f = self.tracer, self.worker, job.file
        data = self._buf.data[: job.length]
        if not self.dummy:
            t0 = tr.now()
            if not read_block(f.fd, data, job.offset, job.length, f.path, -1 if f.direct_off else f.dfd):
                f.direct_off = True
            tr.span(worker, "read", t0, job.length)
        zeros = self._zeros
        if zeros is not None and data.tobytes() == (zeros if job.length == self.block_size else bytes(job.length)):
            return None
        digest = NO_DIGEST
        if self.checksum:
            t0 = tr.now()
            digest = block_digest(data, job.offset)
            tr.span(worker, "checksum", t0, job.length)
        out, compressed, payload_len = self._buf.plain, False, job.length
        if self._compressor is not None and self._zplain is not None:
            t0 = tr.now()
            packed = self._compressor.compress(data)
            tr.span(worker, "compress", t0, job.length)
            if packed is not None:
                self._zplain[DATA_HEADER_LEN : DATA_HEADER_LEN + len(packed)] = packed  # data keeps the raw block
                out, compressed, payload_len = self._zplain, True, len(packed)
        pack_data_header(out, f.entry.fino, job.offset, job.length, compressed)
        t0 = tr.now()
        n = sealer.seal_into(out[: DATA_HEADER_LEN + payload_len], self._frame)
        tr.span(worker, "encrypt", t0, n)
        return self._frame[:n], digest


class ReceivePipeline:
    """decompress -> verify -> write for one receiver stream; not thread-safe."""

    def __init__(self, block_size: int, tracer: Tracer, worker: str, store: FileStore, *, checksum: bool) -> None:
        self.tracer = tracer
        self.worker = worker
        self.store = store
        self.checksum = checksum
        self._unz = memoryview(bytearray(block_size))
        self._decomp = BlockDecompressor(block_size)

    def payload(self, plain: memoryview, length: int, hdr: DataHeader) -> memoryview:
        """The raw block of a DATA plaintext (decompressed into this pipeline's buffer)."""
        if not hdr.compressed:
            return plain[DATA_HEADER_LEN:length]
        t0 = self.tracer.now()
        self._decomp.decompress_into(plain[DATA_HEADER_LEN:length], self._unz, hdr.raw_len)
        self.tracer.span(self.worker, "decompress", t0, hdr.raw_len)
        return self._unz[: hdr.raw_len]

    def write(self, sink: Sink, data: memoryview, offset: int) -> None:
        """Digest the block into the file's digest and write it at its offset;
        TransferIOError when the write fails."""
        tr, worker, n = self.tracer, self.worker, len(data)
        digest = NO_DIGEST
        if self.checksum:
            t0 = tr.now()
            digest = block_digest(data, offset)
            tr.span(worker, "verify", t0, n)
        t0 = tr.now()
        try:
            self.store.write(sink, data, offset)
            sink.digest.add(offset, n, digest)
        except OSError as exc:
            raise io_error(exc, "write failed", sink.display) from None
        finally:
            tr.span(worker, "write", t0, n)
