"""Activation equalization (ptq.rewrites.equalize_activations): exact in float, evens the depthwise input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq.rewrites import equalize_activations
from tests.rewrites.test_equalize import _run, _saved_with_samples


def _hardswish_model(form: str = "hardsigmoid") -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w1 = (rng.normal(size=(8, 3, 3, 3)) * np.logspace(-1, 1, 8).reshape(8, 1, 1, 1)).astype(np.float32)
    b1 = rng.normal(size=8).astype(np.float32)
    dw = rng.normal(size=(8, 1, 3, 3)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w1", "b1"], ["y"], name="conv", pads=[1, 1, 1, 1])
    depthwise = helper.make_node("Conv", ["z", "dw"], ["out"], name="dw", group=8, pads=[1, 1, 1, 1])
    constants = {"w1": w1, "b1": b1, "dw": dw}
    if form == "hardsigmoid":
        nodes = [conv, helper.make_node("HardSigmoid", ["y"], ["h"], name="hsig", alpha=1 / 6, beta=0.5),
                 helper.make_node("Mul", ["y", "h"], ["z"], name="hswish"), depthwise]  # fmt: skip
    else:  # x * relu6(x + 3) / 6, as Paddle exports it
        constants.update(three=np.array(3, np.float32), zero=np.array(0, np.float32), six=np.array(6, np.float32))
        nodes = [conv, helper.make_node("Add", ["y", "three"], ["a"], name="hsig"),
                 helper.make_node("Clip", ["a", "zero", "six"], ["c"], name="clip"),
                 helper.make_node("Mul", ["y", "c"], ["p"], name="hswish"),
                 helper.make_node("Div", ["p", "six"], ["z"], name="div"), depthwise]  # fmt: skip
    inits = [numpy_helper.from_array(v, n) for n, v in constants.items()]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 6, 6])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("form", ["hardsigmoid", "relu6"])
def test_activation_equalization_is_exact_in_float_and_evens_the_depthwise_input(form):
    model = _hardswish_model(form)
    blocks = equalize_activations.find_hardswish_blocks(model)
    assert [(b.conv, b.gate, b.mul, b.depthwise, b.activation) for b in blocks] == [("conv", "hsig", "hswish", "dw", "z")]
    x = np.random.default_rng(4).normal(size=(1, 3, 6, 6)).astype(np.float32)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    before, z = _run(probe, x)
    absmax = {"z": np.abs(z).max(axis=(0, 2, 3))}
    keep_float, rescaled = equalize_activations.equalize_activations(model, blocks, absmax)
    assert len(keep_float) == 1 and set(rescaled) == ({"y", "z"} if form == "hardsigmoid" else {"y", "p", "z"})  # p: before the Div 6
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    after, z_after = _run(probe, x)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    spread = lambda v: np.abs(v).max(axis=(0, 2, 3)).max() / np.median(np.abs(v).max(axis=(0, 2, 3)))
    assert spread(z_after) < spread(z) / 2  # the few large channels no longer set the per-tensor range alone


def test_activation_scales():
    np.testing.assert_allclose(equalize_activations.activation_scales(np.array([4.0, 1.0, 0.0])), [1.0, 0.5, 1.0])


@pytest.mark.parametrize("dtype,symmetric", [(np.uint8, False), (np.int8, True)])
def test_activation_scales_on_the_grid_survive_the_quantizer_unrounded(dtype, symmetric):
    from ptq import qmath

    absmax = np.array([300.0, 17.0, 1.0, 1e-9, 0.0, 42.5])
    s = equalize_activations.activation_scales(absmax, grid=(dtype, symmetric))
    unsnapped = equalize_activations.activation_scales(absmax)
    q, scale, zero_point = qmath.quantize_constant(s.astype(np.float32), dtype, symmetric=symmetric)
    np.testing.assert_allclose(qmath.dequantize(q, scale, zero_point), s, rtol=1e-6)  # a fixed point of the quantizer
    assert (s > 0).all() and s.min() >= float(scale) * (1 - 1e-6)  # no channel zeroed: at least one step
    np.testing.assert_allclose(s, np.maximum(unsnapped, float(scale)), atol=float(scale) / 2 + 1e-7)  # moved at most half a step


def test_activation_equalization_needs_calibration_data_and_is_recorded(tmp_path):
    from ptq import Config, convert
    from ptq.errors import UsageError

    with pytest.raises(UsageError, match="needs -c"):
        Config(output=tmp_path / "x.onnx", equalize_activations=True)
    path, data = _saved_with_samples(_hardswish_model(), tmp_path)
    ranges = tmp_path / "ranges.json"
    first = convert(path, Config(output=tmp_path / "a.onnx", calibration_data=data, equalize_activations=True, save_ranges=ranges, write_ort=False))
    (rewrite,) = first.recipe.rewrites
    assert rewrite.name == "equalize_activations" and len(rewrite.applied) == 1 and not rewrite.keep_float
    # the per-channel Mul runs int8 (DequantizeLinear inputs, a QuantizeLinear reader: onnxruntime's
    # QLinearMul group), and its constant sits on the quantizer's grid: the int8 kernel reads it unrounded
    written = onnx.load(tmp_path / "a.onnx")
    made_by = {o: n for n in written.graph.node for o in n.output}
    (mul,) = [n for n in written.graph.node if n.op_type == "Mul" and n.name.endswith("/equalize")]
    assert [made_by[i].op_type for i in mul.input] == ["DequantizeLinear", "DequantizeLinear"]
    assert [n.op_type for n in written.graph.node if mul.output[0] in n.input] == ["QuantizeLinear"]
    (row,) = [e for e in first.oplist.nodes if e.inserted]  # the op list's row for it: int8
    assert row.name == mul.name and row.kernel == "int8" and "activation equalization" in row.reason
    # the ranges file records the channel maxima: --load-ranges repeats the pass without samples
    assert rewrite.measured and {name for name, _ in rewrite.measured} == {"z"}
    again = convert(path, Config(output=tmp_path / "b.onnx", load_ranges=ranges, write_ort=False))
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    assert again.recipe.rewrites == first.recipe.rewrites
    with pytest.raises(UsageError, match="calibrated with --equalize-activations, this run has no "):
        convert(path, Config(output=tmp_path / "c.onnx", load_ranges=ranges, write_ort=False, equalize_activations=False))
