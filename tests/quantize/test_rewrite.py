"""ptq.quantize.rewrite: unique names, constants, Q/DQ nodes, and finish() run by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ptq.quantize.rewrite import GraphBuilder, finish


def _identity_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="id")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.ones(4, np.float32), "unused")],
        value_info=[helper.make_tensor_value_info("stale", TensorProto.FLOAT, [9])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    return model


def test_unique_avoids_every_existing_name_and_its_own_results():
    b = GraphBuilder(_identity_model())
    assert b.unique("fresh") == "fresh"
    assert b.unique("fresh") == "fresh_2"
    assert b.unique("x") == "x_2"  # graph input
    assert b.unique("id") == "id_2"  # node name
    assert b.unique("unused") == "unused_2"  # initializer


def test_constant_keeps_a_0d_scale_0d():
    b = GraphBuilder(_identity_model())
    name = b.constant("s", np.float32(0.5))
    assert list(b.new_initializers[name].dims) == []
    name2 = b.constant("s", np.arange(3, dtype=np.int8))
    assert name2 != name and list(b.new_initializers[name2].dims) == [3]


def test_finish_builds_a_qdq_graph_onnxruntime_runs():
    model = _identity_model()
    b = GraphBuilder(model)
    scale = b.constant("scale", np.float32(0.1))
    zp = b.constant("zp", np.int8(0))
    q = b.unique("x_q")
    nodes = [b.quantize_node("x", scale, zp, q), b.dequantize_node(q, scale, None, "y")]
    out = finish(model, nodes, b)
    assert "unused" not in {t.name for t in out.graph.initializer}
    assert len(out.graph.value_info) == 0
    assert [o.domain for o in out.opset_import] == [""]  # com.microsoft no longer used
    onnx.checker.check_model(out)
    x = np.array([0.04, -1.0, 20.0, 0.26], np.float32)
    (y,) = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, [0.0, -1.0, 12.7, 0.3], atol=1e-6)  # rounded to 0.1 steps, saturated at 127


def test_axis_attribute_only_when_given():
    b = GraphBuilder(_identity_model())
    assert not b.quantize_node("x", "s", "z", "o").attribute
    node = b.dequantize_node("q", "s", "z", "o2", axis=1)
    assert helper.get_attribute_value(node.attribute[0]) == 1
    assert list(node.input) == ["q", "s", "z"]
