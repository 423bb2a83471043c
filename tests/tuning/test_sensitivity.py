"""ptq.tuning.sensitivity: regions, placements and their measured cost, on a tiny model run by onnxruntime."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.calibrate.runner import calibrate
from ptq.config import Config
from ptq.quantize.plan import make_plan
from ptq.quantize.static import calibrated_tensors
from ptq.recipe import Recipe
from ptq.tuning import sensitivity, validation
from ptq.tuning.figures import Target, figures_of
from ptq.tuning.scoring import Scoring
from ptq.tuning.sensitivity import AS_HYBRID, FLOAT, Placement


def _model() -> onnx.ModelProto:
    """y = x W1 - x W2 with W2 near W1 (int8 rounding of either product costs a lot), then a
    MatMul by a graph input (no constant weight: no hybrid placement)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(16, 8)).astype(np.float32)
    w2 = (w1 + 0.02 * rng.normal(size=(16, 8))).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"], name="fc_a"),
        helper.make_node("MatMul", ["x", "w2"], ["b"], name="fc_b"),
        helper.make_node("Sub", ["a", "b"], ["y"], name="difference"),
    ]
    graph = helper.make_graph(
        nodes, "difference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _samples(folder, n: int = 8) -> str:
    rng = np.random.default_rng(1)
    folder.mkdir()
    for i in range(n):
        np.savez(folder / f"s{i:02d}.npz", x=rng.normal(size=(1, 16)).astype(np.float32))
    return str(folder)


def test_region_ops_are_the_int8_matmuls_with_their_placements():
    model = _model()
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
    model = _model()
    config = Config(calibration_data="unused")
    recipe = Recipe.asked(config)
    before = make_plan(model, config, recipe)
    after = sensitivity.apply(model, config, recipe, (Placement("fc_a", FLOAT, 1.0),))
    assert "fc_a" in sensitivity.region_of(before, after)
    assert "fc_b" not in sensitivity.region_of(before, after)
    assert sensitivity.region_of(before, before) == ()
    assert after.decisions["fc_a"].quantize is False and before.decisions["fc_a"].quantize


def test_complete_adds_missing_ranges_or_says_they_are_missing(tmp_path):
    model = _model()
    data = _samples(tmp_path / "d")
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
    model = _model()
    data = _samples(tmp_path / "d", n=12)
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
