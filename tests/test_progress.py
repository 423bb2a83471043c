"""ptq.progress: one protocol, (stage, done, total), through every stage of a conversion."""

from __future__ import annotations

import ptq
from ptq.progress import silent, steps
from tests import tiny


def test_steps_report_their_stage():
    seen = []
    step = steps(lambda *event: seen.append(event), "calibrate")
    step(1, 4)
    assert seen == [("calibrate", 1, 4)] and silent("load", 0, 0) is None


def test_a_static_conversion_reports_its_stages_in_pipeline_order(tmp_path):
    seen = []
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    ptq.convert(model, ptq.Config(calibration_data=tiny.image_samples(tmp_path / "calib"), write_ort=False),
                progress=lambda stage, done, total: seen.append((stage, done, total)))  # fmt: skip
    stages = list(dict.fromkeys(stage for stage, _, _ in seen))
    assert stages[0] == "load" and stages[-3:] == ["quantize", "analyze", "write"]
    assert stages.index("calibrate") < stages.index("choose method") < stages.index("quantize")
    calibrated = [(d, t) for s, d, t in seen if s == "calibrate"]
    assert calibrated[-1][0] == calibrated[-1][1] > 0  # counted to the end
