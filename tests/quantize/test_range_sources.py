"""Which tensors calibration must give a range: data-movement outputs and Softmax take none."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.config import Config
from ptq.quantize.plan import make_plan
from ptq.quantize.static import activation_qparams, calibrated_tensors, range_sources


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    fc = numpy_helper.from_array(rng.normal(size=(144, 10)).astype(np.float32), "fc")
    fc2 = numpy_helper.from_array(rng.normal(size=(10, 5)).astype(np.float32), "fc2")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["r"], name="flatten"),
        helper.make_node("MatMul", ["r", "fc"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=-1),
        helper.make_node("Reshape", ["prob", "shape"], ["prob2"], name="again"),
        helper.make_node("MatMul", ["prob2", "fc2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], [w, shape, fc, fc2],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return onnx.shape_inference.infer_shapes(model)


def test_movement_outputs_take_their_source_range_and_softmax_a_fixed_one():
    model = _model()
    config = Config(calibration_data="unused")
    plan = make_plan(model, config)
    sources = range_sources(model, plan)
    quantized = set(plan.activations)
    assert {"c", "p", "r", "prob", "prob2"} <= quantized
    assert sources["p"] == sources["r"] == "c"  # MaxPool and Reshape move c's int8 values
    assert sources["prob2"] == "prob"
    needed = calibrated_tensors(model, plan)
    assert "c" in needed and not {"p", "r"} & set(needed)
    assert "prob" not in needed and "prob2" not in needed  # Softmax fixes [0, 1]
    ranges = {t: (-1.0 - i, 2.0 + i) for i, t in enumerate(needed)}
    qparams = activation_qparams(model, plan, ranges, config)
    assert set(qparams) == quantized
    for tensor in quantized:
        source = sources[tensor]
        assert qparams[tensor] is qparams[source]
    assert float(qparams["prob2"].scale) == np.float32(1 / 255)
