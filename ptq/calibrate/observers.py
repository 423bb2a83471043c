"""Streaming range observers: fixed-size state, updated one batch at a time.

Every observer has ``update(x)``, ``merge(other)`` and ``range() -> (lo, hi)``. State never grows
with the number of samples, so calibrating on 10,000 samples takes the memory of one.
NaN and +/-inf are ignored (a model that emits them on some input should not poison the range).
"""

from __future__ import annotations

import math

import numpy as np


def finite_values(x: np.ndarray) -> np.ndarray | None:
    """The finite values of a float array, or None when there are none (or it is not float)."""
    x = np.asarray(x)
    if x.size == 0 or not np.issubdtype(x.dtype, np.floating):
        return None
    finite = x if np.all(np.isfinite(x)) else x[np.isfinite(x)]
    return finite if finite.size else None


class MinMaxObserver:
    """Running minimum and maximum. ``merge`` is exact and associative."""

    def __init__(self) -> None:
        self.lo = math.inf
        self.hi = -math.inf
        self.count = 0  # finite values seen

    def update(self, x: np.ndarray) -> None:
        finite = finite_values(x)
        if finite is None:
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


class HistogramObserver:
    """A fixed number of equal-width bins over the running ``[lo, hi]`` of the data.

    When a batch falls outside the current range the range widens (to the batch's extremes,
    rounded outwards to a power-of-two multiple of the old width, so re-binning happens
    O(log range) times) and the old counts are re-binned: each old bin's count is spread over the
    new bins it overlaps in proportion to the overlap. ``merge`` re-bins both histograms onto
    the union range; it is associative up to that re-binning.
    """

    def __init__(self, bins: int = 2048) -> None:
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.float64)
        self.lo = 0.0
        self.hi = 0.0
        self.minmax = MinMaxObserver()

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def _widen(self, lo: float, hi: float) -> None:
        if self.minmax.count == 0 or self.hi == self.lo:
            self.counts = _rebin(self.counts, self.lo, self.hi, lo, hi) if self.counts.sum() else self.counts
            self.lo, self.hi = lo, hi
            return
        width = self.hi - self.lo
        new_lo, new_hi = self.lo, self.hi
        while new_lo > lo or new_hi < hi:  # grow by doubling: amortised re-binning
            if new_lo > lo:
                new_lo -= width
            if new_hi < hi:
                new_hi += width
            width *= 2
        self.counts = _rebin(self.counts, self.lo, self.hi, new_lo, new_hi)
        self.lo, self.hi = new_lo, new_hi

    def update(self, x: np.ndarray) -> None:
        finite = finite_values(x)
        if finite is None:
            return
        xmin, xmax = float(finite.min()), float(finite.max())
        first = self.minmax.count == 0
        self.minmax.update(finite)
        if first:
            self.lo, self.hi = xmin, _resolvable_hi(xmin, xmax, self.bins)
        elif xmin < self.lo or xmax > self.hi:
            self._widen(min(xmin, self.lo), max(xmax, self.hi))
        if finite.dtype != np.float64 and max(abs(xmin), abs(xmax)) > 1e30:
            finite = finite.astype(np.float64)  # float32 bin edges overflow near float32's limit
        hist, _ = np.histogram(finite, bins=self.bins, range=(self.lo, self.hi))
        self.counts += hist

    def merge(self, other: "HistogramObserver") -> "HistogramObserver":
        if other.minmax.count == 0:
            return self
        if self.minmax.count == 0:
            self.lo, self.hi, self.counts = other.lo, other.hi, other.counts.copy()
            self.minmax.merge(other.minmax)
            return self
        lo, hi = min(self.lo, other.lo), max(self.hi, other.hi)
        self.counts = _rebin(self.counts, self.lo, self.hi, lo, hi) + _rebin(other.counts, other.lo, other.hi, lo, hi)
        self.lo, self.hi = lo, hi
        self.minmax.merge(other.minmax)
        return self

    def range(self) -> tuple[float, float]:
        """The observed min/max (range estimators in ``ranges`` use the histogram)."""
        return self.minmax.range()


def _resolvable_hi(lo: float, hi: float, bins: int) -> float:
    """``hi``, raised if needed so that ``bins`` equal bins over ``[lo, hi]`` are distinct floats
    (a constant or nearly constant tensor would otherwise make zero-width bins)."""
    floor = max(abs(lo), abs(hi), 1e-30) * 1e-6 * bins
    return max(hi, lo + floor)


def _rebin(counts: np.ndarray, lo: float, hi: float, new_lo: float, new_hi: float) -> np.ndarray:
    """Spread ``counts`` (equal bins over [lo, hi]) onto as many equal bins over [new_lo, new_hi]."""
    bins = counts.size
    if counts.sum() == 0 or hi <= lo:
        out = np.zeros(bins)
        if counts.sum():
            index = min(int((lo - new_lo) / (new_hi - new_lo) * bins), bins - 1)
            out[index] = counts.sum()
        return out
    old_edges = np.linspace(lo, hi, bins + 1)
    new_edges = np.linspace(new_lo, new_hi, bins + 1)
    # Cumulative mass at each new edge, by linear interpolation of the old cumulative counts.
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    at_new_edges = np.interp(new_edges, old_edges, cumulative, left=0.0, right=cumulative[-1])
    return np.diff(at_new_edges)
