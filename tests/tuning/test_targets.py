"""Fidelity targets: the fewest regions out of int8 until the target holds on held-out samples;
no silent collapse; the decisions recorded so --load-ranges rebuilds the same model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import ptq
from ptq.cli import main
from ptq.errors import EXIT_COLLAPSED, EXIT_TARGET_MISSED, FidelityCollapsedError, UsageError
from ptq.tuning import targets
from ptq.tuning.figures import Target, cosine_db, figures_of
from tests import tiny


def test_figures_are_the_worst_output_and_targets_check_each():
    ref = [[np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0])]]
    good = [[np.array([1.0, 2.0, 3.1]), np.array([1.0, 0.0])]]
    figures = figures_of(["a", "b"], ref, good)
    assert figures.sqnr_db == pytest.approx(10 * math.log10(14 / 0.01))  # output a: the worst
    assert 0.99 < figures.cosine < 1.0 and figures.cosine_min == figures.cosine
    assert Target(cosine=0.99).met(figures) and not Target(cosine=0.99999).met(figures)
    assert Target(sqnr_db=30).met(figures) and Target(sqnr_db=32).misses(figures) == [f"SQNR {figures.sqnr_db:.1f} dB < 32 dB"]
    with pytest.raises(UsageError, match="class scores"):
        Target(top1=0.9).met(figures)  # neither output looks like class scores
    assert cosine_db(0.999) == pytest.approx(30.0) and cosine_db(1.0) == 200.0
    tight = Target(cosine=0.999, sqnr_db=20, top1=0.9).tightened(10.0)
    assert (tight.cosine, tight.sqnr_db, tight.top1) == (pytest.approx(0.9999), 30.0, 0.9)


def test_collapse_is_lifted_by_the_fewest_float_regions(tmp_path):
    model = tiny.save(tiny.difference_model(), tmp_path / "m.onnx")
    data = tiny.vector_samples(tmp_path / "d")
    ranges = tmp_path / "r.json"
    result = ptq.convert(model, ptq.Config(output=tmp_path / "q.onnx", calibration_data=data, save_ranges=ranges, write_ort=False))
    search = result.accuracy
    assert search is not None and search.collapse and search.met
    assert search.base.cosine_pooled < targets.COLLAPSE_COSINE <= search.figures.cosine_pooled == result.held_out.cosine_pooled
    placed = {p.node for p in search.placements}
    assert placed and placed <= {"fc_a", "fc_b"}
    # the op list says why, the summary lists them, the ranges file records them
    entries = {e.name: e for e in result.oplist.nodes}
    for node in placed:
        assert entries[node].kernel == "float" and entries[node].reason.startswith("accuracy: kept float, ")
    assert {p.target for p in result.recipe.placements if (p.runs, p.reason) == ("float", "accuracy")} == placed
    saved = json.loads(ranges.read_text())
    assert {p["target"] for p in saved["recipe"]["placements"] if (p["runs"], p["reason"]) == ("float", "accuracy")} == placed
    # --load-ranges rebuilds the same model without data
    again = ptq.convert(model, ptq.Config(output=tmp_path / "again.onnx", load_ranges=ranges, write_ort=False))
    assert again.outputs.onnx.read_bytes() == result.outputs.onnx.read_bytes()
    assert again.accuracy is None and again.split is None


def test_the_collapse_floor_weighs_each_sample_by_its_signal():
    """A sample with almost no signal whose cosine is noise does not make a collapse; losing the
    signal on the samples that carry it does."""
    from ptq.tuning.figures import figures_of

    rng = np.random.default_rng(0)
    strong = [rng.normal(size=64) for _ in range(3)]
    faint = rng.normal(size=64) * 1e-3
    reference = [[x] for x in (*strong, faint)]
    lossy = [[x + rng.normal(scale=0.05, size=64)] for x in strong] + [[faint + rng.normal(scale=5e-3, size=64)]]
    figures = figures_of(["y"], reference, lossy)
    floor = Target(cosine_pooled=targets.COLLAPSE_COSINE)
    assert figures.cosine_min < 0.5 and figures.cosine < 0.9  # the faint sample's cosine is noise
    assert floor.met(figures) and figures.cosine_pooled > 0.99
    collapsed = [[rng.normal(size=64)] for _ in strong] + [[faint]]
    assert not floor.met(figures_of(["y"], reference, collapsed))


def test_collapse_that_nothing_lifts_fails_naming_the_layers(tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "COLLAPSE_COSINE", 1.5)  # unreachable: even all float scores 1.0
    model = tiny.save(tiny.difference_model(), tmp_path / "m.onnx")
    out = tmp_path / "q.onnx"
    with pytest.raises(FidelityCollapsedError, match="fc_a, fc_b") as caught:
        ptq.convert(model, ptq.Config(output=out, calibration_data=tiny.vector_samples(tmp_path / "d"), write_ort=False))
    assert caught.value.exit_code == EXIT_COLLAPSED
    assert not out.exists()  # refused: nothing handed over


def test_target_met_with_the_fewest_regions_and_a_working_model_stays_int8(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    data = tiny.image_samples(tmp_path / "d", n=16)
    # bias correction off: _trial_with rebuilds the candidates the search ran, without it
    plain = ptq.convert(model, ptq.Config(output=tmp_path / "plain.onnx", calibration_data=data, write_ort=False, bias_correction=False))
    assert plain.accuracy is None  # no target, no collapse: nothing searched
    base = plain.held_out
    goal = base.sqnr_db + 3.0
    result = ptq.convert(model, ptq.Config(output=tmp_path / "t.onnx", calibration_data=data, target_sqnr=goal, write_ort=False,
                                           bias_correction=False))
    search = result.accuracy
    assert search.met and search.figures.sqnr_db >= goal and search.base == base
    assert 1 <= len(search.placements) < 5
    # fewest: returning any one chosen region to int8 misses what the search aimed for, the
    # target with its margin (the prune step's promise); the margin is at least MARGIN_DB and
    # SPREAD_Z jackknife standard errors of the candidate's SQNR on the validation samples
    target = targets.Target(sqnr_db=goal)
    written = _trial_with(model, data, search.placements, result.calibration_method, target)
    assert written.figures == search.figures and written.met
    assert written.margin_db == max(targets.MARGIN_DB, targets.SPREAD_Z * written.spread_db) and written.spread_db > 0
    assert search.figures.sqnr_db >= goal + written.margin_db
    for placement in search.placements:
        rest = tuple(p for p in search.placements if p is not placement)
        assert not _trial_with(model, data, rest, result.calibration_method, target).met, placement.node


def test_every_candidate_the_search_ran_is_a_trial_of_the_tradeoff(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    data = tiny.image_samples(tmp_path / "d", n=16)
    base = ptq.convert(model, ptq.Config(output=tmp_path / "plain.onnx", calibration_data=data, write_ort=False)).held_out
    goal = base.sqnr_db + 3.0
    result = ptq.convert(model, ptq.Config(output=tmp_path / "t.onnx", calibration_data=data, target_sqnr=goal, write_ort=False))
    search = result.accuracy
    curve = search.curve
    assert curve[0].step == targets.AS_PLANNED and curve[0].regions == 0 and curve[0].figures == base == search.base
    assert len(curve) == search.trials - search.regions + 1  # the confirmations, and the plan as given
    target = targets.Target(sqnr_db=goal)
    for trial in curve:  # each trial's verdict is its figures against the target with its own margin
        assert trial.met == target.tightened(trial.margin_db).met(trial.figures)
        assert trial.margin_db >= targets.MARGIN_DB and trial.run_ms > 0
    # the trade-off: one row per count, the best candidate with it, the written one at its count
    rows = search.tradeoff()
    assert [t.regions for t in rows] == sorted({t.regions for t in curve})
    chosen = search.chosen_trial()
    assert chosen in rows and chosen.regions == len(search.placements) and chosen.figures == search.figures
    for row in rows:
        if row is not chosen:
            assert all(target.rank(t.figures) <= target.rank(row.figures) for t in curve if t.regions == row.regions)
    json = search.to_json()
    assert [t["regions"] for t in json["tradeoff"]] == [t.regions for t in rows]
    assert [t["written"] for t in json["curve"]].count(True) == 1


def _trial_with(model, data, placements, method: str, target) -> targets.Trial:
    """The trial of the model with ``placements``, measured the way the search does."""
    from ptq import loader
    from ptq.calibrate.runner import calibrate
    from ptq.config import Config
    from ptq.quantize.static import calibrated_tensors
    from ptq.recipe import Recipe
    from ptq.tuning import sensitivity, validation
    from ptq.tuning.scoring import Scoring

    config = Config(calibration_data=data, calibration_method=method, bias_correction=False)
    loaded = loader.load(model).model
    split = validation.split(16)
    plan = sensitivity.apply(loaded, config, Recipe.asked(config), placements)
    ranges, _ = calibrate(loaded, calibrated_tensors(loaded, plan), data, method=config.calibration_method, indices=split.fit)
    return targets.trial_of(Scoring(loaded, config, data, split), plan, ranges, config, None, target, len(placements), targets.PRUNE)


def test_unreachable_target_writes_the_best_and_exits_8(tmp_path, monkeypatch):
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    data = tiny.image_samples(tmp_path / "d", n=8)
    (tmp_path / "never.py").write_text("def score(reference, candidate):\n    return 0.0\n")
    out = tmp_path / "q.onnx"
    monkeypatch.chdir(tmp_path)  # --metric modules are found in the working directory
    result = CliRunner().invoke(main, [
        "convert", model, "-c", data, "-o", str(out), "--no-bench", "--metric", "never:score", "--target-metric", "1",
    ])  # fmt: skip
    assert result.exit_code == EXIT_TARGET_MISSED, result.output
    assert "not met" in result.output and out.exists()


def test_targets_need_calibration_data(tmp_path):
    with pytest.raises(UsageError, match="needs -c"):
        ptq.Config(target_cosine=0.99)
    with pytest.raises(UsageError, match="go together"):
        ptq.Config(calibration_data=tmp_path, metric="m:f")
