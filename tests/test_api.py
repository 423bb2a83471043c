"""End-to-end conversion of tiny models, checked through onnxruntime itself."""

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ptq
from ptq import qmath
from tests import tiny


def run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


@pytest.fixture
def cnn(tmp_path):
    return tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx"), tiny.image_samples(tmp_path / "calib")


def test_static_cnn_runs_int8_where_onnxruntime_can(cnn, tmp_path):
    model, calib = cnn
    result = ptq.convert(model, ptq.Config(calibration_data=calib))
    kinds = {e.name: (e.kernel, e.runs_as) for e in result.oplist.nodes}
    assert kinds["conv1"] == ("int8", "QLinearConv")
    assert kinds["conv2"] == ("int8", "QLinearConv")
    assert kinds["residual"] == ("int8", "QLinearAdd")
    assert kinds["relu1"][0] == "int8"  # folded into conv1's QuantizeLinear
    assert kinds["fc"] == ("int8", "QGemm")
    assert result.calibration_samples == 5 and len(result.split.validation) == 1  # one of the 6 held out

    quantized = onnx.load(str(result.outputs.onnx))
    ops = Counter(n.op_type for n in quantized.graph.node)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 6
    weights = {t.name: t for t in quantized.graph.initializer}
    assert weights["w1/int8"].data_type == onnx.TensorProto.INT8
    assert list(weights["w1/scale"].dims) == [8]  # per-channel by default
    (bias,) = [t for name, t in weights.items() if name.startswith("b1/") and name.endswith("int32")]  # b1 or b1/corrected
    assert bias.data_type == onnx.TensorProto.INT32

    x = np.load(f"{calib}/sample_000.npz")["x"]
    ref, out = run(model, {"x": x}), run(result.outputs.onnx, {"x": x})
    assert qmath.cosine(ref, out) > 0.99
    assert np.allclose(out, run(result.outputs.ort, {"x": x}), atol=1e-6)


def test_outputs_beside_input_by_default(cnn):
    model, calib = cnn
    result = ptq.convert(model, ptq.Config(calibration_data=calib))
    assert result.outputs.onnx.name == "cnn.int8.onnx"
    assert result.outputs.ort.name == "cnn.int8.ort"
    ops = json.loads(result.outputs.ops.read_text())
    assert set(ops["summary"]) >= {"int8", "hybrid", "float"}
    assert [n["name"] for n in ops["nodes"]] == [n.name for n in onnx.load(model).graph.node]


def test_exclude_keeps_node_float_with_reason(cnn):
    model, calib = cnn
    result = ptq.convert(model, ptq.Config(calibration_data=calib, exclude=("conv2", "Gemm")))
    entries = {e.name: e for e in result.oplist.nodes}
    assert entries["conv2"].kernel == "float" and "excluded" in entries["conv2"].reason
    assert entries["fc"].kernel == "float" and "excluded" in entries["fc"].reason
    assert entries["conv1"].kernel == "int8"


def test_per_tensor_and_symmetric_activations(cnn):
    model, calib = cnn
    result = ptq.convert(model, ptq.Config(calibration_data=calib, per_channel=False, activations="symmetric"))
    quantized = onnx.load(str(result.outputs.onnx))
    weights = {t.name: t for t in quantized.graph.initializer}
    assert list(weights["w1/scale"].dims) == []
    assert weights["x/zero_point"].data_type == onnx.TensorProto.INT8
    x = np.load(f"{calib}/sample_001.npz")["x"]
    assert qmath.cosine(run(model, {"x": x}), run(result.outputs.onnx, {"x": x})) > 0.98


def test_dynamic_mlp_runs_hybrid_and_keeps_integer_input(tmp_path):
    model = tiny.save(tiny.small_mlp(), tmp_path / "mlp.onnx")
    result = ptq.convert(model, ptq.Config())
    kinds = {e.name: e for e in result.oplist.nodes}
    assert kinds["fc1"].kernel == "hybrid" and kinds["fc2"].kernel == "hybrid"
    assert kinds["act"].kernel == "float" and "Tanh" in kinds["act"].reason
    rng = np.random.default_rng(1)
    feed = {"x": rng.normal(size=(2, 5, 32)).astype(np.float32), "n": np.array([3], np.int64)}
    assert qmath.cosine(run(model, feed), run(result.outputs.onnx, feed)) > 0.99
    assert result.size_ratio < 0.5


