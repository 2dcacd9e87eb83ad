"""Human units: parse sizes (4M, 1GiB) and rates (100M, 1Gbit), format bytes and rates."""

from __future__ import annotations

import re

from .errors import UsageError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)?\s*$", re.IGNORECASE)
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(bit|bps|b|ib)?(?:/s)?\s*$", re.IGNORECASE)
_POW = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str, *, what: str = "size") -> int:
    """Parse a byte size; suffixes K/M/G/T/P are binary (1024-based), as dd and EScp do."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise UsageError(f"invalid {what} {text!r} (expected e.g. 1M, 256K, 4MiB)")
    value = float(m.group(1)) * (1024 ** _POW[m.group(2).lower()])
    if value != int(value):
        raise UsageError(f"invalid {what} {text!r} (not a whole number of bytes)")
    return int(value)


def parse_rate(text: str) -> int:
    """Parse a rate into bytes per second. '100M' = 100 MB/s (decimal), '1Gbit' = 125 MB/s."""
    m = _RATE_RE.match(str(text))
    if not m:
        raise UsageError(f"invalid rate {text!r} (expected e.g. 100M, 1Gbit, 500K)")
    value = float(m.group(1)) * (1000 ** _POW[m.group(2).lower()])
    unit = (m.group(3) or "").lower()
    if unit in ("bit", "bps"):
        value /= 8
    if value < 1:
        raise UsageError(f"invalid rate {text!r} (must be at least 1 byte/s)")
    return int(value)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def format_rate(bytes_per_s: float, *, bits: bool = False) -> str:
    if bits:
        v, units = bytes_per_s * 8, ("bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s")
    else:
        v, units = bytes_per_s, ("B/s", "kB/s", "MB/s", "GB/s", "TB/s")
    for unit in units:
        if abs(v) < 1000 or unit == units[-1]:
            return f"{v:.2f} {unit}"
        v /= 1000
    return f"{v:.2f} {units[-1]}"
