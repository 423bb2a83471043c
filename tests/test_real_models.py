"""Real pretrained models from pip wheels (bench.zoo), with real held-out inputs.

The default tier uses the small PP-OCR models and the architecture models of the onnx wheel;
the big ones (YOLOv8n, PP-OCR rec, MiniLM exported with torch) are marked ``models``.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ptq
from bench import zoo
from ptq import qmath

FAST_LIGHT = ["light-densenet121", "light-inception_v1", "light-inception_v2", "light-resnet50",
              "light-shufflenet", "light-squeezenet"]  # fmt: skip
SLOW_LIGHT = ["light-bvlc_alexnet", "light-vgg19", "light-zfnet512"]  # 150-550 MB once materialised


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def outputs(sess, feeds):
    return [sess.run(None, feed)[0] for feed in feeds]


def check_conversion(name, tmp_path, static: bool, n_calib=8, n_eval=4):
    """Convert ``name``; check both outputs load, agree, and stay close to float on eval inputs."""
    model = zoo.fetch_model(name)
    calib = None
    if static:
        calib = tmp_path / "calib"
        zoo.write_calibration_dir(name, calib, "calib", n=n_calib)
    result = ptq.convert(model, ptq.Config(output=tmp_path / f"{name}.int8.onnx", calibration_data=calib))
    feeds = zoo.inputs(name, "eval", n_eval)
    reference = outputs(session(model), feeds)
    quantized = outputs(session(result.outputs.onnx), feeds)
    from_ort = outputs(session(result.outputs.ort), feeds)
    for a, b in zip(quantized, from_ort):
        # The .onnx runs at onnxruntime's "all" level (NCHWc float kernels), the .ort was saved at
        # "extended": float sums differ in the last bits, and in dynamic mode such a bit can move
        # a run-time quantization step, so the two agree closely rather than exactly (PP-OCR rec
        # dynamic on an AVX2 CPU: 0.99978, its 64 time steps each re-quantized at run time).
        assert qmath.cosine(a, b) > (0.9999 if static else 0.9995)
        if static:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    cosines = [qmath.cosine(a, b) for a, b in zip(reference, quantized)]
    source_nodes = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(onnx.load(str(model), load_external_data=False).graph.node)]
    assert [e.name for e in result.oplist.nodes if not e.inserted] == source_nodes
    return result, cosines


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_ppocr_cls(tmp_path, static):
    result, cosines = check_conversion("ppocr-cls", tmp_path, static)
    assert min(cosines) >= 0.99
    if static:
        assert {e.runs_as for e in result.oplist.nodes if e.op_type == "Conv"} == {"QLinearConv"}
        assert result.oplist.summary()["int8"] >= 53 + 15  # every Conv, and the Relus folded into them


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_ppocr_det(tmp_path, static):
    # 12 calibration samples: 9 fit the ranges, 3 validate the choices (with 8, 6 fitting samples
    # underfit percentile: 0.916 on these 4 eval samples; 12 give 0.928)
    result, cosines = check_conversion("ppocr-det", tmp_path, static, n_calib=12)
    assert result.size_ratio <= 0.31
    # 0.93 on a VNNI CPU with 8-bit weights; 0.92 with the portable 7-bit default on AVX2.
    assert np.mean(cosines) >= 0.92
    if static:
        kernels = {e.runs_as for e in result.oplist.nodes if e.op_type == "Conv"}
        assert kernels == {"QLinearConv"}


@pytest.mark.parametrize("name", FAST_LIGHT)
@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_onnx_architecture_models_opset9(tmp_path, name, static):
    result, cosines = check_conversion(name, tmp_path, static, n_calib=2, n_eval=1)
    assert "converted opset 9 -> 13" in " ".join(result.notes)
    assert min(cosines) >= 0.98


@pytest.mark.models
@pytest.mark.parametrize("name", SLOW_LIGHT)
@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_onnx_big_architecture_models(tmp_path, name, static):
    _, cosines = check_conversion(name, tmp_path, static, n_calib=2, n_eval=1)
    assert min(cosines) >= 0.98


@pytest.mark.models
@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_yolov8n_nudenet(tmp_path, static):
    result, cosines = check_conversion("yolov8n-nudenet", tmp_path, static, n_calib=16, n_eval=8)
    assert min(cosines) >= 0.99
    assert result.size_ratio <= 0.30


@pytest.mark.models
@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_ppocr_rec(tmp_path, static):
    _, cosines = check_conversion("ppocr-rec", tmp_path, static, n_calib=16, n_eval=8)
    assert np.mean(cosines) >= 0.9


def mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


@pytest.mark.models
def test_minilm_dynamic_keeps_sentence_embeddings(tmp_path):
    model = zoo.fetch_model("minilm-l6")
    result = ptq.convert(model, ptq.Config(output=tmp_path / "minilm.int8.onnx"))
    assert result.size_ratio <= 0.30
    assert result.oplist.summary()["hybrid"] >= 36  # 6 layers x (Q, K, V, out, 2 FFN)
    feeds = zoo.inputs("minilm-l6", "eval", 32)
    ref, quant = session(model), session(result.outputs.onnx)
    cosines = []
    for feed in feeds:
        a = mean_pooled(ref.run(None, feed)[0], feed["attention_mask"])
        b = mean_pooled(quant.run(None, feed)[0], feed["attention_mask"])
        cosines.append(qmath.cosine(a, b))
    # Measured: mean 0.9926, worst 0.9887 of 32 held-out sentences (issue 5 tracks the worst case).
    assert np.mean(cosines) >= 0.99 and min(cosines) >= 0.985


@pytest.mark.models
def test_minilm_static_keeps_sentence_embeddings(tmp_path):
    """Issue 5's target: static int8 MiniLM keeps the mean sentence-embedding cosine >= 0.99."""
    model = zoo.fetch_model("minilm-l6")
    calib = tmp_path / "calib"
    zoo.write_calibration_dir("minilm-l6", calib, "calib")
    result = ptq.convert(model, ptq.Config(output=tmp_path / "minilm.static.onnx", calibration_data=calib))
    assert result.size_ratio <= 0.30
    # The measured choice puts the GELU-fed down-projections on hybrid kernels; the rest is int8.
    assert any("kept hybrid: Mul" in note for note in result.notes)
    assert result.oplist.summary()["int8"] >= 24
    feeds = zoo.inputs("minilm-l6", "eval", 32)
    ref, quant = session(model), session(result.outputs.onnx)
    cosines = [
        qmath.cosine(mean_pooled(ref.run(None, f)[0], f["attention_mask"]), mean_pooled(quant.run(None, f)[0], f["attention_mask"]))
        for f in feeds
    ]
    # Measured on an AVX2 EPYC: mean 0.9911 over 32 held-out sentences.
    assert np.mean(cosines) >= 0.99
