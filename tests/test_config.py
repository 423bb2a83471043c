"""Config: the frozen record of what the user asked, validated once; bad values are UsageErrors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ptq.config import CalibrationMethod, Config, ImageFormat, OutputPaths, Scheme, WeightRange
from ptq.errors import UsageError


def test_strings_become_enums_and_paths_and_the_record_is_frozen():
    config = Config(output="o.onnx", calibration_data="d", weights="asymmetric", calibration_method="mse", weight_range="auto", exclude=["Add"])
    assert config.weights == Scheme.ASYMMETRIC and config.calibration_method == CalibrationMethod.MSE
    assert config.weight_range == WeightRange.AUTO and not config.mse_weights  # auto picks later, in the recipe
    assert config.output == Path("o.onnx") and config.exclude == ("Add",) and config.static
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.exclude = ()  # what was asked is never rewritten
    assert not Config().static and Config(load_ranges="r.json").static


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"percentile": 40.0}, "--percentile"),
        ({"smoothquant": 1.5, "calibration_data": "d"}, "--smoothquant must be in"),
        ({"smoothquant": 0.5}, "--smoothquant needs -c"),
        ({"equalize_activations": True}, "--equalize-activations needs -c"),
        ({"calibration_samples": 0}, "--calibration-samples"),
    ],
)
def test_bad_values_are_usage_errors(fields, message):
    with pytest.raises(UsageError, match=message):
        Config(**fields)


def test_image_format_checks_and_output_paths():
    with pytest.raises(UsageError, match="--std"):
        ImageFormat(std=(1.0, 0.0, 1.0))
    with pytest.raises(UsageError, match="--layout"):
        ImageFormat(layout="chw")
    paths = OutputPaths.default_for(Path("/m/model.onnx"))
    assert [p.name for p in paths.all()] == ["model.int8.onnx", "model.int8.ort", "model.int8.ops.json"]
