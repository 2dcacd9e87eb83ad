"""The small codecs: Session_Init flag bits <-> SessionFlags, and the DATA header."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escp.errors import ProtocolError
from escp.protocol import wire as W
from escp.protocol.bootstrap import ListItem, SessionInit, decode_init, encode_init
from escp.protocol.data import DATA_HEADER_LEN, decode_data_header, encode_data, pack_data_header
from escp.protocol.flags import BITS, SessionFlags
from escp.protocol.report import Problem, SessionReport, decode_report, encode_report
from escp.protocol.roles import DataRole, Link
from escp.protocol.wire import BOOT_HEADER, MIN_BLOCK


def test_flag_fields_follow_the_bits_in_order() -> None:
    assert [f.name for f in fields(SessionFlags)] == list(BITS)
    assert sorted(BITS.values()) == list(BITS.values()) == [1 << i for i in range(len(BITS))]
    assert sum(BITS.values()) == W.FLAG_KNOWN


@given(st.integers(0, W.FLAG_KNOWN))
def test_flags_round_trip(bits: int) -> None:
    flags = SessionFlags.from_bits(bits)
    assert flags.to_bits() == bits
    assert flags.checksum == (not bits & W.FLAG_NO_CHECKSUM)


def test_flags_name_the_wire_bits() -> None:
    assert SessionFlags(compress=True).to_bits() == W.FLAG_COMPRESS
    assert SessionFlags(dest_dir=True, top_dir=True).to_bits() == W.FLAG_DEST_DIR | W.FLAG_TOP_DIR
    assert SessionFlags.from_bits(W.FLAG_TRACE | W.FLAG_TRACE_EVENTS) == SessionFlags(trace=True, trace_events=True)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.booleans(),
       st.binary(max_size=64))
def test_data_header_round_trip(fino: int, offset: int, raw_len: int, compressed: bool, payload: bytes) -> None:
    buf = bytearray(DATA_HEADER_LEN + len(payload))
    pack_data_header(buf, fino, offset, raw_len, compressed)
    buf[DATA_HEADER_LEN:] = payload
    assert bytes(buf) == encode_data(fino, offset, raw_len, payload, compressed)
    hdr = decode_data_header(memoryview(buf), len(buf))
    assert (hdr.fino, hdr.offset, hdr.raw_len, hdr.compressed) == (fino, offset, raw_len, compressed)
    assert buf[0] == W.T_DATA and hdr.flags == (W.DATA_FLAG_ZSTD if compressed else 0)


def test_data_header_keeps_unknown_flag_bits_for_the_core_to_refuse() -> None:
    plain = W.DATA_HDR.pack(W.T_DATA, 0x81, 0, 3, 0, 5) + b"hello"
    hdr = decode_data_header(plain, len(plain))
    assert hdr.flags == 0x81 and hdr.compressed


def test_short_data_frame_is_a_protocol_error() -> None:
    plain = encode_data(0, 0, 1, b"x", False)
    with pytest.raises(ProtocolError, match="shorter than its header"):
        decode_data_header(plain, DATA_HEADER_LEN - 1)


def test_session_init_roles_sources_and_report_round_trip() -> None:
    init = SessionInit(9, bytes(16), 0, MIN_BLOCK, 3, 1232, 10, b"", 0, server_role=DataRole.SENDER,
                       server_link=Link.CONNECTOR, peer_address="10.0.0.2", peer_port=1233,
                       sources=(b"/data/*.h5", b"\xff raw"), filelist=(ListItem(b"/a", b"b/a"),), report=True,
                       tx_engine="dummy", rate_limit=1 << 20)
    assert decode_init(encode_init(init)[BOOT_HEADER.size:]) == init
    plain = SessionInit(9, bytes(16), 0, MIN_BLOCK, 3, 1232, 10, b"/d", 1)  # version 1's push: the defaults
    back = decode_init(encode_init(plain)[BOOT_HEADER.size:])
    assert back.server_role is DataRole.RECEIVER and back.server_link is Link.LISTENER and not back.report
    report = SessionReport(2, 1, 99, "escp: I/O error: x", "I/O", (Problem(b"/x", "I/O", "gone", sent=True),), 3,
                           b'{"a": 1}')
    assert decode_report(encode_report(report)[BOOT_HEADER.size:]) == report


def test_connecting_server_needs_its_peer() -> None:
    init = SessionInit(9, bytes(16), 0, MIN_BLOCK, 3, 1232, 10, b"", 0, server_link=Link.CONNECTOR)
    with pytest.raises(ProtocolError, match="peer"):
        decode_init(encode_init(init)[BOOT_HEADER.size:])
