"""Bias correction (ptq.bias_correction): the shift formula, and a real layer's mean error removed."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import ptq
from ptq.tuning import bias_correction
from ptq.tuning.bias_correction import Target


def test_grouped_conv_shift_matches_a_direct_sum():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 2, 3, 3))  # 2 groups of 2 input channels
    wq = w + rng.normal(scale=0.01, size=w.shape)
    mean = rng.normal(size=4)
    target = Target("c", "Conv", "x", "w", None, 0, group=2)
    got = bias_correction.output_shift(target, w, wq, mean)
    expected = [sum((wq - w)[o, c].sum() * mean[(o // 2) * 2 + c] for c in range(2)) for o in range(4)]
    np.testing.assert_allclose(got, expected)
    gemm = Target("g", "Gemm", "x", "w", None, 0, group=1)
    np.testing.assert_allclose(bias_correction.output_shift(gemm, w[:, :, 0, 0], wq[:, :, 0, 0], mean[:2]), (wq - w)[:, :, 0, 0] @ mean[:2])


def _depthwise_model(path):
    rng = np.random.default_rng(1)
    channels = 16
    # Few weights per channel (3x3 depthwise): their rounding errors do not average out.
    w = numpy_helper.from_array(rng.normal(size=(channels, 1, 3, 3)).astype(np.float32) * 0.37, "w")
    b = numpy_helper.from_array(np.zeros(channels, np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="dw", group=channels, pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])], [w, b],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _depthwise_calibration(tmp_path):
    """The depthwise model and 12 samples with a large per-channel mean, as after a ReLU: the
    weight error times the mean is a visible constant shift per output channel."""
    model = _depthwise_model(tmp_path / "dw.onnx")
    rng = np.random.default_rng(2)
    calib = tmp_path / "calib"
    calib.mkdir()
    offsets = rng.uniform(2, 6, size=(1, 16, 1, 1))
    for i in range(12):
        np.save(calib / f"s{i:02d}.npy", (rng.normal(size=(1, 16, 12, 12)) + offsets).astype(np.float32))
    return model, calib


def test_correction_removes_the_mean_output_error_of_a_depthwise_conv(tmp_path):
    model, calib = _depthwise_calibration(tmp_path)
    samples = [np.load(path) for path in sorted(calib.iterdir())]

    def mean_error(corrected: bool) -> float:
        out = tmp_path / f"q{corrected}.onnx"
        ptq.convert(model, ptq.Config(output=out, calibration_data=calib, bias_correction=corrected, auto_hybrid=False,
                                      write_ort=False, calibration_method="minmax"))  # fmt: skip
        f = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        q = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        diffs = [q.run(None, {"x": x})[0] - f.run(None, {"x": x})[0] for x in samples]
        # mean over samples and pixels of the error, per channel (interior pixels: no padding)
        per_channel = np.mean([d[0, :, 1:-1, 1:-1].mean(axis=(1, 2)) for d in diffs], axis=0)
        return float(np.abs(per_channel).mean())

    before, after = mean_error(False), mean_error(True)
    assert after < 0.5 * before, (before, after)


def test_auto_keeps_the_correction_where_it_pays_on_the_validation_samples(tmp_path):
    """Default (None): scored on the held-out samples; on a depthwise conv fed large channel means
    the correction gains more than the margin, so it is kept and both scores are recorded."""
    model, calib = _depthwise_calibration(tmp_path)
    result = ptq.convert(model, ptq.Config(output=tmp_path / "q.onnx", calibration_data=calib, write_ort=False,
                                           calibration_method="minmax"))  # fmt: skip
    scores = {s.candidate: s.score_db for s in result.recipe.bias_correction_scores}
    assert scores["on"] >= scores["off"] + bias_correction.MARGIN_DB, scores
    assert result.recipe.bias_corrected == ("dw",)
    assert any(n.startswith("bias correction: kept") for n in result.notes)
    off = ptq.convert(model, ptq.Config(output=tmp_path / "off.onnx", calibration_data=calib, write_ort=False,
                                        calibration_method="minmax", bias_correction=False))  # fmt: skip
    assert off.recipe.bias_shifts == () and off.recipe.bias_correction_scores == ()
    assert (tmp_path / "q.onnx").read_bytes() != (tmp_path / "off.onnx").read_bytes()


def test_means_come_from_the_fitting_samples_only(tmp_path):
    """A held-out sample's values never reach the shifts: changing it leaves them unchanged."""
    model, calib = _depthwise_calibration(tmp_path)
    from ptq.tuning import validation

    held = validation.split(12).validation[0]

    def shifts_now():
        out = tmp_path / "q.onnx"
        return ptq.convert(model, ptq.Config(output=out, calibration_data=calib, write_ort=False, calibration_method="minmax",
                                             bias_correction=True)).recipe.bias_shifts  # fmt: skip

    before = shifts_now()
    path = sorted(calib.iterdir())[held]
    np.save(path, np.load(path) + 100.0)
    assert shifts_now() == before


def test_load_ranges_repeats_the_correction_without_data(tmp_path):
    model, calib = _depthwise_calibration(tmp_path)
    ranges = tmp_path / "ranges.json"
    first = ptq.convert(model, ptq.Config(output=tmp_path / "a.onnx", calibration_data=calib, write_ort=False,
                                          calibration_method="minmax", bias_correction=True, save_ranges=ranges))  # fmt: skip
    again = ptq.convert(model, ptq.Config(output=tmp_path / "b.onnx", load_ranges=ranges, write_ort=False))
    assert again.recipe.bias_shifts == first.recipe.bias_shifts != ()
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    dropped = ptq.convert(model, ptq.Config(output=tmp_path / "c.onnx", load_ranges=ranges, write_ort=False, bias_correction=False))
    assert dropped.recipe.bias_shifts == ()
    assert (tmp_path / "c.onnx").read_bytes() != (tmp_path / "a.onnx").read_bytes()


def test_a_layer_kept_float_keeps_its_own_bias(tmp_path):
    """The plan carries shifts only for layers it gives int8 weights: a corrected layer that a
    later step places float runs its original float bias."""
    from ptq.loader import load
    from ptq.quantize.plan import make_plan
    from ptq.recipe import FLOAT, ACCURACY, Placement, Recipe

    model = load(_depthwise_model(tmp_path / "dw.onnx")).model
    config = ptq.Config(calibration_data=tmp_path)
    corrected = Recipe(bias_shifts=(("dw", tuple([0.5] * 16)),))
    assert make_plan(model, config, corrected).bias_shifts == {"dw": tuple([0.5] * 16)}
    assert make_plan(model, config, corrected.placed(Placement("dw", FLOAT, ACCURACY))).bias_shifts == {}
