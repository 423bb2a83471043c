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


def test_correction_removes_the_mean_output_error_of_a_depthwise_conv(tmp_path):
    model = _depthwise_model(tmp_path / "dw.onnx")
    rng = np.random.default_rng(2)
    calib = tmp_path / "calib"
    calib.mkdir()
    # Inputs with a large per-channel mean, as after a ReLU: the weight error times the mean
    # is a visible constant shift per output channel.
    offsets = rng.uniform(2, 6, size=(1, 16, 1, 1))
    samples = [(rng.normal(size=(1, 16, 12, 12)) + offsets).astype(np.float32) for _ in range(12)]
    for i, x in enumerate(samples):
        np.save(calib / f"s{i:02d}.npy", x)

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
