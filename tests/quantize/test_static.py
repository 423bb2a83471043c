"""ptq.quantize.static: what onnxruntime makes of the QDQ model it writes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import ptq
from tests.tiny import image_samples, save


def conv_chain() -> onnx.ModelProto:
    """x[N,3,16,16] -> conv1 -> conv2 -> conv3: each conv reads the one before directly."""
    rng = np.random.default_rng(0)
    shapes = {"w1": (8, 3, 3, 3), "w2": (8, 8, 3, 3), "w3": (8, 8, 3, 3)}
    inits = [numpy_helper.from_array((rng.normal(size=s) * 0.3).astype(np.float32), n) for n, s in shapes.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", "w3"], ["y"], name="conv3", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _optimized(path, tmp_path) -> onnx.ModelProto:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx"))


def test_a_conv_kept_float_between_int8_neighbours_runs_float(tmp_path):
    # onnxruntime quantizes the float weight of a Conv whose input comes from a per-tensor
    # DequantizeLinear (8-bit, per tensor) and fuses it into QLinearConv; the plan's float conv
    # must stay float, so its input is dequantized per axis.
    model = save(conv_chain(), tmp_path / "chain.onnx")
    calib = image_samples(tmp_path / "calib", n=4)
    result = ptq.convert(model, ptq.Config(output=tmp_path / "q.onnx", calibration_data=calib, exclude=("conv2",)))
    written = onnx.load(str(result.outputs.onnx))
    conv2 = next(n for n in written.graph.node if n.name == "conv2")
    feeding = next(n for n in written.graph.node if conv2.input[0] in n.output)
    assert feeding.op_type == "DequantizeLinear" and any(a.name == "axis" and a.i == 1 for a in feeding.attribute)
    ops = [n.op_type for n in _optimized(result.outputs.onnx, tmp_path).graph.node]
    assert ops.count("QLinearConv") == 2 and ops.count("Conv") == 1  # conv1 and conv3 int8, conv2 float
    assert {e.name: e.kernel for e in result.oplist.nodes}["conv2"] == "float"
