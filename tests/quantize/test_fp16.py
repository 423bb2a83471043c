"""--fp16: float16 initializers read through Cast to float32; float32 inputs, outputs and kernels."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import ptq
from bench import zoo
from ptq.quantize import fp16
from tests.tiny import save, small_cnn


def run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_tiny_cnn_keeps_float32_io_and_agrees(tmp_path):
    source = save(small_cnn(), tmp_path / "cnn.onnx")
    result = ptq.convert(source, ptq.Config(output=tmp_path / "cnn.fp16.onnx", fp16=True))
    assert result.mode == "fp16"
    model = onnx.load(result.outputs.onnx)
    halves = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT16}
    assert halves and len(halves) == sum(1 for n in model.graph.node if n.op_type == "Cast" and n.input[0] in halves)
    assert all(i.type.tensor_type.elem_type == TensorProto.FLOAT for i in model.graph.input)
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in model.graph.output)
    assert all(e.kernel in ("float", "folded") for e in result.oplist.nodes)
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    want = run(source, {"x": x})[0]
    for path in (result.outputs.onnx, result.outputs.ort):  # the .ort runs too
        got = run(path, {"x": x})[0]
        assert got.dtype == np.float32 and cosine(want, got) > 0.9999


def test_values_float16_cannot_hold_stay_float32():
    big = np.full((4, 8), 1.0, dtype=np.float32)
    big[0, 0] = 1e5  # beyond 65504: would become inf
    small = np.ones(4, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "big"], ["h"], name="mm"),
            helper.make_node("MatMul", ["x", "ok"], ["g"], name="mm2"),
            helper.make_node("Add", ["h", "g"], ["s"], name="add"),
            helper.make_node("Mul", ["x", "small"], ["y"], name="mul"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 8]), helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(big, "big"), numpy_helper.from_array(big / 1e5, "ok"), numpy_helper.from_array(small, "small")],
    )
    result = fp16.convert(helper.make_model(graph))
    assert result.converted == ("ok",)
    assert "big" in result.kept and "range" in result.kept["big"]
    types = {t.name: t.data_type for t in result.model.graph.initializer}
    assert types["big"] == TensorProto.FLOAT and types["small"] == TensorProto.FLOAT
    assert types["ok_fp16"] == TensorProto.FLOAT16


def test_with_calibration_data_only_float_layers_get_float16_weights(tmp_path):
    """--fp16 -c: int8 as usual; the layers left float (here the log-mel layers the collapse guard keeps) go float16."""
    from tests.tuning.test_collapse import log_mel, speechlike

    source = tmp_path / "logmel.onnx"
    onnx.save(log_mel(), source)
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(8):
        np.save(calib / f"sample_{i}.npy", speechlike(rng))
    plain = ptq.convert(source, ptq.Config(output=tmp_path / "plain.onnx", calibration_data=calib, write_ort=False))
    mixed = ptq.convert(source, ptq.Config(output=tmp_path / "mixed.onnx", calibration_data=calib, fp16=True, write_ort=False))
    assert mixed.mode == "static" and any(n.startswith("float16 weights") for n in mixed.notes)
    assert mixed.int8_size_bytes < 0.6 * plain.int8_size_bytes
    feed = {"audio": speechlike(np.random.default_rng(1))}
    want, got = run(plain.outputs.onnx, feed)[0], run(mixed.outputs.onnx, feed)[0]
    assert cosine(want, got) > 0.9999

    cnn = save(small_cnn(), tmp_path / "cnn.onnx")
    samples = tmp_path / "images"
    samples.mkdir()
    for i in range(4):
        np.save(samples / f"s{i}.npy", np.random.default_rng(i).normal(size=(1, 3, 16, 16)).astype(np.float32))
    result = ptq.convert(cnn, ptq.Config(output=tmp_path / "cnn.mixed.onnx", calibration_data=samples, fp16=True, write_ort=False))
    model = onnx.load(result.outputs.onnx)
    types = {t.name: t.data_type for t in model.graph.initializer}
    read_by_qdq = {t for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for t in n.input}
    assert all(types[t] != TensorProto.FLOAT16 for t in read_by_qdq if t in types)
    assert {e.name: e.kernel for e in result.oplist.nodes}["conv2"] == "int8"


def test_ppocr_det_half_size_same_output_deterministic(tmp_path):
    """Real model, in every ``make test``: size <= 0.52x, cosine >= 0.9999 on held-out images, same bytes twice."""
    model = zoo.fetch_model("ppocr-det")
    first = ptq.convert(model, ptq.Config(output=tmp_path / "a.onnx", fp16=True, write_ort=False))
    second = ptq.convert(model, ptq.Config(output=tmp_path / "b.onnx", fp16=True, write_ort=False))
    assert first.outputs.onnx.read_bytes() == second.outputs.onnx.read_bytes()
    assert first.size_ratio <= 0.52  # measured 0.505
    for feed in zoo.inputs("ppocr-det", "eval", 3):
        assert cosine(run(model, feed)[0], run(first.outputs.onnx, feed)[0]) >= 0.9999  # measured >= 0.99993
