"""How the network limits a transfer: a saturated link, or windows / pacing per stream.

More streams help a transfer whose streams are each held to window/RTT (or to the sender's
-l pacing); they do not help one whose streams share a link that is full. classify() tells
the two apart from what the sender recorded:

With TCP_INFO (the sender's data-stream workers record it as counters "<worker> tcp rtt_us",
"tcp cwnd_bytes", "tcp delivery_Bps", "tcp retrans" (total), "tcp rwnd_limited_us",
"tcp sndbuf_limited_us", "tcp busy_us" (cumulative)):
  - stream-limited: the connections were busy (data in flight) less than BUSY_MIN of the time:
    the sender held data back (-l pacing, or the application);
  - window-limited: limited by the receive window or the send buffer for at least
    WINDOW_LIMITED of their busy time;
  - link-saturated: a queue built up (median RTT at least QUEUE_RTT x the smallest and
    QUEUE_MIN_US above it) or segments were retransmitted (drops at the bottleneck);
  - otherwise window-limited by the congestion window with no sign of congestion (each stream
    moves cwnd/RTT; more streams help).
Without TCP_INFO (the verdict says so):
  - stream-limited: the send queues ("<worker> bytes in flight", TIOCOUTQ) stayed nearly
    empty (median below PACED_QUEUE, a few pacing slices) while the sender waited to send:
    nothing was waiting for the network, the sender paced itself. (Over a long path a paced
    stream keeps rate x RTT in flight; there only TCP_INFO tells pacing from a full link);
  - link-saturated: the streams' total rate was flat (coefficient of variation of the
    per-bin total at most FLAT_CV, over bins of at least BIN_BYTES on average): one fixed rate
    shared by all streams. A window limit on
    every stream would look the same, which only TCP_INFO rules out;
  - undetermined otherwise.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from ..engine.pacing import PACE_SLICE
from .tracedata import TraceData

BUSY_MIN = 0.5
WINDOW_LIMITED = 0.25
QUEUE_RTT = 2.0
QUEUE_MIN_US = 1000.0
PACED_QUEUE = 4 * PACE_SLICE  # bytes: a paced sender has at most a slice or two unacknowledged
FLAT_CV = 0.25
MIN_BINS = 4  # rate bins needed to judge flatness (after trimming the partial ends)
BIN_BYTES = 8 << 20  # bins are joined until they hold this much on average

_TCP = re.compile(r"^(?P<worker>\S+) tcp (?P<field>\w+)$")
_INFLIGHT = re.compile(r"^(?P<worker>\S+) bytes in flight$")


@dataclass(frozen=True)
class NetClass:
    cause: str  # "link-saturated", "window-limited", "stream-limited" or "undetermined"
    evidence: str
    unseen: tuple[str, ...] = ()


@dataclass(frozen=True)
class Flatness:
    total_mb_s: float  # mean total rate over the trimmed bins (MB/s)
    cv: float  # coefficient of variation of the per-bin total
    streams: int
    bins: int

    def text(self) -> str:
        return (f"{self.streams} streams together {self.total_mb_s:.1f} MB/s, "
                f"{'flat' if self.cv <= FLAT_CV else 'varying'} (CV {self.cv:.2f} over {self.bins} bins)")


def flatness(data: TraceData | None) -> Flatness | None:
    """The streams' total rate over time from a side's rate bins; None when too short."""
    if data is None or data.rates is None or not data.rates.workers:
        return None
    series = [b for w, b in data.rates.workers.items() if "meta" not in w]
    if not series:
        return None
    width = max(map(len, series))
    total = [sum(s[i] for s in series if i < len(s)) for i in range(width)]
    nonzero = [i for i, v in enumerate(total) if v]
    if not nonzero:
        return None
    trimmed = total[nonzero[0] + 1:nonzero[-1]]  # the first and last bins are partial
    width = 1  # join bins until each holds several blocks: a bin of one or two blocks is all quantisation
    while len(trimmed) // (2 * width) >= MIN_BINS and sum(trimmed) / (len(trimmed) / width) < BIN_BYTES:
        width *= 2
    joined = [sum(trimmed[i:i + width]) for i in range(0, len(trimmed) - width + 1, width)]
    if len(joined) < MIN_BINS:
        return None
    mean = statistics.fmean(joined)
    if mean <= 0:
        return None
    return Flatness(mean / (width * data.rates.bin_ns / 1e9) / 1e6, statistics.pstdev(joined) / mean, len(series),
                    len(joined))


@dataclass(frozen=True)
class TcpStream:
    """One stream's TCP_INFO over the transfer (cumulative counters as differences)."""

    rtt_min_us: float
    rtt_median_us: float
    retrans: float
    busy_us: float
    rwnd_limited_us: float
    sndbuf_limited_us: float
    span_us: float  # from its first sample to its last


@dataclass(frozen=True)
class NetInputs:
    """What the classification reads from the two recordings (kept in the summary, so that a
    verdict can be computed again from a --json report)."""

    flat: Flatness | None = None
    inflight_median: float | None = None  # bytes; None: not sampled
    tcp: dict[str, TcpStream] = field(default_factory=dict)  # per sender worker; empty: no TCP_INFO
    has_sender: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetInputs:
        flat = d.get("flat")
        return cls(Flatness(**flat) if flat else None, d.get("inflight_median"),
                   {w: TcpStream(**t) for w, t in d.get("tcp", {}).items()}, d.get("has_sender", True))