def test_same_input_gives_identical_bytes(cnn, tmp_path):
    model, calib = cnn
    a = ptq.convert(model, ptq.Config(calibration_data=calib, output=tmp_path / "a.onnx"))
    b = ptq.convert(model, ptq.Config(calibration_data=calib, output=tmp_path / "b.onnx"))
    for x, y in [(a.outputs.onnx, b.outputs.onnx), (a.outputs.ops, b.outputs.ops)]:
        assert x.read_bytes() == y.read_bytes()
    # onnxruntime's ORT-format serializer lays out flatbuffer tables in an order that varies
    # between sessions (README, "Determinism"); the content is the same: same size, same outputs.
    assert a.outputs.ort.stat().st_size == b.outputs.ort.stat().st_size
    x = np.load(f"{calib}/sample_002.npz")["x"]
    assert np.array_equal(run(a.outputs.ort, {"x": x}), run(b.outputs.ort, {"x": x}))


def test_constant_and_zero_weights_get_safe_scales(tmp_path):
    m = tiny.small_cnn()
    for t in m.graph.initializer:
        if t.name == "w2":
            t.CopyFrom(onnx.numpy_helper.from_array(np.zeros((8, 8, 3, 3), np.float32), "w2"))
    model = tiny.save(m, tmp_path / "zero.onnx")
    calib = tiny.image_samples(tmp_path / "calib", n=2)
    result = ptq.convert(model, ptq.Config(calibration_data=calib))
    quantized = onnx.load(str(result.outputs.onnx))
    for t in quantized.graph.initializer:
        if t.name.endswith("/scale"):
            assert np.all(np.isfinite(onnx.numpy_helper.to_array(t)))
            assert np.all(onnx.numpy_helper.to_array(t) > 0)
    x = np.load(f"{calib}/sample_000.npz")["x"]
    assert np.all(np.isfinite(run(result.outputs.onnx, {"x": x})))


def test_static_embeddings_are_int8_and_hybrid_is_honoured(tmp_path):
    model = tiny.save(tiny.embedding_mlp(), tmp_path / "emb.onnx")
    calib = tiny.id_samples(tmp_path / "calib")
    # auto-hybrid off: this checks --hybrid, and auto-hybrid's pick on 1 held-out sample of 4 varies
    result = ptq.convert(model, ptq.Config(calibration_data=calib, hybrid=("fc2",), auto_hybrid=False))
    kinds = {e.name: e for e in result.oplist.nodes}
    assert kinds["fc1"].runs_as == "QLinearMatMul" or kinds["fc1"].kernel == "int8"
    assert kinds["fc2"].kernel == "hybrid"
    quantized = onnx.load(str(result.outputs.onnx))
    inits = {t.name: t for t in quantized.graph.initializer}
    # One int8 row per table row, and one scale per row, gathered with the same ids.
    assert inits["table/int8_rows"].data_type == onnx.TensorProto.INT8
    rows = inits["table/int8_rows"].dims[0]
    assert list(inits["table/row_scale"].dims) == [rows, 1]
    assert result.size_ratio < 0.4
    feed = {"ids": np.array([[1, 7, 499, 0]], np.int64)}
    assert qmath.cosine(run(model, feed), run(result.outputs.onnx, feed)) > 0.99


def test_saved_ranges_reproduce_the_model_without_calibration(cnn, tmp_path):
    model, calib = cnn
    ranges = tmp_path / "ranges.json"
    a = ptq.convert(model, ptq.Config(calibration_data=calib, save_ranges=ranges, output=tmp_path / "a.onnx"))
    b = ptq.convert(model, ptq.Config(load_ranges=ranges, output=tmp_path / "b.onnx"))
    assert b.mode == "static" and b.calibration_samples == 0
    assert a.outputs.onnx.read_bytes() == b.outputs.onnx.read_bytes()
    other = tiny.save(tiny.small_mlp(), tmp_path / "mlp.onnx")
    with pytest.raises(ptq.PtqError, match="no range for tensor"):
        ptq.convert(other, ptq.Config(load_ranges=ranges))


def test_exclude_and_hybrid_names_that_match_nothing_are_noted(tmp_path):
    from pathlib import Path

    import ptq
    from tests import tiny

    path = Path(tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx"))
    result = ptq.convert(path, ptq.Config(output=tmp_path / "q.onnx", exclude=("HardSwish", "Relu"), hybrid=("nope",), write_ort=False))
    notes = [n for n in result.notes if "matches no node" in n]
    assert len(notes) == 2 and notes[0].startswith("--exclude HardSwish:") and notes[1].startswith("--hybrid nope:")
