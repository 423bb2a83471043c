"""The planner: weighted ops int8; other ops join the int8 region only where that adds no
QuantizeLinear/DequantizeLinear pass (the cost rule); placements come from the recipe."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.config import Config
from ptq.quantize.plan import ELEMENTWISE, WEIGHTED, make_plan
from ptq.recipe import ACCURACY, FLOAT, HYBRID, Placement, Recipe


def _model(nodes, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        list(inits),
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return onnx.shape_inference.infer_shapes(model)


def _w(name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 3, 1, 1)).astype(np.float32), name)


def _add_between(producer_op: str) -> onnx.ModelProto:
    """Two ``producer_op`` branches joined by an Add that feeds another ``producer_op``."""
    if producer_op == "Conv":
        make = lambda name, src, dst: helper.make_node("Conv", [src, f"w_{name}"], [dst], name=name)
        inits = [_w(f"w_{n}") for n in ("p1", "p2", "p3")]
    else:
        make = lambda name, src, dst: helper.make_node(producer_op, [src], [dst], name=name)
        inits = []
    nodes = [make("p1", "x", "a"), make("p2", "x", "b"), helper.make_node("Add", ["a", "b"], ["s"], name="add"), make("p3", "s", "y")]
    return _model(nodes, inits)


def test_an_add_between_int8_convs_joins_the_int8_region():
    plan = make_plan(_add_between("Conv"), Config(calibration_data="d"))
    assert all(plan.decisions[n].quantize and plan.decisions[n].role == WEIGHTED for n in ("p1", "p2", "p3"))
    assert plan.decisions["add"].quantize and plan.decisions["add"].role == ELEMENTWISE
    # a, b and s stay int8 between int8 nodes: only x (the input) and y need a pass
    assert "s" in plan.activations


def test_an_add_between_float_ops_stays_float_it_would_add_passes():
    plan = make_plan(_add_between("Exp"), Config(calibration_data="d"))
    assert not any(plan.decisions[n].quantize for n in ("p1", "p2", "p3"))  # Exp: no int8 kernel
    add = plan.decisions["add"]
    assert not add.quantize and "would add QuantizeLinear/DequantizeLinear passes" in add.reason
    assert plan.activations == []


def test_placements_come_from_the_recipe_not_the_config():
    model = _add_between("Conv")
    config = Config(calibration_data="d")
    recipe = Recipe.asked(config).placed(Placement("p3", FLOAT, ACCURACY, 20.0, "last layer: p3"))
    plan = make_plan(model, config, recipe.replace(weight_range="mse"))
    assert not plan.decisions["p3"].quantize and plan.mse_weights
    assert make_plan(model, config).decisions["p3"].quantize  # the same config alone: int8
    # taking p3 out turns the Add's output into a float boundary, but the Add still saves passes
    assert plan.decisions["add"].quantize


def test_hybrid_placement_runs_a_matmul_hybrid():
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"), helper.make_node("MatMul", ["r", "w"], ["y"], name="mm")]
    shape = numpy_helper.from_array(np.array([24, 8], np.int64), "shape")
    model = _model(nodes, [w, shape])
    config = Config(calibration_data="d")
    assert make_plan(model, config).decisions["mm"].role == WEIGHTED
    plan = make_plan(model, config, Recipe.asked(config).placed(Placement("mm", HYBRID, ACCURACY)))
    assert plan.decisions["mm"].role == "hybrid"


def test_float_reason_says_who_placed_the_node():
    """A node ptq placed float is not reported as excluded by the user: the op list names the
    scored choice (with its measurement) or the rewrite that placed it."""
    model = _add_between("Conv")
    by_fallback = Recipe().placed(Placement("add", FLOAT, ACCURACY, 21.5, "Add"))
    assert make_plan(model, Config(), by_fallback).decisions["add"].reason == (
        "accuracy: kept float with Add: output SQNR 21.5 dB on the scoring samples"
    )
    by_rewrite = Recipe().placed(Placement("add", FLOAT, "smoothquant"))
    assert make_plan(model, Config(), by_rewrite).decisions["add"].reason == "kept float for the smoothquant rewrite"
    by_user = Recipe().placed(Placement("Add", FLOAT, "user"), Placement("add", FLOAT, "smoothquant"))
    assert make_plan(model, Config(), by_user).decisions["add"].reason == "excluded by the user (--exclude)"
