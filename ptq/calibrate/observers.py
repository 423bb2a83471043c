"""Streaming range observers: fixed-size state, updated one batch at a time.

Every observer has ``update(x)``, ``merge(other)`` and ``range() -> (lo, hi)``. State never grows
with the number of samples, so calibrating on 10,000 samples takes the memory of one.
NaN and +/-inf are ignored (a model that emits them on some input should not poison the range).
"""

from __future__ import annotations

import math

import numpy as np


def finite_extremes(x: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """``(finite values, min, max)`` of a float array, or None when it has no finite value.

    One min and one max pass in the common all-finite case (a NaN or an infinity shows in them);
    the finite values are filtered out only when there is something to filter."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.size == 0 or x.dtype.kind != "f":
        return None
    lo, hi = float(x.min()), float(x.max())
    if -math.inf < lo and hi < math.inf:  # False for a NaN too
        return x, lo, hi
    finite = x[np.isfinite(x)]
    if not finite.size:
        return None
    return finite, float(finite.min()), float(finite.max())


class MinMaxObserver:
    """Running minimum and maximum. ``merge`` is exact and associative."""

    def __init__(self) -> None:
        self.lo = math.inf
        self.hi = -math.inf
        self.count = 0  # finite values seen

    def update(self, x: np.ndarray) -> None:
        found = finite_extremes(x)
        if found is None:
            return
        finite, lo, hi = found
        self._add(lo, hi, int(finite.size))

    def _add(self, lo: float, hi: float, count: int) -> None:
        self.lo = min(self.lo, lo)
        self.hi = max(self.hi, hi)
        self.count += count

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


# Large updates count the bulk of the distribution from a sample of the values and the tails
# exactly. Binning costs about 2.6 ns a value (2-core EPYC), which made the observer thread,
# not onnxruntime, the bottleneck of calibrating YOLOv8n (14 M observed values a sample). Every
# range estimator decides in the tails (percentile cuts at 99.99 %, MSE and entropy clip where
# the few extreme values are), so those bins get every value; the bulk bins only weigh the
# rounding error, and from a stride sample of a quarter million values or more their counts are
# within a percent or so.
SAMPLED_MIN_VALUES = 1 << 16  # smaller updates are counted exactly
TAIL_MASS = 0.002  # fraction of the mass seen so far on each side whose bins are counted exactly
SAMPLE_STRIDES = (7, 11, 13)  # a prime that does not divide the innermost axis (no aliasing)


class HistogramObserver:
    """A fixed number of equal-width bins over the running ``[lo, hi]`` of the data.

    When a batch falls outside the current range the range widens (to the batch's extremes,
    rounded outwards to a power-of-two multiple of the old width, so re-binning happens
    O(log range) times) and the old counts are re-binned: each old bin's count is spread over the
    new bins it overlaps in proportion to the overlap. ``merge`` re-bins both histograms onto
    the union range; it is associative up to that re-binning.

    An update of ``SAMPLED_MIN_VALUES`` or more values, after the first, counts the bins holding
    the outer ``TAIL_MASS`` of the mass seen so far on each side exactly and the bins between
    them from every ``stride``-th value, weighted by the stride (``sampled_bin_counts``).
    Min/max are always exact. ``exact=True`` counts every value.
    """

    def __init__(self, bins: int = 2048, exact: bool = False) -> None:
        self.bins = bins
        self.exact = exact
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
        found = finite_extremes(x)
        if found is None:
            return
        finite, xmin, xmax = found
        first = self.minmax.count == 0
        self.minmax._add(xmin, xmax, int(finite.size))
        if first:
            self.lo, self.hi = xmin, _resolvable_hi(xmin, xmax, self.bins)
        elif xmin < self.lo or xmax > self.hi:
            self._widen(min(xmin, self.lo), max(xmax, self.hi))
        bulk = None if first or self.exact or finite.size < SAMPLED_MIN_VALUES else bulk_bins(self.counts, TAIL_MASS)
        if bulk is None:
            self.counts += bin_counts(finite, self.lo, self.hi, self.bins, xmin, xmax)
        else:
            stride = sample_stride(x.shape)
            self.counts += sampled_bin_counts(finite, self.lo, self.hi, self.bins, bulk, stride, xmin, xmax)

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


# ---------------------------------------------------------------------- observers derived from others


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _logit(y):
    y = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return np.log(y) - np.log1p(-y)


def _arctanh(y):
    with np.errstate(divide="ignore"):
        return np.arctanh(np.clip(np.asarray(y, dtype=np.float64), -1.0, 1.0))


# Strictly increasing elementwise functions: (forward, inverse) in float64.
MONOTONE = {"Sigmoid": (_sigmoid, _logit), "Tanh": (np.tanh, _arctanh)}


def affine(slope: float, offset: float):
    """``(forward, inverse)`` of ``x * slope + offset``, ``slope > 0`` (a Mul, Div, Add or Sub
    by a constant): its image histogram is the source's, bin for bin, on mapped edges."""
    if not slope > 0:
        raise ValueError("affine image needs a positive slope")
    return (lambda x: np.asarray(x, dtype=np.float64) * slope + offset), (lambda y: (np.asarray(y, dtype=np.float64) - offset) / slope)


def image(observer, function):
    """The observer of ``f(x)`` for a strictly increasing ``f`` given as ``function = (forward,
    inverse)`` (``MONOTONE[op]`` or ``affine(...)``), made from ``observer`` (of ``x``) without
    seeing the values.

    Min and max map exactly (up to the last bit of onnxruntime's own ``f``). Each new bin's
    count is the source's cumulative count between the preimages of its edges, interpolated
    within source bins as ``merge``'s re-binning does; so a percentile of the image is the image
    of the percentile, and MSE and entropy see the same distribution binned anew."""
    forward, inverse = function
    if isinstance(observer, MinMaxObserver):
        out = MinMaxObserver()
        if observer.count:
            out._add(float(forward(observer.lo)), float(forward(observer.hi)), observer.count)
        return out
    out = HistogramObserver(observer.bins, observer.exact)
    if observer.minmax.count == 0:
        return out
    out.minmax._add(float(forward(observer.minmax.lo)), float(forward(observer.minmax.hi)), observer.minmax.count)
    lo, hi = float(forward(observer.lo)), float(forward(observer.hi))
    hi = _resolvable_hi(lo, hi, out.bins)
    cumulative = np.concatenate([[0.0], np.cumsum(observer.counts)])
    preimages = inverse(np.linspace(lo, hi, out.bins + 1))
    at_edges = np.interp(preimages, observer.edges, cumulative, left=0.0, right=cumulative[-1])
    out.counts, out.lo, out.hi = np.diff(at_edges), lo, hi
    return out


def union(observers: list):
    """The observer of the values of all ``observers`` together (a Concat of their tensors)."""
    out = HistogramObserver(observers[0].bins, observers[0].exact) if isinstance(observers[0], HistogramObserver) else MinMaxObserver()
    for observer in observers:
        out.merge(observer)
    return out


# Bin indices are cast to int32, not intp: numpy's bincount widens them itself, and the narrow
# cast plus that widening cost 1.45 ns a value against 1.75 for an intp cast (2-core EPYC).
# Values binned per step: bounds the temporaries (a float and an index per value) to about
# 1 MB, which stay in cache (65536 measured 10% faster a value than 262144 on the EPYC).
_BLOCK = 1 << 16
# sampled_bin_counts makes a dozen numpy calls a block on mostly 1-byte temporaries: larger
# blocks spend less on call overhead (1.54 -> 1.43 ns a value from 65536 to 262144).
_SAMPLED_BLOCK = 1 << 18


def bin_counts(
    x: np.ndarray, lo: float, hi: float, bins: int, xmin: float | None = None, xmax: float | None = None
) -> np.ndarray:
    """Counts of ``x`` (all within ``[lo, hi]``) in ``bins`` equal bins over ``[lo, hi]``.

    Bin ``floor((x - lo) * bins / (hi - lo))``, the top edge in the last bin, computed in
    float32 for float32 data (float64 near float32's limit, where the product could overflow):
    what ``np.histogram`` does without its exact-edge corrections, which cost two thirds of its
    time and move only values within rounding of a bin edge to the neighbouring bin.

    The position is monotone in ``x`` (a rounded subtraction and a rounded multiplication by a
    positive number never reverse an order), so the positions of ``x``'s extremes (``xmin`` and
    ``xmax`` when known, else found here) bound all of them. When those lie in ``(-1, bins + 1)``,
    as they do for values within ``[lo, hi]``, truncation already sends ``(-1, 0)`` to bin 0 and
    only the index ``bins`` (the top edge) needs folding into the last bin: the same counts as
    clipping every position first, one pass fewer.
    """
    flat = x.reshape(-1)
    dtype, lo_t, scale, clip = _positions(flat, lo, hi, bins, xmin, xmax)
    counts = None
    for start in range(0, flat.size, _BLOCK):
        position = np.subtract(flat[start : start + _BLOCK], lo_t, dtype=dtype)
        position *= scale
        if clip:
            np.clip(position, 0, bins - 1, out=position)
        block = np.bincount(position.astype(np.int32), minlength=bins + 1)
        counts = block if counts is None else counts + block
    if counts is None:
        return np.zeros(bins, dtype=np.int64)
    counts[bins - 1] += counts[bins]
    return counts[:bins]


def _positions(flat: np.ndarray, lo: float, hi: float, bins: int, xmin, xmax):
    """``(dtype, lo, scale, clip)`` of ``bin_counts``' position arithmetic for ``flat``."""
    dtype = np.float32 if flat.dtype.itemsize <= 4 and max(abs(lo), abs(hi)) <= 1e30 else np.float64
    lo_t, scale = dtype(lo), dtype(bins / (hi - lo))
    if xmin is None or xmax is None:
        xmin, xmax = flat.min(), flat.max()
    ends = np.subtract(np.array([xmin, xmax], dtype=flat.dtype), lo_t, dtype=dtype)
    ends *= scale
    return dtype, lo_t, scale, not (ends[0] > -1 and ends[1] < bins + 1)


def bulk_bins(counts: np.ndarray, tail_mass: float) -> tuple[int, int] | None:
    """``(first, end)``: bins ``[first, end)`` lie between the lowest and the highest
    ``tail_mass`` of ``counts``' mass (bins holding part of a tail belong to the tail); None
    when no bin does (or nothing was counted yet)."""
    cumulative = np.cumsum(counts)
    total = float(cumulative[-1]) if cumulative.size else 0.0
    if total <= 0:
        return None
    first = int(np.searchsorted(cumulative, tail_mass * total, side="right")) + 1
    end = int(np.searchsorted(cumulative, (1.0 - tail_mass) * total, side="left"))
    return (first, end) if end > first else None


def sample_stride(shape: tuple[int, ...]) -> int:
    """The first of ``SAMPLE_STRIDES`` that does not divide the innermost axis, so a stride
    sample of a feature map visits every column (and so every border) alike."""
    inner = shape[-1] if shape else 1
    return next((p for p in SAMPLE_STRIDES if inner % p), SAMPLE_STRIDES[-1] + 4)  # 17


def sampled_bin_counts(
    x: np.ndarray,
    lo: float,
    hi: float,
    bins: int,
    bulk: tuple[int, int],
    stride: int,
    xmin: float | None = None,
    xmax: float | None = None,
) -> np.ndarray:
    """``bin_counts`` with the bins outside ``bulk = (first, end)`` counted exactly and those
    inside from the values at flat indices ``0, stride, 2 * stride, ...``, times ``stride``.

    The tails are picked by value (below the edge of bin ``first``, from the edge of bin
    ``end``), which spares computing a bin for every value; a value within rounding of one of
    those two edges may be binned on the other side of it, as in ``bin_counts``. Deterministic:
    the sample is fixed by the array alone.
    """
    flat = x.reshape(-1)
    dtype, lo_t, scale, clip = _positions(flat, lo, hi, bins, xmin, xmax)
    first, end = bulk
    width = (hi - lo) / bins
    low_edge, high_edge = flat.dtype.type(lo + first * width), flat.dtype.type(lo + end * width)

    def binned(values: np.ndarray) -> np.ndarray:
        position = np.subtract(values, lo_t, dtype=dtype)
        position *= scale
        if clip:
            np.clip(position, 0, bins - 1, out=position)
        return np.bincount(position.astype(np.int32), minlength=bins + 1)

    counts = np.zeros(bins + 1, dtype=np.int64)
    sampled = np.zeros(bins + 1, dtype=np.int64)
    size = min(_SAMPLED_BLOCK, flat.size)
    low, high = np.empty(size, dtype=bool), np.empty(size, dtype=bool)
    for start in range(0, flat.size, _SAMPLED_BLOCK):
        block = flat[start : start + _SAMPLED_BLOCK]
        n = block.size
        np.less(block, low_edge, out=low[:n])
        np.greater_equal(block, high_edge, out=high[:n])
        np.logical_or(low[:n], high[:n], out=low[:n])
        tails = block[low[:n]]
        if tails.size:
            counts += binned(tails)
        sampled += binned(block[(-start) % stride :: stride])
    sampled[:first] = 0
    sampled[end:] = 0
    counts += sampled * stride
    counts[bins - 1] += counts[bins]
    return counts[:bins]


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
