"""The stream handshake, sans-IO (docs/protocol.md §3), and each stream's keys (§4.3).

Two independent parameters, never tied to each other:
* the link role says who speaks first: the LISTENER sends every new connection a random
  challenge, checks the CONNECTOR's HELLO (stream index and an HMAC proof bound to the
  session, the challenge and the index), claims the index once, and sends ACCEPT as its
  first encrypted frame, which proves the key back;
* the data role picks the direction of each side's keys: the sender seals
  sender->receiver frames and opens receiver->sender ones, whichever side listens.
Randomness (the challenge) and the sockets are the caller's.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from ..errors import AuthError
from .bootstrap import SessionInit
from .crypto import (
    DIR_RECEIVER_TO_SENDER,
    DIR_SENDER_TO_RECEIVER,
    FrameOpener,
    FrameSealer,
    handshake_key,
    hello_proof,
)
from .messages import Accept, Message
from .roles import DataRole
from .wire import HELLO, HELLO_MAGIC, PROTOCOL_VERSION, max_frame_len


@dataclass(frozen=True)
class StreamSecrets:
    """What every stream of one session derives its keys from."""

    session_key: bytes
    session_id: int
    rekey_bytes: int
    block_size: int
    streams: int  # data streams: the session has streams 0..streams

    def __repr__(self) -> str:  # never print the key
        return f"StreamSecrets(session_id={self.session_id:016x})"

    @classmethod
    def of(cls, init: SessionInit) -> StreamSecrets:
        return cls(init.key, init.session_id, init.rekey_bytes, init.block_size, init.streams)

    def proof(self, challenge: bytes, index: int) -> bytes:
        return hello_proof(handshake_key(self.session_key, self.session_id), self.session_id, challenge, index)


def hello(secrets: StreamSecrets, challenge: bytes, index: int) -> bytes:
    """The connector's answer to a challenge: HELLO for stream `index`."""
    return HELLO.pack(HELLO_MAGIC, PROTOCOL_VERSION, index, secrets.proof(challenge, index))


def check_hello(secrets: StreamSecrets, challenge: bytes, data: bytes) -> int:
    """The listener's check of a HELLO against its challenge: the stream index it claims.
    AuthError for anything but a valid proof (the index is not claimed here)."""
    magic, version, index, proof = HELLO.unpack(data)
    if magic != HELLO_MAGIC or version != PROTOCOL_VERSION:
        raise AuthError("not an escp stream (bad magic or version)")
    if not hmac.compare_digest(proof, secrets.proof(challenge, index)):
        raise AuthError("handshake proof does not match the session key")
    return int(index)


def check_accept(msg: Message | None, index: int, listener: DataRole) -> None:
    """The connector's check of the listener's first frame (`listener` names its data role)."""
    if not isinstance(msg, Accept) or msg.stream_index != index:
        raise AuthError(f"{listener.value} did not accept stream {index}")


def stream_ciphers(secrets: StreamSecrets, index: int, challenge: bytes,
                   role: DataRole) -> tuple[FrameSealer, FrameOpener]:
    """The sealer and opener of one stream for the side whose data role is `role`."""
    send_dir, recv_dir = DIR_SENDER_TO_RECEIVER, DIR_RECEIVER_TO_SENDER
    if role is DataRole.RECEIVER:
        send_dir, recv_dir = recv_dir, send_dir
    args = (secrets.session_key, secrets.session_id, index)
    sealer = FrameSealer(*args, send_dir, challenge, secrets.rekey_bytes)
    opener = FrameOpener(*args, recv_dir, challenge, secrets.rekey_bytes, max_len=max_frame_len(secrets.block_size))
    return sealer, opener
