"""ptq.recipe: what the user asked starts the recipe; stages add to it; it round-trips through JSON."""

from __future__ import annotations

import json
import math

import pytest

from ptq.config import CalibrationMethod, Config, WeightRange
from ptq.errors import CalibrationDataError
from ptq.recipe import ACCURACY, FLOAT, HYBRID, USER, Placement, Recipe, Scored
from ptq.rewrites import Declined, RewriteResult


def test_asked_holds_the_users_placements_and_no_auto_weight_range():
    config = Config(calibration_data="d", exclude=("Add", "conv1"), hybrid=("fc",), weight_range="auto")
    recipe = Recipe.asked(config)
    assert recipe.float_targets == ("Add", "conv1") and recipe.hybrid_targets == ("fc",)
    assert all(p.reason == USER for p in recipe.placements)
    assert recipe.weight_range == WeightRange.MINMAX and not recipe.mse_weights  # auto picks later
    assert recipe.calibration_method == CalibrationMethod.AUTO
    assert Recipe.asked(Config(weight_range="mse")).mse_weights
    assert Recipe.asked(Config()).calibration_method is None  # dynamic mode
    with pytest.raises(ValueError):
        Recipe(weight_range=WeightRange.AUTO)


def test_placed_keeps_the_first_reason_and_rewritten_keeps_its_nodes_float():
    recipe = Recipe.asked(Config(exclude=("Mul",)))
    recipe = recipe.placed(Placement("Mul", FLOAT, ACCURACY, 30.0), Placement("Mul", HYBRID, ACCURACY))
    assert [(p.target, p.runs, p.reason) for p in recipe.placements] == [("Mul", FLOAT, USER), ("Mul", HYBRID, ACCURACY)]
    result = RewriteResult("smoothquant", applied=("m",), rescaled=("x",), keep_float=("m",), settings=(("alpha", 0.5),))
    rewritten = recipe.rewritten(result)
    assert rewritten.rewrites == (result,) and rewritten.rescaled == ("x",)
    assert rewritten.placements[-1] == Placement("m", FLOAT, "smoothquant")
    assert recipe.rewrites == ()  # frozen: the original is unchanged


def test_json_round_trip_including_infinite_scores():
    recipe = Recipe(
        calibration_method=CalibrationMethod.MSE,
        method_scores=(Scored("percentile", 31.5), Scored("minmax", math.inf)),
        weight_range=WeightRange.MSE,
        weight_range_scores=(Scored("minmax", 20.0), Scored("mse", 21.0)),
        placements=(Placement("Add", FLOAT, ACCURACY, 33.25, "Add"), Placement("fc", HYBRID, USER)),
        rewrites=(RewriteResult("equalize", applied=("c1",), declined=(Declined("c3", "balanced"),), rescaled=("t",)),),
        bias_shifts=(("c1", (0.1, -2.5e-07, 0.30000000000000004)),),  # float64 values come back exactly
        bias_correction_scores=(Scored("off", 20.0), Scored("on", 20.5)),
        scoring_samples=8,
    )
    text = json.dumps(recipe.to_json())  # plain JSON: no NaN/Infinity literals
    assert "Infinity" not in text
    assert Recipe.from_json(json.loads(text), "f") == recipe


def test_from_json_refuses_a_malformed_recipe_in_one_line():
    with pytest.raises(CalibrationDataError, match="f: the saved recipe is not valid"):
        Recipe.from_json({"placements": [{"target": "a", "runs": "sideways"}]}, "f")
    with pytest.raises(CalibrationDataError, match="not valid"):
        Recipe.from_json({"weight_range": "auto"}, "f")
    with pytest.raises(CalibrationDataError, match="not valid"):
        Recipe.from_json([], "f")
    with pytest.raises(CalibrationDataError, match="bias_shifts"):
        Recipe.from_json({"bias_shifts": {"c1": ["NaN"]}}, "f")
