"""Dynamic mode: int8 weights with hybrid kernels; placements and the weight range from the recipe."""

from __future__ import annotations

import copy

import onnx

from ptq.config import Config, WeightRange
from ptq.quantize.dynamic import quantize_dynamic
from ptq.quantize.plan import HYBRID
from ptq.recipe import ACCURACY, FLOAT, Placement, Recipe
from tests import tiny


def test_matmuls_run_hybrid_and_a_float_placement_keeps_one_float():
    config = Config()
    asked = quantize_dynamic(tiny.small_mlp(), config)
    assert asked.decisions["fc1"].role == HYBRID and asked.decisions["fc2"].role == HYBRID
    placed = quantize_dynamic(tiny.small_mlp(), config, Recipe.asked(config).placed(Placement("fc2", FLOAT, ACCURACY)))
    assert placed.decisions["fc1"].role == HYBRID and not placed.decisions["fc2"].quantize
    ops = {n.name: n.op_type for n in placed.model.graph.node}
    assert ops["fc2"] == "MatMul"  # still the float op


def test_the_weight_range_comes_from_the_recipe():
    config = Config()

    def weights(recipe: Recipe) -> bytes:
        model = quantize_dynamic(copy.deepcopy(tiny.small_mlp()), config, recipe).model
        return b"".join(t.raw_data for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8)

    minmax = weights(Recipe.asked(config))
    assert weights(Recipe(weight_range=WeightRange.MINMAX)) == minmax
    assert weights(Recipe(weight_range=WeightRange.MSE)) != minmax  # clipping moved some channel
