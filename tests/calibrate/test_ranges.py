import numpy as np
import pytest

from ptq.calibrate import ranges
from ptq.calibrate.observers import HistogramObserver, MinMaxObserver
from ptq.calibrate.runner import choose_range
from ptq.config import CalibrationMethod


def observed(chunks, bins=2048):
    obs = HistogramObserver(bins)
    for c in chunks:
        obs.update(np.asarray(c, np.float32))
    return obs


def test_histogram_rebins_without_losing_mass_and_keeps_fixed_size():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=1000) * (i + 1) + i for i in range(10)]
    obs = observed(chunks)
    assert obs.counts.size == 2048
    assert obs.counts.sum() == pytest.approx(10_000)
    assert obs.range() == pytest.approx((min(c.min() for c in chunks), max(c.max() for c in chunks)))
    assert obs.lo <= obs.range()[0] and obs.hi >= obs.range()[1]


def test_histogram_merge_matches_one_stream_up_to_rebinning():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=5000), rng.normal(size=5000) * 3 + 2
    merged = observed([a]).merge(observed([b]))
    whole = observed([a, b])
    assert merged.counts.sum() == pytest.approx(whole.counts.sum())
    assert merged.range() == whole.range()
    lo_m, hi_m = ranges.percentile_range(merged.counts, merged.edges, 99.0)
    lo_w, hi_w = ranges.percentile_range(whole.counts, whole.edges, 99.0)
    assert lo_m == pytest.approx(lo_w, abs=0.05) and hi_m == pytest.approx(hi_w, abs=0.05)


def test_percentile_clips_outliers_but_keeps_the_bulk():
    x = np.concatenate([np.linspace(-1, 1, 100_000), [50.0]])
    obs = observed([x])
    lo, hi = ranges.percentile_range(obs.counts, obs.edges, 99.99)
    assert -1.01 < lo < -0.99 and 0.99 < hi < 1.1


def test_mse_clips_a_rare_outlier_and_beats_minmax():
    x = np.concatenate([np.random.default_rng(2).uniform(-1, 1, 1_000_000), [40.0]])
    obs = observed([x])
    lo, hi = ranges.mse_range(obs.counts, obs.edges)
    # One value in a million at 40: clipping it to ~17 costs less than the coarser steps it forces.
    assert hi < 20.0 and lo <= -0.9
    centers = (obs.edges[:-1] + obs.edges[1:]) / 2
    assert ranges.quantization_mse(obs.counts, centers, lo, hi) < ranges.quantization_mse(obs.counts, centers, -1, 40)


def _mse_range_by_loop(counts, edges, candidates=200):
    """The one-range-at-a-time search ``mse_range`` replaced (the reference it must match)."""
    centers = (edges[:-1] + edges[1:]) / 2
    lo, hi = min(float(edges[0]), 0.0), max(float(edges[-1]), 0.0)
    best = (ranges.quantization_mse(counts, centers, lo, hi), lo, hi)
    for factor in np.linspace(1.0, 0.05, candidates)[1:]:
        for cand_lo, cand_hi in ((lo * factor, hi * factor), (lo, hi * factor), (lo * factor, hi)):
            err = ranges.quantization_mse(counts, centers, cand_lo, cand_hi)
            if err < best[0]:
                best = (err, cand_lo, cand_hi)
    return best[1], best[2]


@pytest.mark.parametrize(
    "chunks",
    [
        [np.random.default_rng(4).normal(size=100_000)],
        [np.random.default_rng(5).laplace(size=50_000) * 3 + 1, [60.0, -2.0]],
        [np.abs(np.random.default_rng(6).normal(size=20_000)) + 0.5],  # all positive: lo widened to 0
        [-np.abs(np.random.default_rng(7).standard_cauchy(size=20_000))],  # all negative, heavy tail
        [np.concatenate([np.random.default_rng(8).uniform(-1, 1, 1_000_000), [40.0]])],
    ],
)
def test_mse_range_matches_the_one_range_at_a_time_search(chunks):
    obs = observed(chunks)
    centers = (obs.edges[:-1] + obs.edges[1:]) / 2
    assert ranges.mse_range(obs.counts, obs.edges) == _mse_range_by_loop(obs.counts, obs.edges)
    rng = np.random.default_rng(9)
    lo, hi = min(obs.edges[0], 0.0), max(obs.edges[-1], 0.0)
    los = np.concatenate([[obs.edges[0], 0.0], rng.uniform(lo, 0, 50)])
    his = np.concatenate([[obs.edges[-1], 0.0], rng.uniform(0, hi, 50)])
    many = ranges.quantization_mse_many(obs.counts, centers, los, his)
    one = np.array([ranges.quantization_mse(obs.counts, centers, lo, hi) for lo, hi in zip(los, his)])
    np.testing.assert_allclose(many, one, rtol=1e-9, atol=0)


def test_entropy_searches_many_thresholds():
    rng = np.random.default_rng(3)
    x = rng.laplace(size=200_000)
    obs = observed([x])
    lo, hi = ranges.entropy_range(obs.counts, obs.edges)
    # A real search clips a Laplace tail; a single-candidate search would return min/max.
    assert hi < x.max() * 0.9 and lo > x.min() * 0.9


def test_estimators_never_widen_the_observed_range():
    obs = observed([np.array([0.0, 0.5, 1.0])])
    for method in CalibrationMethod:
        lo, hi = choose_range(obs, method, 99.99)
        assert 0.0 <= lo <= hi <= 1.0


def test_constant_tensor_is_safe():
    obs = observed([np.zeros(100)])
    for method in CalibrationMethod:
        lo, hi = choose_range(obs, method, 99.99)
        assert np.isfinite(lo) and np.isfinite(hi)
    assert choose_range(MinMaxObserver(), CalibrationMethod.MINMAX, 99.99) == (0.0, 0.0)


def test_constant_large_values_get_a_resolvable_histogram():
    obs = observed([np.full(100, 1234.5, np.float32), np.full(10, 1234.5001, np.float32)])
    assert obs.counts.sum() == pytest.approx(110)
    lo, hi = choose_range(obs, CalibrationMethod.PERCENTILE, 99.99)
    assert 1234.4 < lo <= hi < 1234.6
