"""ptq.quantize.weights: int8 weights behind DequantizeLinear, or folded at load, run by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq.errors import UnsupportedModelError
from ptq.quantize.rewrite import GraphBuilder, finish
from ptq.quantize.weights import WeightMemo, WeightStore, require_finite


def _matmul_model(w: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, w.shape[1]])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


W = (np.random.default_rng(0).normal(size=(8, 4)) + 0.5).astype(np.float32)  # off-centre: a nonzero zero point
X = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)


def _rebuilt(symmetric: bool, how: str) -> onnx.ModelProto:
    model = _matmul_model(W)
    b = GraphBuilder(model)
    store = WeightStore(b, {"w": model.graph.initializer[0]}, symmetric=symmetric, reduce_range=False)
    nodes: list[onnx.NodeProto] = []
    if how == "dq":
        w_out, _ = store.dequantized("w", 1, "mm", nodes)
    else:
        w_out = store.folded_at_load("w", 1, nodes)
    nodes.append(helper.make_node("MatMul", ["x", w_out], ["y"], name="mm"))
    return finish(model, nodes, b)


@pytest.mark.parametrize("how", ["dq", "folded"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_rebuilt_weight_matches_float_within_int8_step(symmetric, how):
    model = _rebuilt(symmetric, how)
    assert "w" not in {t.name for t in model.graph.initializer}  # float weight dropped
    int8 = [t for t in model.graph.initializer if t.data_type == TensorProto.INT8]
    assert [list(t.dims) for t in int8 if t.name.startswith("w/int8")] == [[8, 4]]
    y = _run(model, X)
    expected = X @ W
    step = (W.max(axis=0) - W.min(axis=0)) / 254  # per output channel (axis 1)
    bound = np.abs(X).sum(axis=1, keepdims=True) * step  # each weight is off by at most half a step: 2x margin
    assert np.all(np.abs(y - expected) <= bound)
    assert not np.allclose(y, expected, atol=1e-7)  # it really went through int8


def test_folded_asymmetric_weight_subtracts_the_zero_point():
    ops = [n.op_type for n in _rebuilt(False, "folded").graph.node]
    assert ops == ["Cast", "Sub", "Mul", "MatMul"]
    ops = [n.op_type for n in _rebuilt(True, "folded").graph.node]
    assert ops == ["Cast", "Mul", "MatMul"]


def test_int8_is_cached_per_store_and_memo_shared_across_stores():
    model = _matmul_model(W)
    inits = {"w": model.graph.initializer[0]}
    memo = WeightMemo()
    b1 = GraphBuilder(model)
    s1 = WeightStore(b1, inits, symmetric=True, reduce_range=False, memo=memo)
    first = s1.int8("w", 1)
    assert s1.int8("w", 1) is first
    assert len(b1.new_initializers) == 3  # q, scale, zero point: made once
    assert first.axis == 1 and first.scale_values.shape == (4,)
    s2 = WeightStore(GraphBuilder(model), inits, symmetric=True, reduce_range=False, memo=memo)
    q1 = s1.quantized_arrays("w", 1)
    assert s2.quantized_arrays("w", 1) is q1  # the memo's arrays, not recomputed
    assert s2.quantized_arrays("w", None) is not q1 and len(memo) == 2
    per_tensor = s2.int8("w", None)
    assert per_tensor.axis is None and per_tensor.scale_values.ndim == 0


def test_non_finite_weight_is_refused_with_a_count():
    with pytest.raises(UnsupportedModelError, match="2 NaN/Inf"):
        require_finite("w", np.array([1.0, np.nan, np.inf], np.float32))
    ok = np.ones(3, np.float32)
    assert require_finite("w", ok) is ok
