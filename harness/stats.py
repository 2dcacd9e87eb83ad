"""Small statistics for benchmark repeats: summaries (median, IQR, min, max) and the
Mann-Whitney U test (exact distribution for small samples without ties, normal approximation
with tie correction otherwise). Pure functions, no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default 'linear' method)."""
    if not xs:
        raise ValueError("quantile of an empty sample")
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(xs: Sequence[float]) -> float:
    return quantile(xs, 0.5)


def summary(xs: Sequence[float]) -> dict[str, float]:
    if not xs:
        return {}
    return {
        "n": len(xs),
        "median": median(xs),
        "q1": quantile(xs, 0.25),
        "q3": quantile(xs, 0.75),
        "iqr": quantile(xs, 0.75) - quantile(xs, 0.25),
        "min": min(xs),
        "max": max(xs),
    }


def spread_flag(xs: Sequence[float], *, relative: bool = False) -> dict[str, float | bool]:
    """How far the repeats of one measurement spread, against the effect they show.

    For per-round ratios (1.0 = no difference): effect = |median - 1|, spread = max - min, and
    `flagged` when the spread is larger than the effect (the rounds do not agree on it). With
    `relative`, for plain times: spread = (max - min) / median, and no effect or flag."""
    if not xs:
        return {}
    med = median(xs)
    if relative:
        return {"spread": (max(xs) - min(xs)) / med if med else 0.0}
    effect = abs(med - 1.0)
    spread = max(xs) - min(xs)
    return {"effect": effect, "spread": spread, "flagged": spread > effect}


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks (1-based) and the sizes of tie groups."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        r = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = r
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@lru_cache(maxsize=256)
def _u_counts(n: int, m: int) -> tuple[int, ...]:
    """Number of arrangements giving each U value (0..n*m) for samples of sizes n and m."""
    # f(n, m, u) = f(n-1, m, u-m) + f(n, m-1, u)  (the largest element is from x or from y)
    table: dict[tuple[int, int], list[int]] = {}
    for a in range(n + 1):
        for b in range(m + 1):
            if a == 0 or b == 0:
                table[(a, b)] = [1] + [0] * (a * b)
                continue
            row = [0] * (a * b + 1)
            prev_a = table[(a - 1, b)]
            prev_b = table[(a, b - 1)]
            for u in range(a * b + 1):
                if u - b >= 0 and u - b < len(prev_a):
                    row[u] += prev_a[u - b]
                if u < len(prev_b):
                    row[u] += prev_b[u]
            table[(a, b)] = row
    return tuple(table[(n, m)])


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """One-sided Mann-Whitney U test of H1: x tends to be larger than y.

    Returns (U_x, p). U_x counts pairs (xi, yj) with xi > yj (ties count one half).
    """
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        return 0.0, 1.0
    ranks, ties = _ranks(list(x) + list(y))
    u = sum(ranks[:n]) - n * (n + 1) / 2
    if not ties and n * m <= 2500:
        counts = _u_counts(n, m)
        total = sum(counts)
        k = math.ceil(u - 1e-9)
        return u, sum(counts[k:]) / total
    mu = n * m / 2
    big_n = n + m
    tie_term = sum(t**3 - t for t in ties) / (big_n * (big_n - 1)) if big_n > 1 else 0.0
    var = n * m / 12 * ((big_n + 1) - tie_term)
    if var <= 0:
        return u, 1.0
    z = (u - mu - 0.5) / math.sqrt(var)  # continuity correction
    return u, 0.5 * math.erfc(z / math.sqrt(2))
