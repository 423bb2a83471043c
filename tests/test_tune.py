"""--calibration-method auto: scored on a real model with onnxruntime, the best candidate kept."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import ptq
from bench import zoo
from ptq.config import CalibrationMethod
from ptq.tune import CANDIDATES, output_score


def test_output_score_averages_outputs_in_db():
    ref = [[np.ones(4), np.full(4, 100.0)]]
    # Output 0: noise power 0.01 per element vs signal 1 -> 20 dB; output 1 exact -> capped at 200.
    test = [[np.ones(4) + 0.1, np.full(4, 100.0)]]
    assert output_score(ref, test) == pytest.approx((20.0 + 200.0) / 2)
    worse = [[np.ones(4) + 0.3, np.full(4, 100.0)]]
    assert output_score(ref, worse) < output_score(ref, test)


def test_auto_keeps_the_best_scoring_method_and_records_it(tmp_path):
    model = zoo.fetch_model("ppocr-cls")
    calib = tmp_path / "calib"
    zoo.write_calibration_dir("ppocr-cls", calib, "calib", n=6)
    ranges_file = tmp_path / "ranges.json"
    result = ptq.convert(model, ptq.Config(output=tmp_path / "auto.onnx", calibration_data=calib, save_ranges=ranges_file))
    note = next(n for n in result.notes if n.startswith("calibration method auto:"))
    scores = {m.value: float(note.split(f"{m.value} ")[-1].split(" dB")[0]) for m in CANDIDATES}
    assert all(math.isfinite(s) for s in scores.values())
    chosen = result.calibration_method
    assert scores[chosen] == max(scores.values())
    assert json.loads(ranges_file.read_text())["method"] == chosen

    # The chosen method, asked for explicitly, gives the same bytes (the same ranges).
    explicit = ptq.convert(
        model, ptq.Config(output=tmp_path / "explicit.onnx", calibration_data=calib, calibration_method=CalibrationMethod(chosen))
    )
    assert explicit.outputs.onnx.read_bytes() == result.outputs.onnx.read_bytes()


def test_choose_hybrid_reusing_choose_methods_scoring_decides_and_scores_the_same(tmp_path, monkeypatch):
    from pathlib import Path

    from ptq import loader, tune
    from ptq.calibrate.runner import observe
    from ptq.config import Config
    from ptq.quantize.plan import make_plan
    from tests import tiny

    path = Path(tiny.save(tiny.embedding_mlp(), tmp_path / "mlp.onnx"))
    data = Path(tiny.id_samples(tmp_path / "calib", n=6))
    model = loader.load(path).model
    config = Config(calibration_data=data)
    plan = make_plan(model, config)
    observers, _ = observe(model, plan.activations, data)
    choice = tune.choose_method(model, plan, observers, config, data)
    assert choice.reusable is not None  # the MLP has hybrid groups

    fresh = tune.choose_hybrid(model, plan, choice.ranges, config, data)
    built = []
    original = tune.Scoring.__init__
    monkeypatch.setattr(tune.Scoring, "__init__", lambda self, *a: built.append(1) or original(self, *a))
    reused = tune.choose_hybrid(model, plan, choice.ranges, config, data, choice)
    assert built == []  # no second read of the samples, no second float session
    assert (reused.trials, reused.base_score, reused.kept, reused.config) == (fresh.trials, fresh.base_score, fresh.kept, fresh.config)
    assert reused.base_score == choice.score_of(choice.method)
    # Other ranges than the choice's: nothing reused.
    other = dict(choice.ranges)
    tune.choose_hybrid(model, plan, other, config, data, choice)
    assert built == [1]
