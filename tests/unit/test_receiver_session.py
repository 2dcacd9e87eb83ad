"""In-process checks of the receiving side (escp/net/receive.py, streams.py) over loopback sockets."""

from __future__ import annotations

import os
import socket
import time

import pytest

from escp.engine.sink import FileStore
from escp.errors import ConnectionFailure
from escp.net import streams
from escp.net.receive import ReceiveSession
from escp.protocol import messages as m
from escp.protocol.bootstrap import SessionInit
from escp.protocol.handshake import StreamSecrets
from escp.protocol.roles import DataRole
from escp.protocol.wire import MIN_BLOCK


def test_metadata_writer_sends_nothing_before_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    """OP-16: the metadata stream is registered before its ACCEPT is sent; a keepalive the
    writer sends in between would take the stream's first frame. ACCEPT is slowed down here
    to span several keepalive intervals: the sender must still see ACCEPT first."""
    init = SessionInit(session_id=7, key=os.urandom(16), flags=0, block_size=MIN_BLOCK, streams=1,
                       port_start=1, port_range=1, dest_path=b"/nonexistent", top_level_count=1,
                       rx_engine="dummy", idle_timeout_ms=1000)
    session = ReceiveSession(init, FileStore.for_session(init), init.receiver_idle_timeout)
    encode_accept = m.encode_accept

    def slow_accept(a: m.Accept) -> bytes:
        time.sleep(3.0)  # > 2 keepalive intervals, old (1.25 s) and new (0.25 s) alike
        return encode_accept(a)

    monkeypatch.setattr(streams.m, "encode_accept", slow_accept)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    secrets = StreamSecrets.of(init)
    session.ctl.add_socket(listener)
    session.ctl.guard(streams.StreamListener(listener, secrets, DataRole.RECEIVER, session).run, "rx-accept")
    session.start()
    conn = None
    try:
        conn = streams.connect_stream("127.0.0.1", port, 0, secrets, DataRole.SENDER, timeout=10, idle_timeout=10)
        assert conn.index == 0
        msg = conn.recv_message(memoryview(bytearray(256)))  # then keepalives, as usual
        assert isinstance(msg, m.Keepalive)
    finally:
        session.ctl.abort(ConnectionFailure("test over"))
        listener.close()
        if conn is not None:
            conn.close()
