"""ptq.report.build: MeasureOptions checks, json_safe, and compare/bench on two tiny models run by
onnxruntime (fidelity figures against a known perturbation, size ratio, gates, JSON)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ptq.errors import UsageError
from ptq.report.build import MeasureOptions, bench, compare, json_safe
from tests import tiny

W = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    a = tiny.save_matmul(W, folder / "a.onnx")
    b = tiny.save_matmul(W * 1.1, folder / "b.onnx")  # every output 10% larger: cosine 1, SQNR exactly 20 dB
    data = folder / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        np.save(data / f"s{i}.npy", rng.normal(size=(1, 16)).astype(np.float32))
    return a, b, str(data)


def test_measure_options_refuse_impossible_values():
    for kwargs, match in [({"threads": 0}, "--threads"), ({"runs": 0}, "--runs"), ({"warmup": -1}, "--warmup"),
                          ({"samples": 0}, "--eval-samples"),
                          ({"latency": False, "thresholds": {"min_speedup": 1.0}}, "--no-bench"),
                          ({"fidelity": False, "thresholds": {"min_cosine": 0.9}}, "fidelity gates")]:  # fmt: skip
        with pytest.raises(UsageError, match=match):
            MeasureOptions(**kwargs)
    assert MeasureOptions(thresholds={"min_cosine": 0.99}).thresholds == {"min_cosine": 0.99}


def test_json_safe_turns_non_finite_floats_into_strings():
    value = {"a": math.inf, 1: [-math.inf, math.nan, 0.5, (2, "x")], "n": None}
    assert json_safe(value) == {"a": "inf", "1": ["-inf", "nan", 0.5, [2, "x"]], "n": None}
    json.dumps(json_safe(value), allow_nan=False)


def test_compare_measures_the_known_perturbation(pair):
    a, b, data = pair
    options = MeasureOptions(latency=False, thresholds={"min_sqnr": 25.0, "min_cosine": 0.999})
    report = compare(a, b, data, options=options)
    assert report.kind == "compare" and report.labels == ["A", "B"]
    assert report.fidelity.sqnr_db == pytest.approx(20.0, abs=0.01)
    assert report.fidelity.cosine == pytest.approx(1.0, abs=1e-6)
    assert report.size_ratio == pytest.approx(1.0, abs=0.01)
    assert report.speedup is None
    assert [(g.key, g.passed) for g in report.gates] == [("min_cosine", True), ("min_sqnr", False)]
    assert not report.gates_passed and [g.key for g in report.failed_gates] == ["min_sqnr"]
    doc = report.to_json()
    json.dumps(doc, allow_nan=False)
    assert doc["kind"] == "compare"


def test_bench_times_every_model_interleaved(pair):
    a, b, data = pair
    report = bench([a, b], data, options=MeasureOptions(fidelity=False, runs=3, warmup=1))
    assert report.kind == "bench" and report.labels == ["a.onnx", "b.onnx"]
    assert [m.label for m in report.latency.models] == ["a.onnx", "b.onnx"]
    assert all(m.median_ms > 0 and m.min_ms <= m.median_ms for m in report.latency.models)
    assert report.fidelity is None