def tcp_streams(sender: TraceData) -> dict[str, TcpStream]:
    """Per sender worker, its TCP_INFO summary (empty when the counters are absent)."""
    fields: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for ev in sender.counters:
        m = _TCP.match(ev.name)
        if m:
            fields.setdefault(m["worker"], {}).setdefault(m["field"], []).append((ev.ts, ev.value))
    tot = sender.counter_totals
    out: dict[str, TcpStream] = {}
    for worker, f in fields.items():
        def delta(name: str, worker: str = worker) -> float:  # cumulative: exact from the totals
            c = tot.get(f"{worker} tcp {name}")
            return c.maximum - c.minimum if c is not None and c.count > 1 else 0.0
        rtts = [v for _t, v in f.get("rtt_us", [])]
        stamps = [t for samples in f.values() for t, _v in samples]
        rtt_tot = tot.get(f"{worker} tcp rtt_us")
        if not rtts or len(stamps) < 2:
            continue
        out[worker] = TcpStream(
            rtt_min_us=rtt_tot.minimum if rtt_tot is not None else min(rtts), rtt_median_us=statistics.median(rtts),
            retrans=delta("retrans"), busy_us=delta("busy_us"), rwnd_limited_us=delta("rwnd_limited_us"),
            sndbuf_limited_us=delta("sndbuf_limited_us"), span_us=(max(stamps) - min(stamps)) / 1000,
        )
    return out


def net_inputs(sender: TraceData | None, receiver: TraceData | None) -> NetInputs:
    """The classification's inputs from the recordings."""
    flat = flatness(receiver) or flatness(sender)
    if sender is None:
        return NetInputs(flat, has_sender=False)
    queued = [ev.value for ev in sender.counters if _INFLIGHT.match(ev.name) and ev.value >= 0]
    return NetInputs(flat, statistics.median(queued) if queued else None, tcp_streams(sender))


def _with_tcp_info(streams: dict[str, TcpStream], flat: str) -> NetClass:
    n = len(streams)
    busy = sum(s.busy_us for s in streams.values())
    span = sum(s.span_us for s in streams.values())
    if span > 0 and busy / span < BUSY_MIN:
        return NetClass("stream-limited", f"TCP_INFO: the connections had data in flight {100 * busy / span:.0f}% "
                        f"of the time: the sender held data back (-l pacing); {flat}")
    limited = {"receive window": sum(s.rwnd_limited_us for s in streams.values()),
               "send buffer": sum(s.sndbuf_limited_us for s in streams.values())}
    which = max(limited, key=lambda k: limited[k])
    if busy > 0 and limited[which] / busy >= WINDOW_LIMITED:
        return NetClass("window-limited", f"TCP_INFO: {n} streams limited by the {which} "
                        f"{100 * limited[which] / busy:.0f}% of their busy time; {flat}")
    rtt_min = min(s.rtt_min_us for s in streams.values())
    rtt_med = statistics.median(s.rtt_median_us for s in streams.values())
    retrans = sum(s.retrans for s in streams.values())
    rtts = f"RTT median {rtt_med / 1000:.2f} ms, smallest {rtt_min / 1000:.2f} ms"
    if retrans > 0 or (rtt_med >= QUEUE_RTT * rtt_min and rtt_med - rtt_min >= QUEUE_MIN_US):
        return NetClass("link-saturated", f"TCP_INFO: congestion at the bottleneck ({rtts}, "
                        f"{retrans:.0f} segments retransmitted); {flat}")
    return NetClass("window-limited", f"TCP_INFO: no queue and no loss ({rtts}): each of {n} streams moves its "
                    f"congestion window per RTT; {flat}")


def classify(net: NetInputs) -> NetClass:
    """The kind of network limit, from TCP_INFO when recorded, else from queues and rates."""
    flat = net.flat
    flat_text = flat.text() if flat is not None else "too short to judge the total rate"
    if not net.has_sender:
        return NetClass("undetermined", f"no sender trace; {flat_text}", ("no sender trace",))
    if net.tcp:
        return _with_tcp_info(net.tcp, flat_text)
    no_tcp = ("sender: no TCP_INFO (rtt, cwnd, retransmits): link and window limits told apart by rates only",)
    queued = net.inflight_median
    if queued is not None and queued < PACED_QUEUE:
        return NetClass("stream-limited", f"send queues nearly empty while the sender waited (median "
                        f"{queued / 1024:.0f} KiB in flight): the sender held data back (-l pacing); {flat_text}",
                        no_tcp)
    if flat is not None and flat.cv <= FLAT_CV:
        median = f"median {queued / 1024:.0f} KiB" if queued is not None else "not sampled"
        return NetClass("link-saturated", f"send queues full ({median} in flight) and {flat_text}: one fixed "
                        "rate shared by the streams", no_tcp)
    return NetClass("undetermined", flat_text, no_tcp)


__all__ = ["NetClass", "NetInputs", "TcpStream", "Flatness", "classify", "flatness", "net_inputs", "tcp_streams"]
