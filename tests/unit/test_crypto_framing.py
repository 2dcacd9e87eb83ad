"""Frame sealing/opening, the sans-IO decoder, key derivation and nonce uniqueness."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escp.errors import IntegrityError, ProtocolError
from escp.protocol.crypto import (
    DIR_RECEIVER_TO_SENDER,
    DIR_SENDER_TO_RECEIVER,
    FrameOpener,
    FrameSealer,
    handshake_key,
    hello_proof,
    stream_key,
)
from escp.protocol.framing import FrameDecoder
from escp.protocol.wire import MIN_REKEY_BYTES

KEY = bytes(range(16))
SID = 0x1122334455667788
CH = b"c" * 32


def pair(index: int = 1, rekey: int = 1 << 36, challenge: bytes = CH) -> tuple[FrameSealer, FrameOpener]:
    s = FrameSealer(KEY, SID, index, DIR_SENDER_TO_RECEIVER, challenge, rekey)
    o = FrameOpener(KEY, SID, index, DIR_SENDER_TO_RECEIVER, challenge, rekey, max_len=1 << 21)
    return s, o


frames_st = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20)


@given(frames_st)
def test_decoder_whole_buffer(frames: list[bytes]) -> None:
    s, o = pair()
    wire = b"".join(s.seal(f) for f in frames)
    assert list(FrameDecoder(o).feed(wire)) == frames


@given(frames_st)
@settings(max_examples=30)
def test_decoder_one_byte_at_a_time(frames: list[bytes]) -> None:
    s, o = pair()
    wire = b"".join(s.seal(f) for f in frames)
    dec = FrameDecoder(o)
    out = []
    for i in range(len(wire)):
        out.extend(dec.feed(wire[i : i + 1]))
    assert out == frames and dec.pending == 0


@given(frames_st, st.integers(min_value=1, max_value=50))
def test_decoder_keeps_trailing_bytes(frames: list[bytes], cut: int) -> None:
    s, o = pair()
    wire = b"".join(s.seal(f) for f in frames)
    extra = s.seal(b"next frame")
    cut = min(cut, len(extra) - 1)
    dec = FrameDecoder(o)
    got = list(dec.feed(wire + extra[:cut]))
    assert got == frames
    assert dec.pending == cut
    assert list(dec.feed(extra[cut:])) == [b"next frame"]


@given(st.binary(min_size=1, max_size=200), st.data())
def test_any_bit_flip_fails(payload: bytes, data: st.DataObject) -> None:
    s, o = pair()
    wire = bytearray(s.seal(payload))
    bit = data.draw(st.integers(min_value=0, max_value=len(wire) * 8 - 1))
    wire[bit // 8] ^= 1 << (bit % 8)
    dec = FrameDecoder(o)
    try:
        out = list(dec.feed(bytes(wire)))
    except (IntegrityError, ProtocolError):
        return
    # a flipped length bit can only make the frame look longer: nothing is released,
    # and the stream's end (EOS / TCP EOF) then reports the truncation
    assert out == [] and dec.pending == len(wire)


def test_replay_drop_reorder_fail() -> None:
    s, _ = pair()
    f = [s.seal(b"frame %d" % i) for i in range(3)]
    for wire in (f[0] + f[0], f[1], f[0] + f[2], f[1] + f[0]):
        _, o = pair()
        with pytest.raises(IntegrityError):
            list(FrameDecoder(o).feed(wire))


def test_frames_do_not_move_between_streams_or_directions() -> None:
    s1, _ = pair(index=1)
    _, o2 = pair(index=2)
    with pytest.raises(IntegrityError):
        list(FrameDecoder(o2).feed(s1.seal(b"x")))
    back = FrameOpener(KEY, SID, 1, DIR_RECEIVER_TO_SENDER, CH, 1 << 36, max_len=1 << 20)
    with pytest.raises(IntegrityError):
        list(FrameDecoder(back).feed(s1.seal(b"x")))
    _, other_conn = pair(challenge=b"d" * 32)
    with pytest.raises(IntegrityError):
        list(FrameDecoder(other_conn).feed(s1.seal(b"x")))


def test_length_bound_checked_before_buffering() -> None:
    _, o = pair()
    dec = FrameDecoder(o)
    with pytest.raises(ProtocolError):
        list(dec.feed((1 << 30).to_bytes(4, "little")))
    with pytest.raises(ProtocolError):
        list(FrameDecoder(pair()[1]).feed((3).to_bytes(4, "little")))


def test_rekey_keeps_both_sides_in_step_and_changes_keys() -> None:
    s, o = pair(rekey=MIN_REKEY_BYTES)
    dec = FrameDecoder(o)
    payloads = [os.urandom(1000) for _ in range(100)]  # ~100 KB over 4 KiB epochs
    out = []
    for p in payloads:
        out.extend(dec.feed(s.seal(p)))
    assert out == payloads
    assert s.epoch == o.epoch >= 20


def test_nonces_unique_per_key() -> None:
    s, _ = pair(rekey=MIN_REKEY_BYTES)
    seen: set[tuple[int, bytes]] = set()
    for _ in range(20000):
        nonce = s.next_nonce(100)
        key = (s.epoch, nonce)
        assert key not in seen
        seen.add(key)


def test_keys_differ_per_stream_direction_epoch_challenge() -> None:
    keys = {
        stream_key(KEY, SID, idx, d, ch, ep)
        for idx in (0, 1, 2)
        for d in (DIR_SENDER_TO_RECEIVER, DIR_RECEIVER_TO_SENDER)
        for ch in (CH, b"e" * 32)
        for ep in (0, 1)
    }
    assert len(keys) == 3 * 2 * 2 * 2
    assert all(KEY not in k[0] for k in keys)


def test_hello_proof_binds_session_challenge_and_index() -> None:
    hk = handshake_key(KEY, SID)
    base = hello_proof(hk, SID, CH, 1)
    assert base != hello_proof(hk, SID, CH, 2)
    assert base != hello_proof(hk, SID, b"x" * 32, 1)
    assert base != hello_proof(hk, SID + 1, CH, 1)
    assert base != hello_proof(handshake_key(bytes(16), SID), SID, CH, 1)
