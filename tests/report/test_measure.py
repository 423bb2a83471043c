"""Measurement on tiny models: latency interleaving and statistics, fidelity figures, per-layer error."""

import math

import numpy as np
import pytest

import ptq
from ptq.report import build, measure
from tests import tiny


@pytest.fixture(scope="module")
def cnn_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn")
    model = tiny.save(tiny.small_cnn(), folder / "cnn.onnx")
    calib = tiny.image_samples(folder / "calib", n=4)
    result = ptq.convert(model, ptq.Config(calibration_data=calib, write_ort=False))
    return folder, result


def test_class_axis():
    assert measure.class_axis((1, 10)) == 1
    assert measure.class_axis((8, 1000, 1, 1)) == 1
    assert measure.class_axis((1, 1, 64, 64)) is None
    assert measure.class_axis((1, 20, 384)) is None
    assert measure.class_axis((10,)) is None
    assert measure.class_axis((1, 1)) is None


def test_latency_stats():
    s = measure.LatencyStats("m", "m.onnx", (1.0, 2.0, 3.0, 4.0, 10.0))
    assert s.median_ms == 3.0 and s.min_ms == 1.0 and s.max_ms == 10.0
    assert s.p90_ms == pytest.approx(np.percentile([1, 2, 3, 4, 10], 90))
    assert s.to_json()["runs_ms"] == [1.0, 2.0, 3.0, 4.0, 10.0]


def test_time_models_runs_each_model_the_requested_times(cnn_pair):
    _, result = cnn_pair
    feed = {"x": np.zeros((1, 3, 16, 16), np.float32)}
    lat = measure.time_models([("float", result.source), ("int8", result.outputs.onnx)], feed, runs=7, warmup=1)
    assert [len(m.runs_ms) for m in lat.models] == [7, 7]
    assert lat.input_shapes == {"x": [1, 3, 16, 16]} and lat.threads == 1
    assert all(v > 0 for m in lat.models for v in m.runs_ms)
    assert lat.speedup() == pytest.approx(lat.models[0].median_ms / lat.models[1].median_ms)
    assert "1 thread, 1 warm-up + 7 timed runs each, interleaved, wall clock" in lat.describe()


def test_fidelity_identical_models(cnn_pair):
    folder, result = cnn_pair
    d = build.choose_data(result.source, eval_data=folder / "calib")
    fid = measure.compare_outputs(result.source, result.source, d)
    assert fid.cosine == pytest.approx(1.0) and fid.sqnr_db == math.inf and fid.max_abs_error == 0.0
    assert fid.top1 == 1.0 and fid.outputs[0].top1_rows == 4  # prob [N, 10] looks like class scores


def test_fidelity_of_quantized_model_matches_qmath(cnn_pair):
    folder, result = cnn_pair
    d = build.choose_data(result.source, eval_data=folder / "calib")
    fid = measure.compare_outputs(result.source, result.outputs.onnx, d)
    assert 0.9 < fid.cosine < 1.0 and fid.cosine_min <= fid.cosine
    assert 10 < fid.sqnr_db < 80 and 0 < fid.max_abs_error < 1
    import onnxruntime as ort

    from ptq import qmath

    a = ort.InferenceSession(str(result.source), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(result.outputs.onnx), providers=["CPUExecutionProvider"])
    feeds = list(d.feeds())
    cosines = [qmath.cosine(a.run(None, f)[0], b.run(None, f)[0]) for f in feeds]
    assert fid.cosine == pytest.approx(np.mean(cosines), rel=1e-9)


def test_layer_errors_follow_graph_order(cnn_pair):
    folder, result = cnn_pair
    d = build.choose_data(result.source, eval_data=folder / "calib")
    layers = measure.layer_errors(result.source, result.outputs.onnx, d)
    names = [t.tensor for t in layers.tensors]
    assert layers.samples == min(measure.LAYER_SAMPLES, d.samples) > 1
    order = ["x", "c1", "r1", "c2", "s", "r2", "p", "f", "logits", "prob"]  # the float graph's tensors
    assert names == [n for n in order if n in names] and names[0] == "x" and "prob" in names
    assert all(0.5 < t.cosine <= 1.0 for t in layers.tensors)
    by_name = {t.tensor: t for t in layers.tensors}
    assert by_name["x"].op_type == "input" and by_name["x"].int8 and 30 < by_name["x"].sqnr_db < 80
    assert by_name["r1"].node == "relu1" and by_name["r1"].int8  # conv1's Relu-folded int8 output
    assert by_name["prob"].int8 is False  # the model output stays float


def test_layer_errors_leave_out_tensors_rescaled_on_purpose(cnn_pair):
    folder, result = cnn_pair
    d = build.choose_data(result.source, eval_data=folder / "calib")
    layers = measure.layer_errors(result.source, result.outputs.onnx, d, skip=["c2", "not-a-tensor"])
    names = [t.tensor for t in layers.tensors]
    assert "c2" not in names and "c1" in names
    assert layers.note.startswith("1 tensor(s) rescaled per channel on purpose")
