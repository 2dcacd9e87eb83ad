"""Human units: parse sizes (4M, 1GiB) and rates (-l: 5000, 100M, 1Gbit), format bytes and rates.

One unit system for everything escp prints (progress, the Complete line, --stats): decimal
SI units, as network rates and `-l` are written: 1 kB = 1000 B, 1 MB/s = 10^6 B/s, and with
--bits 1 Mbit/s = 10^6 bit/s. Only block sizes (--blocksize 4M) are binary, as in dd.
"""

from __future__ import annotations

import re

from .errors import UsageError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)?\s*$", re.IGNORECASE)
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])(i?))?\s*(bits?|bps|b|)(?:/s)?\s*$", re.IGNORECASE)
_POW = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
BARE_RATE_UNIT = 1000 / 8  # a bare -l number is Kbit/s, as in scp: bytes per second per unit
SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
BYTE_RATE_UNITS = ("B/s", "kB/s", "MB/s", "GB/s", "TB/s")
BIT_RATE_UNITS = ("bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s")


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
    """Parse -l RATE into bytes per second for the whole transfer.

    A bare number is Kbit/s, as scp's -l (`5000` = 5 Mbit/s = 625 kB/s). With a unit, the
    unit says it: K/M/G/T alone or with B are decimal bytes (`100M` = 100 MB/s), with i binary
    bytes (`100Mi`, `100MiB`); `bit`, `bits` or `bps` are decimal bits (`1Gbit` = 125 MB/s).
    """
    m = _RATE_RE.match(str(text))
    if not m:
        raise UsageError(f"invalid rate {text!r} (expected Kbit/s as in scp, e.g. 5000, or with a unit: "
                         f"100M, 1Gbit)")
    number, prefix, binary, unit = m.group(1), (m.group(2) or "").lower(), m.group(3), m.group(4).lower()
    if not prefix and not unit:
        value = float(number) * BARE_RATE_UNIT
    else:
        value = float(number) * ((1024 if binary else 1000) ** _POW[prefix])
        if unit in ("bit", "bits", "bps"):
            value /= 8
    if value < 1:
        raise UsageError(f"invalid rate {text!r} (must be at least 1 byte/s)")
    return int(value)


def _scaled(value: float, units: tuple[str, ...]) -> tuple[float, str]:
    for unit in units:
        if abs(value) < 1000 or unit == units[-1]:
            return value, unit
        value /= 1000
    return value, units[-1]  # not reached: the last unit always matches


def format_bytes(n: float) -> str:
    """A size in decimal units: `512 B`, `150.00 MB`."""
    v, unit = _scaled(float(n), SIZE_UNITS)
    return f"{v:.0f} {unit}" if unit == "B" else f"{v:.2f} {unit}"


def format_rate(bytes_per_s: float, *, bits: bool = False) -> str:
    """A rate in decimal units: `35.35 MB/s`, or with bits `282.80 Mbit/s`."""
    v, unit = _scaled(bytes_per_s * 8 if bits else bytes_per_s, BIT_RATE_UNITS if bits else BYTE_RATE_UNITS)
    return f"{v:.2f} {unit}"
