"""Cross-layer equalization: exact in float, balanced weight ranges, only where it is free."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq.rewrites import equalize


def _model(middle: str = "Relu", extra_reader: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    # A first conv whose folded BatchNorm left channel ranges 100x apart, a depthwise conv, a pointwise conv.
    w1 = (rng.normal(size=(8, 3, 3, 3)) * np.logspace(-1, 1, 8).reshape(8, 1, 1, 1)).astype(np.float32)
    b1 = rng.normal(size=8).astype(np.float32)
    w2 = rng.normal(size=(8, 1, 3, 3)).astype(np.float32)
    w3 = rng.normal(size=(4, 8, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node(middle, ["c1"], ["a1"], name="act1"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["a2"], name="act2"),
        helper.make_node("Conv", ["a2", "w3"], ["y"], name="pw"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["c1"], ["side"], name="side"))
        outputs.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 8, 6, 6]))
    inits = [numpy_helper.from_array(v, n) for n, v in (("w1", w1), ("b1", b1), ("w2", w2), ("w3", w3))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _weights(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("middle", ["Relu", "LeakyRelu"])
def test_equalization_is_exact_in_float_and_balances_the_pairs(middle):
    model = _model(middle)
    pairs = equalize.find_pairs(model)
    assert [(p.first, p.second, p.between) for p in pairs] == [("conv1", "dw", ("act1",)), ("dw", "pw", ("act2",))]
    x = np.random.default_rng(1).normal(size=(1, 3, 6, 6)).astype(np.float32)
    before = _run(model, x)[0]
    assert equalize.apply(model, pairs) == 2
    after = _run(model, x)[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    w = _weights(model)
    r1 = np.abs(w["w1"]).reshape(8, -1).max(axis=1)
    r2 = np.abs(w["w2"]).reshape(8, -1).max(axis=1)
    spread_before = np.ptp(np.log10(np.abs(_weights(_model(middle))["w1"]).reshape(8, -1).max(axis=1)))
    assert spread_before > 1.5 and np.ptp(np.log10(r1)) < spread_before / 2  # 100x apart before, balanced after
    assert np.ptp(np.log10(r2)) < spread_before  # the depthwise conv took its share


def test_not_applied_through_other_readers_or_non_homogeneous_ops():
    assert [p.first for p in equalize.find_pairs(_model(extra_reader=True))] == ["dw"]
    assert [p.first for p in equalize.find_pairs(_model("Sigmoid"))] == ["dw"]


def test_a_shared_weight_is_copied_before_it_is_rescaled():
    model = _model()
    model.graph.node.append(helper.make_node("Conv", ["x", "w1"], ["other"], name="other", pads=[1, 1, 1, 1]))
    model.graph.output.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [1, 8, 6, 6]))
    x = np.random.default_rng(2).normal(size=(1, 3, 6, 6)).astype(np.float32)
    before = _run(model, x)
    equalize.apply(model, equalize.find_pairs(model))
    after = _run(model, x)
    np.testing.assert_array_equal(after[1], before[1])  # the other reader still sees the original weight
    np.testing.assert_allclose(after[0], before[0], rtol=1e-4, atol=1e-4 * np.abs(before[0]).max())
    assert "w1/equalized" in _weights(model)


def test_equalization_scales_guard_zeros():
    s = equalize.equalization_scales(np.array([4.0, 0.0, 1.0]), np.array([1.0, 2.0, 0.0]))
    np.testing.assert_array_equal(s, [2.0, 1.0, 1.0])


def _saved_with_samples(model: onnx.ModelProto, folder):
    """``model`` saved in ``folder`` and 4 calibration samples for its [1, 3, 6, 6] input."""
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    data = folder / "calib"
    data.mkdir()
    for i in range(4):
        np.save(data / f"s{i}.npy", np.random.default_rng(i).normal(size=(1, 3, 6, 6)).astype(np.float32))
    return path, data


def test_ranges_saved_with_equalization_need_it_again(tmp_path):
    from ptq import Config, convert
    from ptq.errors import UsageError

    path, data = _saved_with_samples(_model(), tmp_path)
    ranges = tmp_path / "ranges.json"
    first = convert(path, Config(output=tmp_path / "eq.onnx", calibration_data=data, equalize=True, save_ranges=ranges, write_ort=False))
    (rewrite,) = first.recipe.rewrites
    assert rewrite.name == "equalize" and len(rewrite.applied) == 2 and rewrite.declined == ()
    with pytest.raises(UsageError, match="calibrated with --equalize, this run has no --equalize, --equalize-activations or --smoothquant"):
        convert(path, Config(output=tmp_path / "plain.onnx", load_ranges=ranges, write_ort=False))
    again = convert(path, Config(output=tmp_path / "again.onnx", load_ranges=ranges, equalize=True, write_ort=False))
    assert again.outputs.onnx.read_bytes() == first.outputs.onnx.read_bytes()


def test_equalization_applies_in_dynamic_mode_too(tmp_path):
    from ptq import Config, convert

    path = tmp_path / "cnn.onnx"
    onnx.save(_model(), str(path))
    result = convert(path, Config(output=tmp_path / "dyn.onnx", equalize=True, write_ort=False))
    assert result.mode == "dynamic"
    assert [(r.name, len(r.applied)) for r in result.recipe.rewrites] == [("equalize", 2)]
    plain = convert(path, Config(output=tmp_path / "plain.onnx", write_ort=False))
    assert plain.outputs.onnx.read_bytes() != result.outputs.onnx.read_bytes()
