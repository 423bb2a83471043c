"""Top-1 agreement is reported only for outputs that hold class scores, and names the output.

Real models: PP-OCR cls (``[N, 2]`` softmax) must report top-1; Silero VAD (per-frame speech
probabilities ``[T]`` and LSTM states ``[1, 1, 128]``) must not.
"""

from __future__ import annotations

import numpy as np
import pytest

import ptq
from bench import zoo
from ptq.report import build, measure
from ptq.report.render import fidelity_line, markdown


def _softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_class_axis_wants_classes_right_after_the_batch():
    assert measure.class_axis((4, 10)) == 1
    assert measure.class_axis((4, 10, 1, 1)) == 1
    assert measure.class_axis((1, 1, 128)) is None  # an LSTM state with batch 1
    assert measure.class_axis((1, 4, 128)) is None  # an LSTM state with batch 4
    assert measure.class_axis((1, 20, 6625)) is None  # a sequence of class scores
    assert measure.class_axis((3, 1)) is None  # one class
    assert measure.class_axis((157,)) is None  # one score per frame


def test_class_scores_needs_softmax_rows_or_a_class_score_name():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5)).astype(np.float32)
    probs = _softmax(logits)
    assert measure.class_scores("out", probs) == measure.SOFTMAX_ROWS
    assert measure.class_scores("out", np.log(probs)) == measure.LOG_SOFTMAX_ROWS
    assert measure.class_scores("output", logits) is None  # an embedding or a regression head
    for name in ("logits", "class_logits", "classLogits", "prob", "scores", "cls_out"):
        assert measure.class_scores(name, logits) == measure.NAMED, name
    assert measure.class_scores("probably_not", logits) is None  # tokens, not substrings
    assert measure.class_scores("hn", np.tanh(logits)[None]) is None
    assert measure.class_scores("probs", probs[:, :1]) is None  # one class
    sigmoid = 1 / (1 + np.exp(-logits))  # multi-label: rows do not sum to 1
    assert measure.class_scores("out", sigmoid) is None


def test_an_output_must_qualify_on_every_sample():
    acc = measure._OutputAccumulator("out")
    probs = _softmax(np.arange(8, dtype=np.float32).reshape(2, 4))
    acc.add(probs, probs)
    assert acc.result().top1 == 1.0
    acc.add(probs * 3, probs * 3)  # not probabilities any more, and no telling name
    assert acc.result().top1 is None and acc.result().top1_rows == 0


def test_ppocr_cls_reports_top1_on_its_softmax_output(tmp_path):
    model = zoo.fetch_model("ppocr-cls")
    data = zoo.write_calibration_dir("ppocr-cls", tmp_path / "eval", "eval", n=6)
    result = ptq.convert(model, ptq.Config(output=tmp_path / "cls.onnx", write_ort=False))
    report = build.report_conversion(result, build.choose_data(model, eval_data=data[0].parent),
                                     build.MeasureOptions(latency=False))  # fmt: skip
    fid = report.fidelity
    assert fid.top1 is not None and fid.top1 >= 0.5
    (scored,) = [o for o in fid.outputs if o.top1 is not None]
    assert fid.top1_output is scored and scored.name == "save_infer_model/scale_0.tmp_1"
    assert scored.top1_basis == measure.SOFTMAX_ROWS and scored.top1_rows == 6
    line = fidelity_line(report)
    assert f"of 6 on save_infer_model/scale_0.tmp_1 (softmax rows)" in line
    assert "on save_infer_model/scale_0.tmp_1 (softmax rows)" in markdown(report)
    doc = report.to_json()
    assert doc["fidelity"]["top1_output"] == "save_infer_model/scale_0.tmp_1"
    assert doc["fidelity"]["outputs"][0]["top1_basis"] == "softmax rows"
    assert "top1" not in doc["missing"]


@pytest.fixture(scope="module")
def vad_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vad")
    model = zoo.fetch_model("silero-vad")
    result = ptq.convert(model, ptq.Config(output=folder / "vad.onnx", write_ort=False))
    return model, result


def test_silero_vad_states_and_frame_probabilities_get_no_top1(vad_pair):
    model, result = vad_pair
    data = build.choose_data(model, samples=4)  # synthesized: real speech needs the pyannote wheel
    report = build.report_conversion(result, data, build.MeasureOptions(latency=False))
    fid = report.fidelity
    shapes = {o.name: o.shape for o in fid.outputs}
    assert shapes["hn"] == [1, 1, 128] and len(shapes["speech_probs"]) == 1
    assert [o.top1 for o in fid.outputs] == [None, None, None]
    assert fid.top1 is None and fid.top1_output is None
    assert fidelity_line(report).endswith("top-1 n/a")
    assert "class scores" in report.missing["top1"]
    assert report.to_json()["fidelity"]["top1_output"] is None


@pytest.mark.models
def test_silero_vad_on_real_speech_gets_no_top1(vad_pair, tmp_path):
    model, result = vad_pair
    zoo.write_calibration_dir("silero-vad", tmp_path, "eval", n=4)
    report = build.report_conversion(result, build.choose_data(model, eval_data=tmp_path),
                                     build.MeasureOptions(latency=False))  # fmt: skip
    assert report.fidelity.top1 is None and fidelity_line(report).endswith("top-1 n/a")
