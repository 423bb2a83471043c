"""Gates: thresholds validated up front, each gate passing and failing, missing figures failing."""

import math

import pytest

from ptq.errors import UsageError
from ptq.report import gates

FIGURES = {"size_ratio": 0.3, "speedup": 1.4, "cosine": 0.95, "sqnr_db": 11.3, "top1": None}


def run(**thresholds):
    return gates.evaluate(gates.check_thresholds(thresholds), FIGURES, {"top1": "does not apply"})


@pytest.mark.parametrize(
    ("key", "passing", "failing"),
    [("max_size_ratio", 0.5, 0.1), ("min_speedup", 1.0, 100.0), ("min_cosine", 0.9, 0.999), ("min_sqnr", 10.0, 30.0)],
)
def test_each_gate_passes_and_fails(key, passing, failing):
    (ok,) = run(**{key: passing})
    (bad,) = run(**{key: failing})
    assert ok.passed and not bad.passed
    assert ok.value == bad.value == FIGURES[ok.figure]
    assert bad.option in bad.message and f"{failing:g}" in bad.message


def test_boundary_is_inclusive():
    (r,) = run(max_size_ratio=0.3)
    assert r.passed
    (r,) = run(min_cosine=0.95)
    assert r.passed


def test_missing_figure_fails_with_reason():
    (r,) = run(min_top1=0.5)
    assert not r.passed and r.value is None
    assert "does not apply" in r.message


def test_order_follows_gate_table():
    results = run(min_top1=0.1, max_size_ratio=1, min_sqnr=1)
    assert [r.key for r in results] == ["max_size_ratio", "min_sqnr", "min_top1"]


def test_infinite_sqnr_passes():
    (r,) = gates.evaluate({"min_sqnr": 100.0}, {"sqnr_db": math.inf})
    assert r.passed and "inf" in r.message


@pytest.mark.parametrize(
    "thresholds",
    [{"min_top1": 99.0}, {"min_cosine": 1.5}, {"max_size_ratio": 0.0}, {"min_speedup": -1.0}, {"min_sqnr": math.nan}],
)
def test_impossible_thresholds_are_usage_errors(thresholds):
    with pytest.raises(UsageError):
        gates.check_thresholds(thresholds)


def test_unset_thresholds_are_dropped():
    assert gates.check_thresholds({"min_cosine": None, "min_sqnr": 20}) == {"min_sqnr": 20.0}
