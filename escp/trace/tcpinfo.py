"""TCP_INFO of a stream socket: what the kernel knows about the path, sampled by the sender.

`read(sock)` asks the kernel (`getsockopt(IPPROTO_TCP, TCP_INFO)`) and `parse(raw)` turns the
bytes of `struct tcp_info` (linux/tcp.h) into a frozen TcpInfo: round-trip time, congestion
window, retransmits, delivery rate, and the time the connection spent limited by the peer's
receive window or by its own send buffer. Older kernels return a shorter struct: every field
the kernel did not return is None (the first 104 bytes, up to tcpi_total_retrans, exist since
Linux 2.6 and are required).

The sender's stream workers call `sample(tracer, worker, sock)` where they record their other
counters (every COUNTER_EVERY blocks) and once when the stream ends; it records, when tracing:

    "<worker> tcp rtt_us"            smoothed RTT (µs)
    "<worker> tcp cwnd_bytes"        congestion window x MSS (bytes)
    "<worker> tcp delivery_Bps"      the kernel's delivery-rate estimate (bytes/s)
    "<worker> tcp retrans"           segments retransmitted so far
    "<worker> tcp rwnd_limited_us"   time limited by the receiver's window so far (µs)
    "<worker> tcp sndbuf_limited_us" time limited by the send buffer so far (µs)
    "<worker> tcp busy_us"           time with data in flight so far (µs)

`stream_rows()` rebuilds one row per stream from the tracer's counter totals, and `render_table`
prints them for `escp --stats` (docs/tuning.md, "Reading the TCP_INFO columns").
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..units import format_bytes
from . import Tracer
from .recorder import CounterTotals

TCP_INFO = getattr(socket, "TCP_INFO", 11)
BUFFER = 256  # bytes asked for; the kernel returns as many as its struct has
US = 1e-6

# (name, struct code, offset) of the fields read from struct tcp_info, in offset order
_LAYOUT: tuple[tuple[str, str, int], ...] = (
    ("state", "B", 0), ("ca_state", "B", 1), ("retransmits", "B", 2),
    ("rto_us", "I", 8), ("snd_mss", "I", 16), ("rcv_mss", "I", 20), ("unacked", "I", 24),
    ("lost", "I", 32), ("retrans", "I", 36), ("pmtu", "I", 60), ("rtt_us", "I", 68),
    ("rttvar_us", "I", 72), ("snd_ssthresh", "I", 76), ("snd_cwnd", "I", 80),
    ("total_retrans", "I", 100),
    # since Linux 3.15 .. 5.4; None when the kernel's struct ends before them
    ("pacing_rate", "Q", 104), ("bytes_acked", "Q", 120), ("bytes_received", "Q", 128),
    ("notsent_bytes", "I", 144), ("min_rtt_us", "I", 148), ("delivery_rate", "Q", 160),
    ("busy_time_us", "Q", 168), ("rwnd_limited_us", "Q", 176), ("sndbuf_limited_us", "Q", 184),
    ("delivered", "I", 192), ("bytes_sent", "Q", 200), ("bytes_retrans", "Q", 208), ("snd_wnd", "I", 228),
)
REQUIRED = 104  # bytes up to and including tcpi_total_retrans
_SIZES = {code: struct.calcsize("=" + code) for code in "BIQ"}
_FULL = max(off + _SIZES[code] for _n, code, off in _LAYOUT)
_STRUCT = struct.Struct("=" + "".join(
    f"{off - prev}x{code}" for (_n, code, off), prev in
    zip(_LAYOUT, [0] + [o + _SIZES[c] for _n, c, o in _LAYOUT], strict=False)
))


@dataclass(frozen=True)
class TcpInfo:
    state: int
    ca_state: int
    retransmits: int  # retransmits of the segment at the head (current episode)
    rto_us: int
    snd_mss: int
    rcv_mss: int
    unacked: int  # segments in flight
    lost: int
    retrans: int  # segments retransmitted and not yet acknowledged
    pmtu: int
    rtt_us: int  # smoothed round-trip time
    rttvar_us: int
    snd_ssthresh: int
    snd_cwnd: int  # congestion window, in segments
    total_retrans: int  # segments retransmitted over the connection's life
    pacing_rate: int | None = None  # bytes/s
    bytes_acked: int | None = None
    bytes_received: int | None = None
    notsent_bytes: int | None = None  # in the send buffer, not yet sent
    min_rtt_us: int | None = None
    delivery_rate: int | None = None  # bytes/s, the kernel's recent estimate
    busy_time_us: int | None = None  # time with data in flight
    rwnd_limited_us: int | None = None  # time stopped by the receiver's advertised window
    sndbuf_limited_us: int | None = None  # time stopped by an empty send buffer (the application)
    delivered: int | None = None
    bytes_sent: int | None = None
    bytes_retrans: int | None = None
    snd_wnd: int | None = None  # the peer's advertised receive window (bytes)

    @property
    def cwnd_bytes(self) -> int:
        """The congestion window in bytes: snd_cwnd segments of snd_mss."""
        return self.snd_cwnd * self.snd_mss

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"cwnd_bytes": self.cwnd_bytes}


def parse(raw: bytes | bytearray | memoryview) -> TcpInfo:
    """A TcpInfo from the bytes of struct tcp_info; fields past the end of a short one are None."""
    n = len(raw)
    if n < REQUIRED:
        raise ValueError(f"TCP_INFO of {n} bytes: shorter than the {REQUIRED} every Linux returns")
    values = _STRUCT.unpack(bytes(raw[:_FULL]).ljust(_FULL, b"\0"))
    kw: dict[str, Any] = {name: (v if off + _SIZES[code] <= n else None)
          for (name, code, off), v in zip(_LAYOUT, values, strict=True)}
    return TcpInfo(**kw)


def read(sock: socket.socket) -> TcpInfo | None:
    """The socket's TCP_INFO, or None when the kernel gives none (not TCP, closed, not Linux)."""
    try:
        return parse(sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, BUFFER))
    except (OSError, ValueError):
        return None


