"""--weight-range auto: both candidates scored, the choice recorded in the recipe and replayed."""

from __future__ import annotations

import ptq
from bench import zoo
from ptq.calibrate.range_file import read_ranges
from ptq.config import CalibrationMethod
from ptq.tuning.weight_range import WEIGHT_MSE_GAIN_DB


def test_weight_range_auto_scores_both_records_the_choice_and_the_file_rebuilds_it(tmp_path):
    model = zoo.fetch_model("ppocr-cls")
    calib = tmp_path / "calib"
    zoo.write_calibration_dir("ppocr-cls", calib, "calib", n=6)
    base = dict(calibration_data=calib, calibration_method=CalibrationMethod.MINMAX, auto_hybrid=False, write_ort=False)
    minmax = ptq.convert(model, ptq.Config(output=tmp_path / "minmax.onnx", **base))
    mse = ptq.convert(model, ptq.Config(output=tmp_path / "mse.onnx", weight_range="mse", **base))
    assert minmax.outputs.onnx.read_bytes() != mse.outputs.onnx.read_bytes()  # clipping changed some channel
    assert minmax.recipe.weight_range_scores == ()  # min/max is the default: nothing scored

    ranges_file = tmp_path / "ranges.json"
    auto = ptq.convert(model, ptq.Config(output=tmp_path / "auto.onnx", weight_range="auto", save_ranges=ranges_file, **base))
    scores = {s.candidate: s.score_db for s in auto.recipe.weight_range_scores}
    picked = auto.recipe.weight_range.value
    assert set(scores) == {"minmax", "mse"}
    assert picked == ("mse" if scores["mse"] >= scores["minmax"] + WEIGHT_MSE_GAIN_DB else "minmax")
    assert read_ranges(ranges_file).recipe.weight_range.value == picked
    assert auto.outputs.onnx.read_bytes() == {"minmax": minmax, "mse": mse}[picked].outputs.onnx.read_bytes()

    # Without data, the file's choice comes back (auto or not given), so the bytes do too.
    again = ptq.convert(model, ptq.Config(output=tmp_path / "again.onnx", load_ranges=ranges_file, weight_range="auto", auto_hybrid=False, write_ort=False))
    assert again.outputs.onnx.read_bytes() == auto.outputs.onnx.read_bytes()
