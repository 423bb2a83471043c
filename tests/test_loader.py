"""The loader's refusals that need a whole model: non-finite weights (issue 13.7)."""

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import ptq
from ptq import errors, loader
from ptq.cli import main
from tests import tiny


def _with(model, name: str, index: int, value: float):
    init = next(t for t in model.graph.initializer if t.name == name)
    array = numpy_helper.to_array(init).copy()
    array.reshape(-1)[index] = value
    init.CopyFrom(numpy_helper.from_array(array, name))
    return model


@pytest.mark.parametrize("value, kind", [(np.inf, "(1 Inf, read by Conv 'conv1')"), (np.nan, "(1 NaN, read by Conv 'conv1')")])
def test_a_non_finite_weight_in_a_layer_too_small_to_quantize_is_refused(tmp_path, value, kind):
    """The first Conv (216 weights) is below the quantization threshold; before, exit 0 with
    "cosine nan" and numpy RuntimeWarnings on the terminal."""
    path = tiny.save(_with(tiny.small_cnn(), "w1", 5, value), tmp_path / "m.onnx")
    result = CliRunner().invoke(main, ["convert", path, "--no-ort"])
    assert result.exit_code == errors.EXIT_UNSUPPORTED_MODEL, result.output
    assert f"weight 'w1' contains 1 NaN/Inf values {kind}" in result.stderr
    assert "RuntimeWarning" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m.int8.onnx").exists()


def test_a_non_finite_bias_is_refused_too(tmp_path):
    path = tiny.save(_with(tiny.small_cnn(), "bf", 0, -np.inf), tmp_path / "m.onnx")
    with pytest.raises(errors.UnsupportedModelError, match=r"weight 'bf' contains 1 NaN/Inf values \(1 Inf, read by Gemm 'fc'\)"):
        ptq.convert(path, ptq.Config(write_ort=False))


def test_an_infinite_mask_constant_is_kept_and_a_nan_constant_named():
    """-inf in a constant an elementwise op reads is often meant (an additive attention mask)."""
    model = tiny.small_cnn()
    mask = numpy_helper.from_array(np.array([0.0, -np.inf], np.float32), "mask")
    nan = numpy_helper.from_array(np.array([np.nan], np.float32), "odd")
    model.graph.initializer.extend([mask, nan])
    notes: list[str] = []
    loader.require_finite_weights(model, notes)  # no weight reads them: no refusal
    assert notes == ["1 constant(s) hold NaN ('odd'): kept float; outputs they reach may be NaN"]
