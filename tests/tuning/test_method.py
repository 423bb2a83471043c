"""--calibration-method auto: scored on a real model with onnxruntime, the best candidate kept."""

from __future__ import annotations

import math

import ptq
from bench import zoo
from ptq.calibrate.range_file import read_ranges
from ptq.config import CalibrationMethod
from ptq.tuning.method import CANDIDATES


def test_auto_keeps_the_best_scoring_method_and_records_it(tmp_path):
    model = zoo.fetch_model("ppocr-cls")
    calib = tmp_path / "calib"
    zoo.write_calibration_dir("ppocr-cls", calib, "calib", n=6)
    ranges_file = tmp_path / "ranges.json"
    result = ptq.convert(model, ptq.Config(output=tmp_path / "auto.onnx", calibration_data=calib, save_ranges=ranges_file))
    recipe = result.recipe
    scores = {s.candidate: s.score_db for s in recipe.method_scores}
    assert list(scores) == [m.value for m in CANDIDATES] and all(math.isfinite(s) for s in scores.values())
    # cross-validated: all 6 samples scored, each on ranges fitted without it (1 validation sample is one fold)
    assert len(result.split.validation) == 1 and recipe.scoring_samples == 6
    chosen = result.calibration_method
    assert recipe.calibration_method.value == chosen and scores[chosen] == max(scores.values())
    assert read_ranges(ranges_file).recipe == recipe  # saved whole

    # The chosen method, asked for explicitly, gives the same bytes (the same ranges).
    explicit = ptq.convert(
        model, ptq.Config(output=tmp_path / "explicit.onnx", calibration_data=calib, calibration_method=CalibrationMethod(chosen))
    )
    assert explicit.outputs.onnx.read_bytes() == result.outputs.onnx.read_bytes()


def test_one_scoring_serves_every_choice_and_scores_chain(tmp_path, monkeypatch):
    """auto method, auto-hybrid and auto-fallback read the scoring samples and run the float
    model once per conversion, and each step starts from the score the previous one ended at."""
    from pathlib import Path

    from ptq.tuning import scoring as tune
    from tests import tiny

    path = Path(tiny.save(tiny.embedding_mlp(), tmp_path / "mlp.onnx"))
    data = Path(tiny.id_samples(tmp_path / "calib", n=6))
    built, hybrid_base = [], []
    original = tune.Scoring.__init__
    monkeypatch.setattr(tune.Scoring, "__init__", lambda self, *a: built.append(1) or original(self, *a))
    choose_hybrid = ptq.api.choose_hybrid
    monkeypatch.setattr(ptq.api, "choose_hybrid", lambda *a: hybrid_base.append(a[-1]) or choose_hybrid(*a))
    chosen_scores = []
    cross_validated = ptq.api.choose_method_cross_validated
    monkeypatch.setattr(ptq.api, "choose_method_cross_validated",
                        lambda *a, **k: (c := cross_validated(*a, **k), chosen_scores.append(c.score))[0])  # fmt: skip
    result = ptq.convert(path, ptq.Config(output=tmp_path / "q.onnx", calibration_data=data, auto_fallback=True, write_ort=False))
    assert built == [1]
    # the method scores pool every fold; the chain continues from the chosen model's validation score
    assert len(chosen_scores) == 1 and hybrid_base == chosen_scores  # the hybrid search starts where the method choice ended
