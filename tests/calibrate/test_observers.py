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
