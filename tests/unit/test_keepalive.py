"""Keepalive interval and the receiver's reported idle timeout (OP-14, docs/protocol.md §9.10)."""

from __future__ import annotations

import pytest

from escp.net.control import KEEPALIVE_MIN, keepalive_interval
from escp.protocol.bootstrap import SessionReply, decode_reply, encode_reply
from escp.protocol.wire import BOOT_HEADER


@pytest.mark.parametrize(("idles", "expect"), [
    ((60.0,), 15.0),
    ((60.0, 10.0), 2.5),  # receiver --timeout 10 against the default 60 s
    ((1.0, 5.0), KEEPALIVE_MIN),  # sender --timeout 1 against a receiver clamped to 5 s
    ((60.0, 0.0), 15.0),  # 0: the peer did not say (older receiver)
    ((0.0,), 1.0),
])
def test_keepalive_interval_follows_the_shorter_idle_timeout(idles: tuple[float, ...], expect: float) -> None:
    assert keepalive_interval(*idles) == expect


def test_session_reply_carries_the_receiver_idle_timeout() -> None:
    for ms in (0, 5000, 3_600_000):
        data = encode_reply(SessionReply("127.0.0.1", 1234, idle_timeout_ms=ms))
        assert decode_reply(data[BOOT_HEADER.size:]).idle_timeout_ms == ms
