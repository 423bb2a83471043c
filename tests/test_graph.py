"""ptq.graph: the helpers over onnx graphs every stage shares."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.graph import attr, consumers, has_subgraph, initializers, iter_graphs, ort_error_line, producers, unique_name


def _model() -> onnx.ModelProto:
    body = helper.make_graph([helper.make_node("Identity", ["x"], ["z"], name="inner")], "body", [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Add", ["a", "w"], ["b"], name="add"),
        helper.make_node("Mul", ["a", "b"], ["y"], name="mul"),
        helper.make_node("If", ["c"], ["z"], name="if", then_branch=body, else_branch=body),
        helper.make_node("LeakyRelu", ["y"], ["q"], name="leaky", alpha=0.2),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(2, np.float32), "w")],
    )  # fmt: skip
    return helper.make_model(graph)


def test_producers_consumers_initializers_and_attributes():
    model = _model()
    assert producers(model.graph)["b"].name == "add"
    assert [n.name for n in consumers(model.graph)["a"]] == ["add", "mul"]
    assert list(initializers(model.graph)) == ["w"]
    leaky = model.graph.node[4]
    assert attr(leaky, "alpha") == np.float32(0.2) and attr(leaky, "missing", 7) == 7


def test_subgraphs_are_found_and_walked():
    model = _model()
    assert [has_subgraph(n) for n in model.graph.node] == [False, False, False, True, False]
    assert [g.name for g in iter_graphs(model.graph)] == ["g", "body", "body"]


def test_unique_names_and_one_line_onnxruntime_errors():
    assert unique_name("t", {"t", "t_1"}) not in {"t", "t_1"}
    assert unique_name("fresh", set()) == "fresh"
    line = ort_error_line(RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Load model failed:\nsecond line"))
    assert "\n" not in line and line
