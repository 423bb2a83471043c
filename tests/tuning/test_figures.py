"""ptq.tuning.figures: fidelity figures of outputs, targets, the cosine dB scale, --metric loading."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptq.errors import UsageError
from ptq.tuning.figures import MAX_DB, Figures, Target, cosine_db, figures_of, jackknife_spread, load_metric

RNG = np.random.default_rng(0)
REF = [[RNG.normal(size=(1, 10)).astype(np.float32), RNG.normal(size=(1, 32)).astype(np.float32)] for _ in range(4)]


def _noisy(scale_a: float, scale_b: float):
    rng = np.random.default_rng(1)
    return [[a + scale_a * rng.normal(size=a.shape).astype(np.float32),
             b + scale_b * rng.normal(size=b.shape).astype(np.float32)] for a, b in REF]


def test_identical_outputs_are_perfect():
    f = figures_of(["a", "b"], REF, REF)
    assert f.cosine == pytest.approx(1.0) and f.cosine_min == pytest.approx(1.0)
    assert f.sqnr_db > 100


def test_the_worst_output_counts():
    only_b_noisy = figures_of(["a", "b"], REF, _noisy(0.0, 0.1))
    only_a_noisy = figures_of(["a", "b"], REF, _noisy(0.1, 0.0))
    both = figures_of(["a", "b"], REF, _noisy(0.1, 0.1))
    assert 15 < both.sqnr_db < 25  # noise 0.1 on unit signal: ~20 dB
    assert both.sqnr_db == pytest.approx(min(only_a_noisy.sqnr_db, only_b_noisy.sqnr_db), abs=1.5)
    assert both.cosine_min <= both.cosine < 1.0


def test_metric_sees_dicts_per_sample_and_its_value_is_kept(tmp_path, monkeypatch):
    (tmp_path / "my_metric_mod.py").write_text(
        "def score(reference, candidate):\n"
        "    assert set(reference[0]) == {'a', 'b'}\n"
        "    return -sum(float(abs(r['a'] - c['a']).max()) for r, c in zip(reference, candidate))\n"
        "def nan(reference, candidate):\n    return float('nan')\n"
    )
    monkeypatch.chdir(tmp_path)
    metric = load_metric("my_metric_mod:score")
    assert figures_of(["a", "b"], REF, REF, metric).metric == 0.0
    assert figures_of(["a", "b"], REF, _noisy(0.1, 0.0), metric).metric < 0
    with pytest.raises(UsageError, match="returned NaN"):
        load_metric("my_metric_mod:nan")(["a", "b"], REF, REF)
    with pytest.raises(UsageError, match="has no function"):
        load_metric("my_metric_mod:absent")
    with pytest.raises(UsageError, match="cannot import"):
        load_metric("no_such_module_ptq_test:score")
    assert load_metric(None) is None


def test_cosine_db_scale():
    assert cosine_db(0.9) == pytest.approx(10.0)
    assert cosine_db(0.999) == pytest.approx(30.0)
    assert cosine_db(1.0) == MAX_DB and cosine_db(1.5) == MAX_DB


def test_target_misses_met_and_describe():
    f = Figures(sqnr_db=20.0, cosine=0.99, cosine_min=0.95, top1=0.9)
    assert not Target()
    t = Target(cosine=0.995, sqnr_db=15.0)
    assert t and t.misses(f) == ["cosine 0.9900 < 0.995"] and not t.met(f)
    assert Target(cosine=0.98, top1=0.9).met(f)
    assert Target(cosine=0.995, sqnr_db=15).describe() == "cosine >= 0.995, SQNR >= 15 dB"
    with pytest.raises(UsageError, match="class scores"):
        Target(top1=0.5).misses(Figures(20.0, 0.99, 0.95, None))
    assert Target(metric=1.0).misses(f) == ["metric not measured < 1"]  # no metric figure: missed, not a crash


def test_target_rank_and_tightened():
    f = Figures(sqnr_db=25.0, cosine=0.999, cosine_min=0.99, top1=None)
    assert Target(cosine=0.99).rank(f) == pytest.approx(30.0)
    assert Target(sqnr_db=20).rank(f) == 25.0
    tight = Target(cosine=0.99, sqnr_db=20.0, top1=0.8).tightened(10.0)
    assert tight.cosine == pytest.approx(0.999) and tight.sqnr_db == 30.0 and tight.top1 == 0.8
    assert math.isclose(cosine_db(tight.cosine) - cosine_db(0.99), 10.0)


def test_jackknife_spread_is_the_leave_one_out_standard_error_of_the_figure():
    rank = Target(sqnr_db=10.0).rank
    steady = [[a * np.float32(1.05)] for a, _ in REF]  # the same relative error on every sample
    assert jackknife_spread(["a"], [[a] for a, _ in REF], steady, rank) == pytest.approx(0.0, abs=1e-4)
    # one sample far noisier than the rest: the figure hangs on it, and the spread says by how much
    rng = np.random.default_rng(2)
    noisy = [[a + (0.5 if i == 2 else 0.01) * rng.normal(size=a.shape).astype(np.float32)] for i, (a, _) in enumerate(REF)]
    reference = [[a] for a, _ in REF]
    signal = [float(np.sum(np.float64(a) ** 2)) for a, _ in REF]
    noise = [float(np.sum((np.float64(r[0]) - np.float64(c[0])) ** 2)) for r, c in zip(reference, noisy)]
    left_out = [10 * math.log10((sum(signal) - signal[i]) / (sum(noise) - noise[i])) for i in range(4)]
    expected = math.sqrt(3 / 4 * sum((v - np.mean(left_out)) ** 2 for v in left_out))
    got = jackknife_spread(["a"], reference, noisy, rank)
    assert got == pytest.approx(expected, rel=1e-4) and got > 1.0
    assert jackknife_spread(["a"], reference[:2], noisy[:2], rank) == 0.0  # too few samples to say


def test_rank_scale_names_and_places_the_target():
    assert Target(cosine=0.999).rank_level() == pytest.approx(30.0) and "cosine" in Target(cosine=0.999).rank_label()
    assert Target(sqnr_db=25).rank_level() == 25 and "SQNR" in Target(sqnr_db=25).rank_label()
    assert Target(top1=0.9).rank_level() is None
