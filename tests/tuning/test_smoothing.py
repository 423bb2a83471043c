"""SmoothQuant as a scored choice (ptq.tuning.smoothing): kept where it gains on held-out samples, not elsewhere."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ptq
from ptq import qmath
from ptq.errors import UsageError

D, H = 32, 64


def feed_forward(outlier: float) -> onnx.ModelProto:
    """LayerNorm -> MatMul -> Relu -> MatMul, the LayerNorm output also a graph output (a second reader, as
    BERT's residual Add); LayerNorm channels 3 and 17 scaled by ``outlier`` (BERT's outlier dimensions)."""
    rng = np.random.default_rng(0)
    gamma = np.ones(D, np.float32)
    gamma[3], gamma[17] = outlier, 0.7 * outlier
    inits = [
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(np.zeros(D, np.float32), "beta"),
        numpy_helper.from_array((rng.normal(size=(D, H)) / np.sqrt(D)).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.normal(size=(H, D)) / np.sqrt(H)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln", axis=-1),
        helper.make_node("MatMul", ["ln", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["f"], name="fc2"),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", D]) for n in ("f", "ln")]
    graph = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", D])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(1)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(16):
        np.save(calib / f"s{i:02d}.npy", rng.normal(size=(8, D)).astype(np.float32))  # a batch of 8 rows a sample
    held_out = [rng.normal(size=(8, D)).astype(np.float32) for _ in range(8)]
    return calib, held_out


def sqnr_of_f(float_path, int8_path, feeds) -> float:
    run = lambda p: np.concatenate([ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["f"], {"x": x})[0] for x in feeds])  # noqa: E731
    return qmath.sqnr_db(run(float_path), run(int8_path))


def convert(tmp_path, model_path, calib, name, **options):
    config = ptq.Config(output=tmp_path / f"{name}.onnx", calibration_data=calib, write_ort=False, latency_search=False, **options)
    return ptq.convert(model_path, config)


def test_kept_where_an_outlier_channel_costs_resolution_and_it_pays_held_out(tmp_path, data):
    calib, held_out = data
    path = tmp_path / "ffn.onnx"
    onnx.save(feed_forward(30.0), path)
    smoothed = convert(tmp_path, path, calib, "auto", save_ranges=tmp_path / "ranges.json")
    plain = convert(tmp_path, path, calib, "plain", auto_smoothquant=False)
    rewrites = [r for r in smoothed.recipe.rewrites if r.name == "smoothquant"]
    assert len(rewrites) == 1 and ("scored", 1.0) in rewrites[0].settings and ("alpha", 0.5) in rewrites[0].settings
    assert not plain.recipe.rewrites or all(r.name != "smoothquant" for r in plain.recipe.rewrites)
    # the inserted Mul (ln * 1/s, on fc1's branch only) runs float on ln; fc1 keeps its int8 weight
    written = onnx.load(str(smoothed.outputs.onnx))
    inserted = [n for n in written.graph.node if "SmoothQuantMul" in n.name]
    assert len(inserted) == 1 and inserted[0].op_type == "Mul" and inserted[0].input[0] == "ln"
    kernels = {e.name: e for e in smoothed.oplist.nodes}
    assert kernels["fc1"].kernel in ("int8", "hybrid") and kernels["fc1"].kernel == {e.name: e for e in plain.oplist.nodes}["fc1"].kernel
    note = next(n for n in smoothed.notes if "by MatMul input producer" in n)
    assert "LayerNormalization-fed x1" in note and "(kept)" in note
    # the op list has a row for the inserted Mul (no source node), marked inserted, float
    (row,) = [e for e in smoothed.oplist.nodes if e.inserted]
    assert row.name == inserted[0].name and row.op_type == "Mul" and row.kernel == "float" and "SmoothQuant" in row.reason
    assert smoothed.oplist.summary()["inserted"] == 1 and plain.oplist.summary()["inserted"] == 0
    from ptq.report.render import conversion_summary

    assert "1 inserted by ptq" in conversion_summary(smoothed)
    # held out (samples no choice saw): fc2's output is closer to float with the smoothing (measured 35.8 vs 32.4 dB)
    assert sqnr_of_f(path, smoothed.outputs.onnx, held_out) >= sqnr_of_f(path, plain.outputs.onnx, held_out) + 2.0
    # the ranges file records the smoothed inputs' channel maxima: --load-ranges repeats the
    # scored smoothing without samples, to the byte
    again = ptq.convert(path, ptq.Config(output=tmp_path / "again.onnx", load_ranges=tmp_path / "ranges.json",
                                         write_ort=False, latency_search=False))  # fmt: skip
    assert again.outputs.onnx.read_bytes() == smoothed.outputs.onnx.read_bytes()
    assert [r for r in again.recipe.rewrites if r.name == "smoothquant"] == rewrites and rewrites[0].measured
    # asking for another smoothing with those ranges is refused, naming the scored one
    with pytest.raises(UsageError, match="chosen by ptq's scoring"):
        ptq.convert(path, ptq.Config(output=tmp_path / "other.onnx", load_ranges=tmp_path / "ranges.json", calibration_data=calib,
                                     smoothquant=0.8, write_ort=False))  # fmt: skip


def test_not_applied_without_outliers(tmp_path, data):
    calib, _ = data
    path = tmp_path / "ffn.onnx"
    onnx.save(feed_forward(1.0), path)
    result = convert(tmp_path, path, calib, "auto")
    assert all(r.name != "smoothquant" for r in result.recipe.rewrites)
    note = next(n for n in result.notes if "by MatMul input producer" in n)
    assert "not applied" in note and "(kept)" not in note
    plain = convert(tmp_path, path, calib, "plain", auto_smoothquant=False)
    assert result.outputs.onnx.read_bytes() == plain.outputs.onnx.read_bytes()
