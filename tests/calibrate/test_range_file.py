"""The ranges file: one reader; the recipe saved whole; version 1 files still read."""

from __future__ import annotations

import json

import pytest

from ptq.calibrate.range_file import read_ranges, save_ranges
from ptq.config import CalibrationMethod, WeightRange
from ptq.errors import CalibrationDataError
from ptq.recipe import ACCURACY, FLOAT, HYBRID, USER, Placement, Recipe
from ptq.rewrites import RewriteResult


def test_save_and_read_back_the_recipe_and_ranges(tmp_path):
    recipe = Recipe(
        calibration_method=CalibrationMethod.PERCENTILE,
        placements=(Placement("Mul", FLOAT, ACCURACY, 25.0, "Mul"),),
        rewrites=(RewriteResult("smoothquant", settings=(("alpha", 0.5),)),),
    )
    path = tmp_path / "r.json"
    save_ranges({"b": (0.0, 2.0), "a": (-1.0, 1.0)}, recipe, 99.9, 12, path)
    saved = read_ranges(path)
    assert saved.recipe == recipe and saved.percentile == 99.9 and saved.samples == 12
    assert saved.ranges(["a"]) == {"a": (-1.0, 1.0)}
    with pytest.raises(CalibrationDataError, match="no range for tensor 'c'"):
        saved.ranges(["c"])


def test_a_version_1_file_becomes_the_recipe_it_describes(tmp_path):
    path = tmp_path / "v1.json"
    path.write_text(json.dumps({
        "format": "ptq-ranges", "version": 1, "method": "minmax", "percentile": 99.99, "samples": 4,
        "hybrid": ["fc"], "exclude": ["Add"], "weight_range": "mse", "smoothquant": 0.5, "equalize": True,
        "ranges": {"x": [0, 1]},
    }))  # fmt: skip
    recipe = read_ranges(path).recipe
    assert recipe.calibration_method == CalibrationMethod.MINMAX and recipe.weight_range == WeightRange.MSE
    assert recipe.placements == (Placement("Add", FLOAT, USER), Placement("fc", HYBRID, USER))
    assert [(r.name, r.settings) for r in recipe.rewrites] == [("equalize", ()), ("smoothquant", (("alpha", 0.5),))]


@pytest.mark.parametrize(
    "document, message",
    [
        ({"format": "other", "ranges": {}}, "not a ptq ranges file"),
        ({"format": "ptq-ranges", "version": 9, "ranges": {}}, "version 9, this ptq reads 1 and 2"),
        ({"format": "ptq-ranges", "version": 1, "exclude": "Add", "ranges": {}}, "'exclude' is not a list"),
        ({"format": "ptq-ranges", "version": 1, "weight_range": "auto", "ranges": {}}, "'weight_range' is 'auto'"),
        ({"format": "ptq-ranges", "version": 2, "recipe": {"weight_range": 3}, "ranges": {}}, "recipe is not valid"),
    ],
)
def test_bad_files_are_refused_in_one_line(tmp_path, document, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(CalibrationDataError, match=message):
        read_ranges(path)
    with pytest.raises(CalibrationDataError, match="no such ranges file"):
        read_ranges(tmp_path / "missing.json")
