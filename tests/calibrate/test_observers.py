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


def test_sampled_bin_counts_are_exact_in_the_tails_and_close_in_the_bulk():
    from ptq.calibrate.observers import bin_counts, bulk_bins, sampled_bin_counts

    rng = np.random.default_rng(4)
    x = rng.laplace(size=(2, 64, 70, 30)).astype(np.float32)  # 268800 values, heavy tails
    lo, hi, bins = float(x.min()), float(x.max()), 2048
    exact = bin_counts(x, lo, hi, bins)
    first, end = bulk_bins(exact, 0.002)
    assert exact[:first].sum() >= 0.002 * x.size and exact[end:].sum() >= 0.002 * x.size
    sampled = sampled_bin_counts(x, lo, hi, bins, (first, end), 7)
    # Tails (all but the two edge bins, where a value within rounding of the edge may cross)
    assert np.array_equal(sampled[: first - 1], exact[: first - 1]) and np.array_equal(sampled[end + 1 :], exact[end + 1 :])
    assert abs(sampled.sum() / x.size - 1) < 0.005
    # Bulk: coarse bins of the sampled counts within 4 standard deviations of a 1-in-7 sample
    coarse = lambda c: c[first:end][: (end - first) // 16 * 16].reshape(-1, 16).sum(axis=1)  # noqa: E731
    assert np.all(np.abs(coarse(sampled) - coarse(exact)) <= 4 * np.sqrt(7 * coarse(exact)) + 7)
    assert np.array_equal(sampled, sampled_bin_counts(x, lo, hi, bins, (first, end), 7))  # deterministic


def test_sample_stride_never_divides_the_innermost_axis():
    from ptq.calibrate.observers import sample_stride

    assert sample_stride((1, 16, 320, 320)) == 7
    assert sample_stride((1, 64, 224, 224)) == 11  # 224 = 32 * 7
    assert sample_stride((4, 77)) == 13
    assert sample_stride((1001,)) == 17 and sample_stride(()) == 7


def test_large_updates_give_the_ranges_of_exact_counting_within_a_step():
    from ptq.calibrate import ranges
    from ptq.calibrate.observers import SAMPLED_MIN_VALUES, HistogramObserver

    rng = np.random.default_rng(5)
    sampled, exact = HistogramObserver(), HistogramObserver(exact=True)
    for i in range(6):
        x = (rng.standard_t(4, size=SAMPLED_MIN_VALUES + 999) * (1 + 0.1 * i)).astype(np.float32)
        sampled.update(x)
        exact.update(x)
    assert sampled.range() == exact.range() and sampled.minmax.count == exact.minmax.count
    assert not np.array_equal(sampled.counts, exact.counts)  # the sampled path ran
    for estimate in (lambda c, e: ranges.percentile_range(c, e, 99.99), ranges.mse_range, ranges.entropy_range):
        lo, hi = estimate(exact.counts, exact.edges)
        s_lo, s_hi = estimate(sampled.counts, sampled.edges)
        step = (hi - lo) / 255
        assert abs(s_lo - lo) <= step and abs(s_hi - hi) <= step


def test_small_updates_are_counted_exactly():
    from ptq.calibrate.observers import HistogramObserver

    rng = np.random.default_rng(6)
    default, exact = HistogramObserver(), HistogramObserver(exact=True)
    for i in range(4):
        x = rng.normal(size=(1, 16, 40, 40)).astype(np.float32) * (i + 1)
        default.update(x)
        exact.update(x)
    assert np.array_equal(default.counts, exact.counts)
