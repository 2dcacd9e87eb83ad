"""TCP_INFO sampling (escp/trace/tcpinfo.py): parsing struct tcp_info from a real loopback
socket and from recorded byte strings (including the shorter structs of older kernels), the
"<worker> tcp ..." counters the sender records, and the per-stream table of `escp --stats`."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import pytest

from escp.trace import tcpinfo
from escp.trace.recorder import RecordingTracer
from escp.trace.summary import summarize
from tests.helpers import local, random_file

# struct tcp_info as Linux 6.18 returned it for a loopback socket with 1 MB queued (the first 240
# of its 256 bytes; the fields escp reads end at byte 232)
RECORDED_6_18 = bytes.fromhex(
    "010000000007aa01e01c03000000000000ba000018020000030000000000000000000000000000000000000000000000"
    "000000000800000000000000ffff0000d7ff00002d00000021000000ffffff7f0b000000cbff00000300000000000000"
    "d7ff000000000000c415783906000000ffffffffffffffffe67f00000000000000000000000000000600000002000000"
    "5b4e0d002300000000000000040000004678771800000000000000000000000000000000000000000000000000000000"
    "0200000000000000e5f30100000000000000000000000000000000000000000000000000007401000000010000000000"
).ljust(256, b"\0")


def _packed(values: dict[str, int], length: int) -> bytes:
    """A struct tcp_info of `length` bytes with the named fields set, packed field by field."""
    buf = bytearray(max(length, 232))
    for name, code, offset in tcpinfo._LAYOUT:
        if name in values:
            struct.pack_into("=" + code, buf, offset, values[name])
    return bytes(buf[:length])


FULL = {"state": 1, "snd_mss": 1448, "rtt_us": 60_000, "rttvar_us": 3000, "snd_cwnd": 2900,
        "total_retrans": 7, "delivery_rate": 70_000_000, "busy_time_us": 5_000_000,
        "rwnd_limited_us": 4_000_000, "sndbuf_limited_us": 100, "min_rtt_us": 59_000, "snd_wnd": 4 << 20,
        "notsent_bytes": 123, "bytes_sent": 1 << 30, "bytes_retrans": 10_136}


def test_recorded_kernel_bytes() -> None:
    info = tcpinfo.parse(RECORDED_6_18)
    assert (info.state, info.snd_mss, info.rtt_us, info.snd_cwnd, info.min_rtt_us) == (1, 47616, 45, 11, 35)
    assert info.cwnd_bytes == 11 * 47616
    assert info.delivery_rate == 410482758 and info.snd_wnd == 95232 and info.total_retrans == 0
    assert info.busy_time_us == 0 and info.bytes_sent == 127973 and info.notsent_bytes == 872027


def test_every_field_at_its_offset() -> None:
    info = tcpinfo.parse(_packed(FULL, 232))
    for name, value in FULL.items():
        assert getattr(info, name) == value, name
    assert info.to_dict()["cwnd_bytes"] == 1448 * 2900


@pytest.mark.parametrize("length,present,absent", [
    (104, ["total_retrans", "rtt_us", "snd_cwnd"], ["pacing_rate", "delivery_rate", "busy_time_us", "snd_wnd"]),
    (160, ["notsent_bytes", "min_rtt_us"], ["delivery_rate", "busy_time_us", "rwnd_limited_us"]),
    (168, ["delivery_rate"], ["busy_time_us", "rwnd_limited_us", "sndbuf_limited_us"]),
    (192, ["busy_time_us", "rwnd_limited_us", "sndbuf_limited_us"], ["delivered", "bytes_sent", "snd_wnd"]),
    (228, ["bytes_sent", "bytes_retrans"], ["snd_wnd"]),
])
def test_shorter_structs_of_older_kernels(length: int, present: list[str], absent: list[str]) -> None:
    info = tcpinfo.parse(_packed(FULL, length))
    for name in present:
        assert getattr(info, name) == FULL.get(name, 0), name
    for name in absent:
        assert getattr(info, name) is None, name


def test_too_short_is_refused() -> None:
    with pytest.raises(ValueError, match="103 bytes"):
        tcpinfo.parse(bytes(103))


def test_real_loopback_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv, \
            socket.create_connection(srv.getsockname()[:2], timeout=10) as c:
        peer, _ = srv.accept()
        with peer:
            payload = 1 << 20
            c.sendall(bytes(payload))
            got, deadline = 0, time.monotonic() + 30
            while got < payload:
                assert time.monotonic() < deadline
                got += len(peer.recv(1 << 20))
            info = tcpinfo.read(c)
            while info is not None and (info.bytes_acked or 0) < payload:  # the last ACK may lag
                assert time.monotonic() < deadline
                time.sleep(0.01)
                info = tcpinfo.read(c)
        assert info is not None
        assert info.state == 1  # TCP_ESTABLISHED
        assert info.snd_mss > 0 and info.snd_cwnd > 0 and info.rtt_us > 0
        assert info.bytes_sent is not None and info.bytes_sent >= payload
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert tcpinfo.read(udp) is None  # not TCP: no sample, no error


def test_sample_records_the_counters_the_verdict_reads() -> None:
    tr = RecordingTracer("sender")
    with socket.create_server(("127.0.0.1", 0)) as srv, \
            socket.create_connection(srv.getsockname()[:2], timeout=10) as c:
        peer, _ = srv.accept()
        with peer:
            c.sendall(b"x" * 4096)
            assert tcpinfo.sample(tr, "tx-1", c) is not None
            off = RecordingTracer("sender")
            off.enabled = False
            assert tcpinfo.sample(off, "tx-1", c) is None
    names = set(tr.snapshot().counter_totals)
    assert names == {f"tx-1 tcp {k}" for k in ("rtt_us", "cwnd_bytes", "delivery_Bps", "retrans",
                                                "rwnd_limited_us", "sndbuf_limited_us", "busy_us")}


def test_stream_rows_and_table() -> None:
    tr = RecordingTracer("sender")
    for worker, rtt in (("tx-2", 61_000), ("tx-10", 59_000), ("tx-1", 60_000)):
        for scale in (1, 2):
            info = tcpinfo.parse(_packed({**FULL, "rtt_us": rtt * scale, "total_retrans": scale}, 232))
            for suffix, get in tcpinfo.COUNTERS.items():
                tr.counter(f"{worker} tcp {suffix}", get(info))
    tr.counter("tx-1 bytes in flight", 5)  # other counters are not TCP_INFO
    rows = tcpinfo.stream_rows(tr.snapshot().counter_totals)
    assert [r.worker for r in rows] == ["tx-1", "tx-2", "tx-10"]
    r = rows[0]
    assert (r.samples, r.rtt_us, r.rtt_min_us, r.rtt_max_us, r.retrans) == (2, 120_000, 60_000, 120_000, 2)
    assert r.limited_share(r.rwnd_limited_us) == pytest.approx(0.8)
    text = tcpinfo.render_table(rows)
    assert "TCP_INFO per stream" in text and "120.00" in text and "80%" in text and "70" in text


def test_stats_of_a_real_transfer_print_the_table(tmp_path: Path) -> None:
    src = random_file(tmp_path / "src", 8 << 20)
    report = tmp_path / "r.json"
    r = local("-t", "2", "--blocksize", "256K", "--stats", "--json", report, src, tmp_path / "dst")
    assert r.code == 0, r.stderr
    assert "TCP_INFO per stream" in r.stderr
    rows = json.loads(report.read_text())["stats"]["tcp"]
    assert sorted(row["worker"] for row in rows) == ["tx-1", "tx-2"]
    for row in rows:
        assert row["samples"] >= 1 and row["rtt_us"] > 0 and row["cwnd_bytes"] > 0  # one at least: at its end
        assert row["retrans"] is not None and row["busy_us"] is not None


def test_summary_carries_the_rows() -> None:
    tr = RecordingTracer("sender")
    tr.counter("tx-1 tcp rtt_us", 100)
    s = summarize(tr.snapshot(), None)
    assert [row.worker for row in s.tcp] == ["tx-1"]
    assert s.to_dict()["tcp"][0]["rtt_us"] == 100
    assert "TCP_INFO per stream" in s.render_text()
    assert summarize(None, None).tcp == []
