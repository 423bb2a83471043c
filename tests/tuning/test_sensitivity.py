"""ptq.tuning.sensitivity: regions, placements and their measured cost, on a tiny model run by onnxruntime."""

from __future__ import annotations

import math

from ptq.calibrate.runner import calibrate
from ptq.config import Config
from ptq.quantize.plan import make_plan
from ptq.quantize.static import calibrated_tensors
from ptq.recipe import Recipe
from ptq.tuning import sensitivity, validation
from ptq.tuning.figures import Target, figures_of
from ptq.tuning.scoring import Scoring
from ptq.tuning.sensitivity import AS_HYBRID, FLOAT, Placement
from tests import tiny


def test_region_ops_are_the_int8_matmuls_with_their_placements():
    model = tiny.difference_model()
    config = Config(calibration_data="unused")
    ops = sensitivity.region_ops(model, make_plan(model, config, Recipe.asked(config)))
    assert ops == [("fc_a", (FLOAT, AS_HYBRID)), ("fc_b", (FLOAT, AS_HYBRID))]


def test_placement_json_round_trip():
    p = Placement("fc_a", AS_HYBRID, 3.14159, ("fc_a", "q"))
    assert p.to_json() == {"node": "fc_a", "placement": "hybrid", "gain_db": 3.142, "region": ["fc_a", "q"]}
    back = Placement.from_json(p.to_json())
    assert (back.node, back.kind, back.nodes) == (p.node, p.kind, p.nodes)
    assert Placement.from_json({"node": "n", "placement": "float"}) == Placement("n", FLOAT, 0.0, ())


def test_apply_takes_the_region_out_of_int8():
    model = tiny.difference_model()
    config = Config(calibration_data="unused")
    recipe = Recipe.asked(config)
    before = make_plan(model, config, recipe)
    after = sensitivity.apply(model, config, recipe, (Placement("fc_a", FLOAT, 1.0),))
    assert "fc_a" in sensitivity.region_of(before, after)
    assert "fc_b" not in sensitivity.region_of(before, after)
    assert sensitivity.region_of(before, before) == ()
    assert after.decisions["fc_a"].quantize is False and before.decisions["fc_a"].quantize


def test_complete_adds_missing_ranges_or_says_they_are_missing(tmp_path):
    model = tiny.difference_model()
    data = tiny.vector_samples(tmp_path / "d", n=8, rows=1)
    config = Config(calibration_data=data)
    plan = make_plan(model, config, Recipe.asked(config))
    assert not sensitivity.complete({}, model, [plan], None)
    asked: list[list[str]] = []

    def more(tensors):
        asked.append(tensors)
        return calibrate(model, tensors, data, method="minmax")[0]

    ranges: dict = {}
    assert sensitivity.complete(ranges, model, [plan], more)
    assert len(asked) == 1 and set(asked[0]) == set(calibrated_tensors(model, plan)) <= set(ranges)


def test_measure_gives_each_placement_its_measured_gain(tmp_path):
    model = tiny.difference_model()
    data = tiny.vector_samples(tmp_path / "d", n=12, rows=1)
    config = Config(calibration_data=data, calibration_method="minmax")
    split = validation.split(12)
    recipe = Recipe.asked(config)
    plan = make_plan(model, config, recipe)
    ranges, _ = calibrate(model, calibrated_tensors(model, plan), data, method="minmax", indices=split.fit)
    scoring = Scoring(model, config, data, split)
    base = figures_of(scoring.names, scoring.reference, scoring.outputs(scoring.candidate(plan, ranges, config)))
    seen = []
    found = sensitivity.measure(scoring, plan, ranges, config, recipe, Target(sqnr_db=40.0), base,
                                progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert [(s.placement.node, s.placement.kind) for s in found] == [
        ("fc_a", FLOAT), ("fc_a", AS_HYBRID), ("fc_b", FLOAT), ("fc_b", AS_HYBRID)
    ]  # fmt: skip
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for s in found:
        assert math.isfinite(s.placement.gain_db)
        assert s.placement.gain_db == s.figures.sqnr_db - base.sqnr_db  # Target(sqnr).rank is the SQNR
        assert s.placement.node in s.placement.nodes
    # The figures are those of the model with that placement alone: measured again here.
    # (On this model one product float costs ~8 dB: int8 errors of the two products cancel in the Sub.)
    alone = sensitivity.apply(model, config, recipe, (Placement("fc_a", FLOAT, 0.0),))
    again = figures_of(scoring.names, scoring.reference, scoring.outputs(scoring.candidate(alone, ranges, config)))
    assert found[0].figures.sqnr_db == again.sqnr_db != base.sqnr_db
