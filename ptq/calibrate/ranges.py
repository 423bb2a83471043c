"""Range estimators: pure functions from a histogram to a clipping range ``(lo, hi)``.

Each takes ``counts`` (equal-width bins) and ``edges`` (``len(counts) + 1`` bin edges) and returns
the range the quantizer should map onto 8 bits. Clipping a few outliers buys resolution for the
bulk of the values; the estimators differ in how they trade the two.
"""

from __future__ import annotations

import numpy as np

from ptq import qmath


def percentile_range(counts: np.ndarray, edges: np.ndarray, percentile: float) -> tuple[float, float]:
    """Clip ``100 - percentile`` percent of the mass off each tail (interpolated within bins)."""
    total = counts.sum()
    if total <= 0:
        return float(edges[0]), float(edges[-1])
    tail = (100.0 - percentile) / 100.0 * total
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    lo = float(np.interp(tail, cumulative, edges))
    hi = float(np.interp(total - tail, cumulative, edges))
    return lo, hi


def quantization_mse(counts: np.ndarray, centers: np.ndarray, lo: float, hi: float, levels: int = 256) -> float:
    """Expected squared error of quantizing the histogram's mass onto ``levels`` codes over
    ``[lo, hi]`` (widened to contain 0, as the quantizer does): clipping error for mass outside,
    rounding error ``scale^2 / 12`` for mass inside."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / (levels - 1), float(qmath.MIN_SCALE))
    clipped = np.clip(centers, lo, hi)
    clip_error = (centers - clipped) ** 2
    inside = (centers >= lo) & (centers <= hi)
    rounding = np.where(inside, scale * scale / 12.0, 0.0)
    total = counts.sum()
    return float(np.dot(counts, clip_error + rounding) / total) if total else 0.0


def mse_range(counts: np.ndarray, edges: np.ndarray, candidates: int = 200) -> tuple[float, float]:
    """The range minimising :func:`quantization_mse`, among ranges that shrink ``[lo, hi]``
    towards 0 by a common factor, and ranges that shrink only the longer tail.

    All candidates are scored at once from prefix sums (:func:`quantization_mse_many`), in the
    order a loop would try them (the full range, then per factor: both ends, the top, the bottom);
    the first smallest error wins, as a strict ``<`` in that loop would pick."""
    centers = (edges[:-1] + edges[1:]) / 2
    lo, hi = min(float(edges[0]), 0.0), max(float(edges[-1]), 0.0)
    factors = np.linspace(1.0, 0.05, candidates)[1:]
    los = np.concatenate([[lo], np.stack([lo * factors, np.full_like(factors, lo), lo * factors], axis=1).ravel()])
    his = np.concatenate([[hi], np.stack([hi * factors, hi * factors, np.full_like(factors, hi)], axis=1).ravel()])
    best = int(np.argmin(quantization_mse_many(counts, centers, los, his)))
    return float(los[best]), float(his[best])


def quantization_mse_many(
    counts: np.ndarray, centers: np.ndarray, los: np.ndarray, his: np.ndarray, levels: int = 256
) -> np.ndarray:
    """:func:`quantization_mse` of every range ``(los[i], his[i])``, in O(bins + ranges).

    With the bins sorted, the clipping error below ``lo`` is ``sum c (lo - x)^2`` over the bins
    with ``x < lo``, expanded into prefix sums of ``c``, ``c u``, ``c u^2`` (``u = x - x_0``, so
    the terms stay the size of the range, not of ``|x|``); above ``hi`` likewise from the top.
    Measured on the histograms of YOLOv8n and MiniLM (374 tensors, 598 ranges each): every
    error within 3e-13 (relative) of :func:`quantization_mse`, the same range chosen for every
    tensor, 60x faster than one call per range (3.7 s -> 0.06 s on YOLOv8n)."""
    lo, hi = np.minimum(los, 0.0), np.maximum(his, 0.0)
    scale = np.maximum((hi - lo) / (levels - 1), float(qmath.MIN_SCALE))
    total = counts.sum()
    if not total:
        return np.zeros(lo.size)
    start = np.zeros(1)
    up = centers - centers[0]
    down = (centers[-1] - centers)[::-1]
    reversed_counts = counts[::-1]
    below0, below1, below2 = (np.concatenate([start, np.cumsum(counts * up**k)]) for k in range(3))
    above0, above1, above2 = (np.concatenate([start, np.cumsum(reversed_counts * down**k)]) for k in range(3))
    n_below = np.searchsorted(centers, lo, side="left")  # bins with x < lo
    n_upto = np.searchsorted(centers, hi, side="right")  # bins with x <= hi
    n_above = centers.size - n_upto
    low_gap, high_gap = lo - centers[0], centers[-1] - hi
    below = low_gap * low_gap * below0[n_below] - 2 * low_gap * below1[n_below] + below2[n_below]
    above = high_gap * high_gap * above0[n_above] - 2 * high_gap * above1[n_above] + above2[n_above]
    inside = below0[n_upto] - below0[n_below]
    return (np.maximum(below, 0.0) + np.maximum(above, 0.0) + inside * (scale * scale / 12.0)) / total


def entropy_range(counts: np.ndarray, edges: np.ndarray, levels: int = 128, candidates: int = 256) -> tuple[float, float]:
    """TensorRT-style KL-divergence threshold on the magnitude histogram.

    The histogram of ``|x|`` is cut at candidate thresholds spread evenly from ``levels`` bins to
    the end (``candidates`` of them: a real search, unlike a bin count that leaves one); the cut
    distribution, with the clipped mass folded into its last bin, is compared with its
    ``levels``-level quantized version, and the threshold with the smallest KL divergence wins.
    The range is the data's range clipped to ``[-T, T]``.
    """
    magnitude, top = _magnitude_histogram(counts, edges)
    bins = magnitude.size
    if magnitude.sum() == 0 or bins <= levels:
        return float(edges[0]), float(edges[-1])
    best_kl, best_i = np.inf, bins
    for i in np.unique(np.linspace(levels, bins, candidates).astype(int)):
        reference = magnitude[:i].copy()
        reference[-1] += magnitude[i:].sum()
        kl = _kl(reference, _requantize(magnitude[:i], levels))
        if kl < best_kl:
            best_kl, best_i = kl, int(i)
    threshold = top * best_i / bins
    return max(float(edges[0]), -threshold), min(float(edges[-1]), threshold)


def _magnitude_histogram(counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, float]:
    """Histogram of |x| with as many bins as ``counts``, over [0, max |edge|]."""
    top = float(max(abs(edges[0]), abs(edges[-1])))
    bins = counts.size
    centers = np.abs((edges[:-1] + edges[1:]) / 2)
    index = np.minimum((centers / top * bins).astype(int), bins - 1) if top > 0 else np.zeros(bins, int)
    return np.bincount(index, weights=counts, minlength=bins), top


def _requantize(p: np.ndarray, levels: int) -> np.ndarray:
    """Merge ``p`` into ``levels`` groups and spread each group's mass over its non-empty bins."""
    starts = np.linspace(0, p.size, levels + 1).astype(int)[:-1]
    group = np.repeat(np.arange(levels), np.diff(np.append(starts, p.size)))
    nonzero = p > 0
    mass = np.add.reduceat(p, starts)
    filled = np.add.reduceat(nonzero.astype(np.float64), starts)
    per_bin = np.divide(mass, filled, out=np.zeros_like(mass), where=filled > 0)
    return np.where(nonzero, per_bin[group], 0.0)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q_total = q.sum()
    if q_total == 0:
        return np.inf
    q = q / q_total
    mask = p > 0
    if np.any(q[mask] == 0):
        return np.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
