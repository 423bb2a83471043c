import numpy as np
import onnx

import ptq
from ptq.layer_error import per_layer_errors
from tests import tiny


def test_per_layer_errors_cover_quantized_tensors_worst_first(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    calib = tiny.image_samples(tmp_path / "calib", n=4)
    result = ptq.convert(model, ptq.Config(calibration_data=calib))
    feeds = [{"x": np.load(f"{calib}/sample_{i:03d}.npz")["x"]} for i in range(2)]
    rows = per_layer_errors(onnx.load(model), onnx.load(str(result.outputs.onnx)), feeds)
    by_tensor = {r.tensor: r for r in rows}
    assert {"x", "r1"} <= set(by_tensor)  # the input and conv1's (Relu-folded) output
    assert by_tensor["r1"].node == "relu1"
    assert [r.sqnr_db for r in rows] == sorted(r.sqnr_db for r in rows)
    assert all(10 < r.sqnr_db < 80 for r in rows)  # 8-bit codes: tens of dB, never exact, never noise
