"""Key schedule and frame sealing for escp streams (pure; no sockets or clocks).

The 16-byte session key travels over the ssh channel only. From it, HKDF-SHA256
derives a handshake key and, per (stream index, direction, connection challenge, key
epoch), an AES-128-GCM key and a 4-byte nonce salt. The nonce is salt || counter
(64-bit big-endian); the counter is implicit: it starts at 0 on each direction of each
stream and increases by exactly one per frame, so a replayed, dropped, reordered or
moved frame fails authentication. A key is retired (next epoch) before its ciphertext
would exceed `rekey_bytes`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import IntegrityError, ProtocolError
from .wire import LEN_PREFIX, MAX_COUNTER, NONCE_LEN, TAG_LEN

DIR_SENDER_TO_RECEIVER = 0
DIR_RECEIVER_TO_SENDER = 1
_LABEL = b"escp v1 "


def hkdf(secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def handshake_key(session_key: bytes, session_id: int) -> bytes:
    return hkdf(session_key, struct.pack(">Q", session_id), _LABEL + b"handshake", 32)


def hello_proof(hs_key: bytes, session_id: int, challenge: bytes, stream_index: int) -> bytes:
    """What a connecting sender must present: binds session, receiver challenge and stream."""
    msg = _LABEL + b"hello" + struct.pack(">QH", session_id, stream_index) + challenge
    return hmac.new(hs_key, msg, hashlib.sha256).digest()


def stream_key(
    session_key: bytes, session_id: int, stream_index: int, direction: int, challenge: bytes, epoch: int
) -> tuple[bytes, bytes]:
    """(AES-128 key, 4-byte nonce salt) for one direction of one stream in one epoch."""
    info = _LABEL + b"stream" + struct.pack(">HBQ", stream_index, direction, epoch) + challenge
    okm = hkdf(session_key, struct.pack(">Q", session_id), info, 20)
    return okm[:16], okm[16:]


class _KeySchedule:
    """Counter, epoch and key of one direction of one stream."""

    def __init__(
        self,
        session_key: bytes,
        session_id: int,
        stream_index: int,
        direction: int,
        challenge: bytes,
        rekey_bytes: int,
    ) -> None:
        self._args = (session_key, session_id, stream_index, direction, challenge)
        self.rekey_bytes = rekey_bytes
        self.counter = 0
        self.epoch = 0
        self.epoch_bytes = 0
        self._nonce = bytearray(NONCE_LEN)
        self._set_epoch(0)

    def _set_epoch(self, epoch: int) -> None:
        key, salt = stream_key(*self._args, epoch)
        self.epoch = epoch
        self.epoch_bytes = 0
        self.aead = AESGCM(key)
        self._nonce[:4] = salt

    def next_nonce(self, frame_len: int) -> bytes:
        """Account for one frame of frame_len ciphertext bytes; return its nonce."""
        if self.counter > MAX_COUNTER:
            raise IntegrityError("frame counter exhausted on a stream")
        if self.epoch_bytes + frame_len > self.rekey_bytes and self.epoch_bytes > 0:
            self._set_epoch(self.epoch + 1)
        self.epoch_bytes += frame_len
        struct.pack_into(">Q", self._nonce, 4, self.counter)
        self.counter += 1
        return bytes(self._nonce)


class FrameSealer(_KeySchedule):
    """Seals plaintext frames for one direction of one stream."""

    def seal_into(self, plaintext: memoryview, out: memoryview) -> int:
        """Write [u32 L][ciphertext][tag] of `plaintext` into out; return bytes written."""
        n = len(plaintext) + TAG_LEN
        LEN_PREFIX.pack_into(out, 0, n)
        nonce = self.next_nonce(n)
        self.aead.encrypt_into(nonce, plaintext, out[:4], out[4 : 4 + n])
        return 4 + n

    def seal(self, plaintext: bytes) -> bytes:
        out = bytearray(4 + len(plaintext) + TAG_LEN)
        self.seal_into(memoryview(plaintext), memoryview(out))
        return bytes(out)


class FrameOpener(_KeySchedule):
    """Opens frames of one direction of one stream; any failure is an IntegrityError."""

    def __init__(self, *args: object, max_len: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.max_len = max_len

    def check_len(self, prefix: bytes | bytearray | memoryview) -> int:
        (n,) = LEN_PREFIX.unpack_from(prefix)
        if n < TAG_LEN + 1 or n > self.max_len:
            raise ProtocolError(f"frame length {n} out of bounds (max {self.max_len})")
        return n

    def open_into(self, prefix: bytes | memoryview, body: memoryview, out: memoryview) -> int:
        """Authenticate and decrypt body (ciphertext+tag) into out; return plaintext length."""
        n = len(body)
        nonce = self.next_nonce(n)
        try:
            self.aead.decrypt_into(nonce, body, prefix, out[: n - TAG_LEN])
        except InvalidTag:
            raise IntegrityError(
                f"frame {self.counter - 1} failed authentication (corrupted, replayed, reordered or forged)"
            ) from None
        return n - TAG_LEN

    def open(self, prefix: bytes, body: bytes) -> bytes:
        out = bytearray(len(body) - TAG_LEN)
        self.open_into(prefix, memoryview(body), memoryview(out))
        return bytes(out)
