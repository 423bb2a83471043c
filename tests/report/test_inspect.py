"""ptq.report.inspect: int8 support by op type, weights by op type, and inspect_model on tiny
float and hand-built QDQ models (what onnxruntime runs int8 read back from it)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.report.inspect import OTHER, attribute_weights, inspect_model, int8_support, runs_int8

W = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)


def _save(nodes, inits, path, out_dtype=TensorProto.FLOAT) -> str:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", out_dtype, ["N", 4])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _float_model(path) -> str:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Tanh", ["h"], ["y"], name="act"),
    ]
    return _save(nodes, [numpy_helper.from_array(W, "w")], path)


def _qdq_model(path) -> str:
    s = lambda name, v: numpy_helper.from_array(np.float32(v), name)  # noqa: E731
    z = lambda name: numpy_helper.from_array(np.int8(0), name)  # noqa: E731
    wq = np.clip(np.round(W / 0.02), -127, 127).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="qx"),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="dqx"),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], name="dqw"),
        helper.make_node("MatMul", ["xd", "wd"], ["h"], name="mm"),
        helper.make_node("QuantizeLinear", ["h", "sy", "zy"], ["hq"], name="qy"),
        helper.make_node("DequantizeLinear", ["hq", "sy", "zy"], ["y"], name="dqy"),
    ]
    inits = [numpy_helper.from_array(wq, "wq"), s("sx", 0.03), z("zx"), s("sw", 0.02), z("zw"), s("sy", 0.1), z("zy")]
    return _save(nodes, inits, path)


def test_int8_support_and_runs_int8():
    assert int8_support("Conv") == "int8 kernel (QLinearConv)"
    assert "DynamicQuantizeMatMul" in int8_support("MatMul")
    assert int8_support("Add") == "int8 kernel (QLinearAdd)"
    assert int8_support("Reshape") == "runs on int8 tensors"
    assert int8_support("ConvTranspose") == "int8 weights stored, float kernel"
    assert int8_support("Tanh") == "float only"
    assert runs_int8("Conv") and runs_int8("Relu") and runs_int8("Transpose")
    assert not runs_int8("Tanh") and not runs_int8("ConvTranspose") and not runs_int8("QuantizeLinear")


def test_weights_reached_through_dequantize_count_for_their_op(tmp_path):
    graph = onnx.load(_qdq_model(tmp_path / "q.onnx")).graph
    weights = attribute_weights(graph)
    # the int8 weight (32 bytes), its scale and zero point count for MatMul, through the DQ
    assert weights["MatMul"] == (32 + 1 + 1, 32 + 4 + 1)
    assert weights["QuantizeLinear"][0] == 4  # x's and y's scale and zero point


def test_inspect_float_model(tmp_path):
    path = _float_model(tmp_path / "f.onnx")
    info = inspect_model(path)
    assert (info.ir_version, info.opset, info.producer, info.nodes) == (8, 17, "test", 2)
    assert [v.describe() for v in info.inputs] == ["x  float32[N, 8]"]
    assert info.parameters == 32 and info.weight_bytes == 128
    assert not info.quantized and info.quantization_ops == {}
    assert info.executed == {"int8": 0, "hybrid": 0, "float": 2}
    by_type = {s.op_type: s for s in info.op_types}
    assert by_type["MatMul"].bytes == 128 and by_type["Tanh"].int8_support == "float only"
    sizes = info.bytes_by_op_type()
    assert sizes["MatMul"] == 128 and sizes[OTHER] == info.size_bytes - 128
    assert info.to_json()["opset"] == 17
    assert inspect_model(path, run_onnxruntime=False).executed is None


def test_inspect_qdq_model_reads_back_the_int8_kernel(tmp_path):
    info = inspect_model(_qdq_model(tmp_path / "q.onnx"))
    assert info.quantized
    assert info.quantization_ops == {"DequantizeLinear": 3, "QuantizeLinear": 2}
    assert info.executed == {"int8": 1, "hybrid": 0, "float": 0}  # onnxruntime fused QLinearMatMul
    assert info.node_kernels["mm"] == "int8"
