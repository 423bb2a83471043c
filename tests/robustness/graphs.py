"""Small graphs of the shapes real exporters produce, which ptq must convert in both modes
(int8 where it can, float with a reason where it cannot, never a crash)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper

from tests.robustness.helpers import make_model, vi


def _w(seed: int, *shape, scale=0.3) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def if_model() -> onnx.ModelProto:
    """MatMul -> If(cond: MatMul | Relu) -> MatMul; the bodies read an outer tensor and weight."""
    then_g = helper.make_graph([helper.make_node("MatMul", ["h", "w2"], ["t"], name="then_mm")], "then", [], [vi("t")])
    else_g = helper.make_graph([helper.make_node("Relu", ["h"], ["e"], name="else_relu")], "else", [], [vi("e")])
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("If", ["c"], ["b"], then_branch=then_g, else_branch=else_g, name="if"),
        helper.make_node("MatMul", ["b", "w3"], ["y"], name="mm3"),
    ]
    return make_model(nodes, [vi("x", shape=["B", 32]), vi("c", T.BOOL, [])], [vi("y", shape=["B", 16])],
                      {"w1": _w(1, 32, 32), "w2": _w(2, 32, 32), "w3": _w(3, 32, 16)})  # fmt: skip


def loop_model() -> onnx.ModelProto:
    """A Loop whose body multiplies its state by a weight n times (trip count is an input)."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["s_in", "w2"], ["m"], name="body_mm"),
         helper.make_node("Tanh", ["m"], ["s_out"], name="body_tanh"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond")],
        "body", [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("s_in")], [vi("cond_out", T.BOOL, []), vi("s_out")],
    )  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Loop", ["n", "", "h"], ["s"], body=body, name="loop"),
        helper.make_node("MatMul", ["s", "w3"], ["y"], name="mm3"),
    ]
    return make_model(nodes, [vi("x", shape=["B", 32]), vi("n", T.INT64, [])], [vi("y", shape=["B", 16])],
                      {"w1": _w(1, 32, 32), "w2": _w(2, 32, 32), "w3": _w(3, 32, 16)})  # fmt: skip


def scan_model() -> onnx.ModelProto:
    """A Scan over the rows of an activation: a running sum and a per-row MatMul."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "xi"], ["acc_out"], name="body_add"),
         helper.make_node("MatMul", ["xi", "w2"], ["yi"], name="body_mm")],
        "body", [vi("acc_in", shape=[32]), vi("xi", shape=[32])], [vi("acc_out", shape=[32]), vi("yi", shape=[32])],
    )  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Scan", ["acc0", "h"], ["acc", "ys"], body=body, num_scan_inputs=1, name="scan"),
        helper.make_node("MatMul", ["ys", "w3"], ["y"], name="mm3"),
    ]
    return make_model(nodes, [vi("x", shape=["T", 32])], [vi("y", shape=["T", 16]), vi("acc", shape=[32])],
                      {"w1": _w(1, 32, 32), "w2": _w(2, 32, 32), "w3": _w(3, 32, 16), "acc0": np.zeros(32, np.float32)})  # fmt: skip


def recurrent_model(op: str) -> onnx.ModelProto:
    """MatMul -> LSTM/GRU -> Squeeze -> MatMul, with symbolic sequence length and batch."""
    gates, hidden, size = (4 if op == "LSTM" else 3), 16, 8
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["xin"], name="proj"),
        helper.make_node(op, ["xin", "W", "R", "B"], ["Y", "Yh"], hidden_size=hidden, name="rnn"),
        helper.make_node("Squeeze", ["Y", "axis"], ["Ys"], name="squeeze"),
        helper.make_node("MatMul", ["Ys", "w3"], ["y"], name="head"),
    ]
    inits = {"w0": _w(0, 8, size), "W": _w(1, 1, gates * hidden, size), "R": _w(2, 1, gates * hidden, hidden),
             "B": _w(3, 1, 2 * gates * hidden), "w3": _w(4, hidden, 4), "axis": np.array([1], np.int64)}  # fmt: skip
    return make_model(nodes, [vi("x", shape=["S", "B", 8])], [vi("y", shape=["S", "B", 4])], inits)


def multi_input_model() -> onnx.ModelProto:
    """Float image of free size, int64 token ids, a bool mask and a float state in; two outputs."""
    nodes = [
        helper.make_node("Conv", ["img", "wc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("ReduceMean", ["e"], ["em"], axes=[1], keepdims=0, name="mean"),
        helper.make_node("Concat", ["f", "em", "state"], ["cat"], axis=1, name="cat"),
        helper.make_node("Gemm", ["cat", "wf"], ["h"], name="fc"),
        helper.make_node("Cast", ["mask"], ["mf"], to=T.FLOAT, name="cast_mask"),
        helper.make_node("Mul", ["h", "mf"], ["y"], name="mask_mul"),
        helper.make_node("Tanh", ["h"], ["new_state"], name="state_tanh"),
    ]
    inputs = [vi("img", shape=["B", 3, "H", "W"]), vi("ids", T.INT64, ["B", "L"]), vi("mask", T.BOOL, ["B", 1]), vi("state", shape=["B", 16])]
    return make_model(nodes, inputs, [vi("y", shape=["B", 16]), vi("new_state", shape=["B", 16])],
                      {"wc": _w(1, 8, 3, 3, 3), "emb": _w(2, 100, 8), "wf": _w(3, 32, 16)})  # fmt: skip


def wrong_output_shape_model() -> onnx.ModelProto:
    """The declared output shape [1, 5, 7] is not what the graph computes ([1, 8, 16, 16])."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return make_model(nodes, [vi("x", shape=[1, 3, 16, 16])], [vi("y", shape=[1, 5, 7])], {"w": _w(1, 8, 3, 3, 3)})