# counter suffix -> how to read it from a sample (None: the kernel did not report it)
COUNTERS: dict[str, Any] = {
    "rtt_us": lambda i: i.rtt_us,
    "cwnd_bytes": lambda i: i.cwnd_bytes,
    "delivery_Bps": lambda i: i.delivery_rate,
    "retrans": lambda i: i.total_retrans,
    "rwnd_limited_us": lambda i: i.rwnd_limited_us,
    "sndbuf_limited_us": lambda i: i.sndbuf_limited_us,
    "busy_us": lambda i: i.busy_time_us,
}


def sample(tracer: Tracer, worker: str, sock: socket.socket) -> TcpInfo | None:
    """Record the socket's TCP_INFO as the worker's "<worker> tcp ..." counters (when tracing)."""
    if not tracer.enabled:
        return None
    info = read(sock)
    if info is not None:
        for suffix, get in COUNTERS.items():
            value = get(info)
            if value is not None:
                tracer.counter(f"{worker} tcp {suffix}", value)
    return info


# ---------------------------------------------------------------- the --stats table


@dataclass(frozen=True)
class TcpStreamRow:
    """One stream's TCP_INFO over the transfer: last sample (and range) of each counter."""

    worker: str
    samples: int
    rtt_us: float | None = None
    rtt_min_us: float | None = None
    rtt_max_us: float | None = None
    cwnd_bytes: float | None = None
    cwnd_max_bytes: float | None = None
    delivery_Bps: float | None = None
    delivery_max_Bps: float | None = None
    retrans: float | None = None
    busy_us: float | None = None
    rwnd_limited_us: float | None = None
    sndbuf_limited_us: float | None = None

    def limited_share(self, limited_us: float | None) -> float | None:
        """A limited time as a share of the busy time (None when either is missing)."""
        if limited_us is None or not self.busy_us:
            return None
        return limited_us / self.busy_us

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _worker_key(worker: str) -> tuple[str, int]:
    head, _, num = worker.rpartition("-")
    return (head, int(num)) if num.isdigit() else (worker, -1)


def stream_rows(counter_totals: Mapping[str, CounterTotals]) -> list[TcpStreamRow]:
    """Per-stream rows from a tracer's counter totals ("<worker> tcp <suffix>" names)."""
    per: dict[str, dict[str, CounterTotals]] = {}
    for name, tot in counter_totals.items():
        worker, sep, suffix = name.partition(" tcp ")
        if sep and suffix in COUNTERS:
            per.setdefault(worker, {})[suffix] = tot
    rows = []
    for worker in sorted(per, key=_worker_key):
        c = per[worker]

        def last(key: str, c: dict[str, CounterTotals] = c) -> float | None:
            return c[key].last if key in c else None

        rtt = c.get("rtt_us")
        cwnd = c.get("cwnd_bytes")
        rate = c.get("delivery_Bps")
        rows.append(TcpStreamRow(
            worker=worker,
            samples=max(t.count for t in c.values()),
            rtt_us=last("rtt_us"), rtt_min_us=rtt.minimum if rtt else None, rtt_max_us=rtt.maximum if rtt else None,
            cwnd_bytes=last("cwnd_bytes"), cwnd_max_bytes=cwnd.maximum if cwnd else None,
            delivery_Bps=last("delivery_Bps"), delivery_max_Bps=rate.maximum if rate else None,
            retrans=last("retrans"), busy_us=last("busy_us"),
            rwnd_limited_us=last("rwnd_limited_us"), sndbuf_limited_us=last("sndbuf_limited_us"),
        ))
    return rows


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1e3:.2f}"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def render_table(rows: list[TcpStreamRow]) -> str:
    """The per-stream TCP_INFO table of `escp --stats` (last sample; ranges over the transfer)."""
    head = (f"{'stream':<8}{'rtt ms':>8}{'(min-max)':>15}{'cwnd':>12}{'(max)':>12}{'deliv MB/s':>12}"
            f"{'(max)':>9}{'retrans':>9}{'busy s':>8}{'rwnd-lim':>9}{'sndbuf-lim':>11}")
    lines = ["TCP_INFO per stream (sender side, last sample):", head, "-" * len(head)]
    for r in rows:
        rng = f"({_ms(r.rtt_min_us)}-{_ms(r.rtt_max_us)})" if r.rtt_min_us is not None else "-"
        cwnd = format_bytes(r.cwnd_bytes) if r.cwnd_bytes is not None else "-"
        cmax = format_bytes(r.cwnd_max_bytes) if r.cwnd_max_bytes is not None else "-"
        rate = f"{r.delivery_Bps / 1e6:.0f}" if r.delivery_Bps is not None else "-"
        rmax = f"{r.delivery_max_Bps / 1e6:.0f}" if r.delivery_max_Bps is not None else "-"
        lines.append(
            f"{r.worker:<8}{_ms(r.rtt_us):>8}{rng:>15}{cwnd:>12}{cmax:>12}{rate:>12}{rmax:>9}"
            f"{'-' if r.retrans is None else f'{r.retrans:.0f}':>9}"
            f"{'-' if r.busy_us is None else f'{r.busy_us * US:.2f}':>8}"
            f"{_pct(r.limited_share(r.rwnd_limited_us)):>9}{_pct(r.limited_share(r.sndbuf_limited_us)):>11}"
        )
    return "\n".join(lines)


__all__ = ["TcpInfo", "parse", "read", "sample", "COUNTERS", "TcpStreamRow", "stream_rows", "render_table"]
