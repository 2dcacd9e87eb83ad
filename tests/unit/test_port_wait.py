"""Waiting for a free port (docs/protocol.md §2.7, §2.11): the SetupProgress message and the
SessionInit feature bit, the server's wait limit, and bind_listener's retries on real
sockets of a private loopback address."""

from __future__ import annotations

import socket

import pytest

from escp.errors import ConnectionFailure, ProtocolError
from escp.net.streams import PORT_RETRY_FIRST, PORT_RETRY_MAX, bind_listener
from escp.protocol import bootstrap as bs
from escp.protocol import wire as w
from tests.faults.util import fixed_port, private_loopback


def init(**fields: object) -> bs.SessionInit:
    return bs.SessionInit(session_id=1, key=bytes(16), flags=0, block_size=w.MIN_BLOCK, streams=2, port_start=1232,
                          port_range=10, dest_path=b"/d", top_level_count=1, **fields)  # type: ignore[arg-type]


def test_setup_progress_round_trip_and_header() -> None:
    p = bs.SetupProgress(w.STAGE_PORT_WAIT, 2500, 60_000, "1232-1241 on 127.0.0.1")
    data = bs.encode_progress(p)
    assert bs.read_header(data[: w.BOOT_HEADER.size], w.BOOT_SESSION_REPLY, w.BOOT_SETUP_PROGRESS) == (
        w.BOOT_SETUP_PROGRESS, len(data) - w.BOOT_HEADER.size)
    assert bs.decode_progress(data[w.BOOT_HEADER.size :]) == p
    assert p.describe() == "every port in 1232-1241 on 127.0.0.1 is busy; waiting for one (2 s so far, at most 60 s)"
    # an initiator that reads only the reply refuses it as a protocol error, never misreads it
    with pytest.raises(ProtocolError, match=f"unexpected bootstrap message type {w.BOOT_SETUP_PROGRESS}"):
        bs.parse_header(data[: w.BOOT_HEADER.size], w.BOOT_SESSION_REPLY)


def test_setup_features_travel_and_default_to_none() -> None:
    for features in (0, w.SETUP_PROGRESS, 0xFFFF_FFFF):  # unknown bits are offers: ignored, not refused
        got = bs.decode_init(bs.encode_init(init(setup_features=features))[w.BOOT_HEADER.size :])
        assert got.setup_features == features
    assert not init().reads_progress
    assert init(setup_features=w.SETUP_PROGRESS).reads_progress


@pytest.mark.parametrize("features,wish_ms,idle,expect", [
    (w.SETUP_PROGRESS, 60_000, 60.0, 60.0),  # it hears from the server: the whole idle deadline
    (w.SETUP_PROGRESS, 1_000, 5.0, 5.0),
    (0, 60_000, 60.0, 27.0),  # an older initiator gives up after 30 s: answer 3 s before
    (0, 1_000, 5.0, 5.0),  # ... after 10 s at least: the 5 s deadline comes first
    (0, 60_000, 10.0, 10.0),  # the server's own --timeout still caps it
])
def test_port_wait_limit(features: int, wish_ms: int, idle: float, expect: float) -> None:
    assert init(setup_features=features, idle_timeout_ms=wish_ms).port_wait(idle) == expect


@pytest.mark.parametrize("idle,expect", [(60.0, 60.0), (1.0, bs.SETUP_MIN_S), (600.0, 600.0)])
def test_setup_deadline_follows_the_idle_deadline(idle: float, expect: float) -> None:
    """The initiator's wait for the reply is its --timeout (never below 10 s), not capped at
    30 s: a burst of remote starts on a busy node is slow, not hung (§2.5)."""
    assert bs.setup_timeout(idle) == expect


def blocked(addr: str, ports: list[int]) -> list[socket.socket]:
    socks = []
    for port in ports:
        s = socket.socket()
        s.bind((addr, port))
        s.listen(1)
        socks.append(s)
    return socks


def test_waits_for_a_port_with_growing_jittered_pauses() -> None:
    addr, port = private_loopback(), fixed_port()
    blockers = blocked(addr, [port, port + 1])
    waits: list[float] = []
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 6:
            blockers[1].close()  # a port frees up

    try:
        sock = bind_listener(addr, port, 2, wait=60.0, on_wait=waits.append, pause=pause)
    finally:
        for s in blockers:
            s.close()
    try:
        assert sock.getsockname() == (addr, port + 1)
    finally:
        sock.close()
    assert len(waits) == len(pauses) == 6 and waits == sorted(waits)
    for k, p in enumerate(pauses):  # backoff doubling up to the cap, each pause in its upper half
        cap = min(PORT_RETRY_FIRST * 2**k, PORT_RETRY_MAX)
        assert cap / 2 <= p <= cap, (k, p)


def test_gives_up_at_the_limit_saying_how_long_it_waited() -> None:
    addr, port = private_loopback(), fixed_port()
    blockers = blocked(addr, [port])
    try:
        with pytest.raises(ConnectionFailure) as err:
            bind_listener(addr, port, 1, wait=0.3)
    finally:
        blockers[0].close()
    assert err.value.message.startswith(f"no free port in {port}-{port} on {addr} (Address already in use) "
                                        "after waiting 0.")


def test_a_pause_that_raises_ends_the_wait() -> None:
    addr, port = private_loopback(), fixed_port()
    blockers = blocked(addr, [port])

    def pause(seconds: float) -> None:
        raise ConnectionFailure("ssh channel closed")

    try:
        with pytest.raises(ConnectionFailure, match="ssh channel closed"):
            bind_listener(addr, port, 1, wait=60.0, pause=pause)
    finally:
        blockers[0].close()


def test_only_a_busy_port_is_waited_for() -> None:
    """An address that is not this host's is no reason to wait: the error comes at once,
    with no wait (and without the words of a wait)."""
    waits: list[float] = []
    with pytest.raises(ConnectionFailure) as err:
        bind_listener("192.0.2.1", fixed_port(), 2, wait=60.0, on_wait=waits.append)
    assert waits == []
    assert "Cannot assign requested address" in err.value.message and "waiting" not in err.value.message