def shared_weight_model(opset: int = 17) -> onnx.ModelProto:
    """One conv weight read by three Convs, one matrix by two MatMuls and a Gemm (transposed)."""
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w", "b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", "w"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c3"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "wm"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu2"),
        helper.make_node("MatMul", ["hr", "wm"], ["h2"], name="mm2"),
        helper.make_node("Gemm", ["h2", "wm", "bg"], ["y"], name="gemm", transB=1),
    ]
    inits = {"w": _w(1, 8, 8, 3, 3, scale=0.1), "b": _w(2, 8), "wm": _w(3, 8, 8), "bg": _w(4, 8)}
    return make_model(nodes, [vi("x", shape=["N", 8, 16, 16])], [vi("y", shape=["N", 8])], inits, opset=opset)


def weights_as_inputs_model() -> onnx.ModelProto:
    """IR 3, opset 9: every weight is listed as a graph input too (old exporters)."""
    model = shared_weight_model(opset=9)
    model.ir_version = 3
    for t in model.graph.initializer:
        model.graph.input.append(vi(t.name, t.data_type, list(t.dims)))
    return model


def microsoft_ops_model() -> onnx.ModelProto:
    """com.microsoft Gelu/FastGelu (onnxruntime contrib ops) between MatMuls: kept float."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Gelu", ["h"], ["g"], domain="com.microsoft", name="gelu"),
        helper.make_node("MatMul", ["g", "w2"], ["h2"], name="mm2"),
        helper.make_node("FastGelu", ["h2"], ["y"], domain="com.microsoft", name="fast_gelu"),
    ]
    return make_model(nodes, [vi("x", shape=["B", 32])], [vi("y", shape=["B", 32])], {"w1": _w(1, 32, 32), "w2": _w(2, 32, 32)},
                      extra_opsets=[("com.microsoft", 1)])  # fmt: skip


def infinite_mask_model() -> onnx.ModelProto:
    """An attention-style additive mask holding -inf between two convolutions (valid float model)."""
    mask = np.zeros((1, 8, 16, 16), np.float32)
    mask[..., :4] = -np.inf
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "mask"], ["m"], name="mask_add"),
        helper.make_node("Relu", ["m"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    return make_model(nodes, [vi("x", shape=[1, 3, 16, 16])], [vi("y", shape=[1, 8, 16, 16])], {"w": _w(1, 8, 3, 3, 3), "w2": _w(2, 8, 8, 3, 3), "mask": mask})


def constant_tensors_model() -> onnx.ModelProto:
    """All-zero weights and activations that are constant zero: scales must stay finite."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "zero"], ["z"], name="times_zero"),
        helper.make_node("Conv", ["z", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "wz"], ["c3"], name="conv_zero_weight", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "c3"], ["y"], name="add"),
    ]
    inits = {"w": _w(1, 8, 3, 3, 3), "w2": _w(2, 8, 8, 3, 3), "zero": np.zeros(1, np.float32), "wz": np.zeros((8, 3, 3, 3), np.float32)}
    return make_model(nodes, [vi("x", shape=[1, 3, 16, 16])], [vi("y", shape=[1, 8, 16, 16])], inits)


def passthrough_model() -> onnx.ModelProto:
    """Nothing to quantize: an Identity and a Relu."""
    nodes = [helper.make_node("Identity", ["x"], ["i"], name="identity"), helper.make_node("Relu", ["i"], ["y"], name="relu")]
    return make_model(nodes, [vi("x", shape=["N", 4])], [vi("y", shape=["N", 4])])


def unnamed_duplicate_nodes_model() -> onnx.ModelProto:
    """Nodes without names and with duplicate names (as some exporters write them)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"], name="same"),
        helper.make_node("MatMul", ["r", "w2"], ["h2"], name="same"),
        helper.make_node("Relu", ["h2"], ["y"]),
    ]
    return make_model(nodes, [vi("x", shape=["B", 32])], [vi("y", shape=["B", 32])], {"w1": _w(1, 32, 32), "w2": _w(2, 32, 32)})


GRAPHS = {
    "if": if_model,
    "loop": loop_model,
    "scan": scan_model,
    "lstm": lambda: recurrent_model("LSTM"),
    "gru": lambda: recurrent_model("GRU"),
    "multi_input": multi_input_model,
    "wrong_output_shape": wrong_output_shape_model,
    "shared_weight": shared_weight_model,
    "weights_as_inputs_ir3": weights_as_inputs_model,
    "microsoft_ops": microsoft_ops_model,
    "infinite_mask": infinite_mask_model,
    "constant_tensors": constant_tensors_model,
    "passthrough": passthrough_model,
    "unnamed_duplicate_nodes": unnamed_duplicate_nodes_model,
}


def feeds(model: onnx.ModelProto, n: int = 3, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` inputs for ``model``; symbolic dimensions take a different size in each sample."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    result = []
    for k in range(n):
        feed = {}
        for i in model.graph.input:
            if i.name in inits:
                continue
            tt = i.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else 2 + k for d in tt.shape.dim]
            dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
            if dtype == np.bool_:
                feed[i.name] = rng.integers(0, 2, size=shape).astype(bool)
            elif dtype == np.int64:
                feed[i.name] = rng.integers(0, 3, size=shape).astype(np.int64)
            else:
                feed[i.name] = rng.normal(size=shape).astype(dtype)
        result.append(feed)
    return result
