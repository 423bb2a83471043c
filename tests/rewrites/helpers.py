"""Shared by the rewrite tests: run a model through onnxruntime, build tiny models inline."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def optimized_ops(model: onnx.ModelProto, tmp_path) -> list[tuple[str, str, str]]:
    """(domain, op_type, activation) of each node onnxruntime keeps at the default (all) level."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    result = []
    for node in optimized.graph.node:
        activation = next((a.s.decode() for a in node.attribute if a.name == "activation"), "")
        result.append((node.domain, node.op_type, activation))
    return result


def model_of(nodes, inputs, outputs, initializers, opset: int = 13) -> onnx.ModelProto:
    """A float model; ``outputs``: names, or (name, shape) where a checked model is needed."""
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(*((o, TensorProto.FLOAT, None) if isinstance(o, str) else (o[0], TensorProto.FLOAT, o[1]))) for o in outputs],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    result = onnx.ModelProto()
    result.CopyFrom(model)
    return result


def assert_close(expected: list[np.ndarray], got: list[np.ndarray], rel: float = 1e-5) -> None:
    """Equal up to float rounding: every element within ``rel`` of the largest magnitude."""
    for e, g in zip(expected, got, strict=True):
        assert e.shape == g.shape
        scale = max(float(np.abs(e).max()), 1e-30)
        assert float(np.abs(e - g).max()) <= rel * scale, float(np.abs(e - g).max()) / scale
