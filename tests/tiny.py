"""Tiny hand-built models for unit tests (structure only; real models live in bench.zoo)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def small_cnn(opset: int = 13, dtype: int = TensorProto.FLOAT, seed: int = 0) -> onnx.ModelProto:
    """x[N,3,16,16] -> Conv+Relu -> Conv -> Add(residual) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax."""
    rng = np.random.default_rng(seed)
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    w1 = (rng.normal(size=(8, 3, 3, 3)) * 0.3).astype(np_dtype)
    b1 = (rng.normal(size=8) * 0.1).astype(np_dtype)
    w2 = (rng.normal(size=(8, 8, 3, 3)) * 0.2).astype(np_dtype)
    b2 = (rng.normal(size=8) * 0.1).astype(np_dtype)
    wf = (rng.normal(size=(8, 10)) * 0.5).astype(np_dtype)
    bf = (rng.normal(size=10) * 0.1).astype(np_dtype)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("x", dtype, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("prob", dtype, ["N", 10])],
        [_init(n, a) for n, a in [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2), ("wf", wf), ("bf", bf)]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def small_mlp(seed: int = 0) -> onnx.ModelProto:
    """Two MatMul layers with a GELU-like float op between them, and an integer side input."""
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(size=(32, 64)) * 0.2).astype(np.float32)
    w2 = (rng.normal(size=(64, 16)) * 0.2).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Tanh", ["h"], ["a"], name="act"),
        helper.make_node("MatMul", ["a", "w2"], ["y0"], name="fc2"),
        helper.make_node("Cast", ["n"], ["nf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Add", ["y0", "nf"], ["y"], name="add_n"),
    ]
    graph = helper.make_graph(
        nodes,
        "small_mlp",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 32]),
            helper.make_tensor_value_info("n", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", 16])],
        [_init("w1", w1), _init("w2", w2)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def save(model: onnx.ModelProto, path) -> str:
    onnx.save_model(model, str(path))
    return str(path)


def image_samples(folder, n: int = 6, seed: int = 0, shape=(1, 3, 16, 16)) -> str:
    """Write ``n`` .npz samples for ``small_cnn`` (smooth images: what a CNN expects)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[2]), np.linspace(-1, 1, shape[3]), indexing="ij")
    for i in range(n):
        phase = rng.uniform(0, 6.28, size=3)
        img = np.stack([np.sin(3 * xx + p) * np.cos(2 * yy - p) for p in phase])[None].astype(np.float32)
        np.savez(folder / f"sample_{i:03d}.npz", x=img)
    return str(folder)


def embedding_mlp(seed: int = 0) -> onnx.ModelProto:
    """ids -> Gather(table) -> MatMul -> Relu -> MatMul: an embedding lookup feeding linear layers."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(500, 32)).astype(np.float32)
    w1 = (rng.normal(size=(32, 48)) * 0.2).astype(np.float32)
    w2 = (rng.normal(size=(48, 8)) * 0.2).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
        helper.make_node("MatMul", ["e", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "embedding_mlp",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", 8])],
        [_init("table", table), _init("w1", w1), _init("w2", w2)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def id_samples(folder, n: int = 4, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.savez(folder / f"sample_{i:03d}.npz", ids=rng.integers(0, 500, size=(1, 5 + i)).astype(np.int64))
    return str(folder)


def difference_model() -> onnx.ModelProto:
    """y = x W1 - x W2 with W2 close to W1: int8 rounding of either product swamps the small
    difference (the output collapses), and only both MatMuls float give it back."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(16, 8)).astype(np.float32)
    w2 = (w1 + 0.02 * rng.normal(size=(16, 8))).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"], name="fc_a"),
        helper.make_node("MatMul", ["x", "w2"], ["b"], name="fc_b"),
        helper.make_node("Sub", ["a", "b"], ["y"], name="difference"),
    ]
    graph = helper.make_graph(
        nodes, "difference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def vector_samples(folder, n: int = 12, rows: int = 4) -> str:
    """``n`` .npz samples of ``rows`` 16-float vectors for ``difference_model``."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.savez(folder / f"s{i:02d}.npz", x=rng.normal(size=(rows, 16)).astype(np.float32))
    return str(folder)


def save_matmul(w: np.ndarray, path) -> str:
    """A one-MatMul model ``y = x @ w`` (x: [1, 16]) saved at ``path``."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, w.shape[1]])],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)
