"""Streaming range observers: fixed-size state, updated one batch at a time.

Every observer has ``update(x)``, ``merge(other)`` and ``range() -> (lo, hi)``. State never grows
with the number of samples, so calibrating on 10,000 samples takes the memory of one.
NaN and +/-inf are ignored (a model that emits them on some input should not poison the range).
"""

from __future__ import annotations

import math

import numpy as np


class MinMaxObserver:
    """Running minimum and maximum. ``merge`` is exact and associative."""

    def __init__(self) -> None:
        self.lo = math.inf
        self.hi = -math.inf
        self.count = 0  # finite values seen

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.size == 0 or not np.issubdtype(x.dtype, np.floating):
            return
        finite = x if np.all(np.isfinite(x)) else x[np.isfinite(x)]
        if finite.size == 0:
            return
        self.lo = min(self.lo, float(finite.min()))
        self.hi = max(self.hi, float(finite.max()))
        self.count += int(finite.size)

    def merge(self, other: "MinMaxObserver") -> "MinMaxObserver":
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)
        self.count += other.count
        return self

    def range(self) -> tuple[float, float]:
        """Observed ``(lo, hi)``; ``(0, 0)`` if nothing finite was seen (gets a safe scale)."""
        if self.count == 0:
            return 0.0, 0.0
        return self.lo, self.hi
