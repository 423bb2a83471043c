import numpy as np

from ptq.calibrate.observers import MinMaxObserver


def test_minmax_tracks_extremes_and_ignores_non_finite():
    obs = MinMaxObserver()
    obs.update(np.array([1.0, -2.0, np.nan], np.float32))
    obs.update(np.array([np.inf, 5.0, -np.inf], np.float32))
    obs.update(np.array([], np.float32))
    assert obs.range() == (-2.0, 5.0)


def test_minmax_merge_is_associative_and_matches_one_pass():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=50) * (i + 1) for i in range(6)]
    whole = MinMaxObserver()
    for c in chunks:
        whole.update(c)
    parts = []
    for c in chunks:
        o = MinMaxObserver()
        o.update(c)
        parts.append(o)
    left = MinMaxObserver().merge(parts[0]).merge(parts[1]).merge(parts[2])
    right = MinMaxObserver().merge(parts[3]).merge(parts[4]).merge(parts[5])
    assert left.merge(right).range() == whole.range()


def test_nothing_seen_gives_zero_range():
    assert MinMaxObserver().range() == (0.0, 0.0)


def test_state_is_constant_size():
    obs = MinMaxObserver()
    before = set(vars(obs))
    for _ in range(100):
        obs.update(np.ones((8, 8), np.float32))
    assert set(vars(obs)) == before and all(np.isscalar(v) for v in vars(obs).values())


def test_bin_counts_match_numpy_histogram_away_from_bin_edges():
    from ptq.calibrate.observers import bin_counts

    rng = np.random.default_rng(1)
    bins, lo, hi = 64, -4.0, 4.0
    width = (hi - lo) / bins
    x = lo + (rng.integers(0, bins, 300_000) + rng.uniform(0.01, 0.99, 300_000)) * width  # no value near an edge
    x = np.append(x, [lo, hi]).astype(np.float32)  # the extremes: first and last bin
    expected, _ = np.histogram(x, bins=bins, range=(lo, hi))
    assert np.array_equal(bin_counts(x, lo, hi, bins), expected)
    assert bin_counts(x.astype(np.float64), lo, hi, bins).sum() == x.size


def test_histogram_observer_range_and_counts_are_exact_for_minmax_and_total():
    from ptq.calibrate.observers import HistogramObserver

    rng = np.random.default_rng(2)
    obs = HistogramObserver(256)
    chunks = [rng.normal(size=(1, 8, 32, 32)).astype(np.float32) * (i + 1) for i in range(5)]
    chunks[2].flat[7] = np.nan
    chunks[3].flat[9] = np.inf
    for c in chunks:
        obs.update(c)
    finite = np.concatenate([c[np.isfinite(c)] for c in chunks])
    assert obs.range() == (float(finite.min()), float(finite.max()))
    assert obs.counts.sum() == finite.size == obs.minmax.count
    assert obs.lo <= finite.min() and obs.hi >= finite.max()
