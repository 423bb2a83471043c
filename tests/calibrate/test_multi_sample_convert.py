"""A calibration file holding many samples, end to end through the API and the CLI."""

import numpy as np
from click.testing import CliRunner

import ptq
from ptq import errors
from ptq.cli import main
from tests import tiny


def _data(tmp_path):
    rng = np.random.default_rng(3)
    samples = (rng.normal(size=(20, 1, 3, 16, 16)) * np.linspace(0.5, 3, 20)[:, None, None, None, None]).astype(np.float32)
    stacked, folder = tmp_path / "stacked", tmp_path / "files"
    stacked.mkdir()
    folder.mkdir()
    np.savez(stacked / "all.npz", x=samples)
    for i, s in enumerate(samples):
        np.savez(folder / f"s{i:02d}.npz", x=s)
    return stacked, folder


def test_one_file_of_samples_calibrates_like_one_file_per_sample(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    stacked, folder = _data(tmp_path)
    outputs = []
    for data in (stacked, folder, stacked / "all.npz"):
        out = tmp_path / f"q{len(outputs)}.onnx"
        result = ptq.convert(model, ptq.Config(output=out, calibration_data=data, calibration_samples=13,
                                               calibration_method="percentile", write_ort=False))  # fmt: skip
        assert result.calibration_samples == 10 and result.split.total == 13  # samples, not files (3 held out)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    fewer = tmp_path / "fewer.onnx"
    ptq.convert(model, ptq.Config(output=fewer, calibration_data=stacked, calibration_samples=12,
                                  calibration_method="minmax", write_ort=False))  # fmt: skip
    assert fewer.read_bytes() != outputs[0]


def test_cli_exit_5_when_arrays_disagree_on_the_sample_count(tmp_path):
    model = tiny.save(tiny.small_mlp(), tmp_path / "m.onnx")  # inputs x[B, T, 32] and n[1]
    (tmp_path / "c").mkdir()
    np.savez(tmp_path / "c" / "s.npz", x=np.zeros((4, 1, 5, 32), np.float32), n=np.zeros((3, 1), np.int64))
    result = CliRunner().invoke(main, ["convert", model, "-c", str(tmp_path / "c"), "-q", "-o", str(tmp_path / "q.onnx")])
    assert result.exit_code == errors.CalibrationDataError.exit_code == 5, result.output
    assert "ptq: error: s.npz: its arrays disagree on the number of samples: 'n' [3, 1] holds 3, 'x' [4, 1, 5, 32] holds 4" in result.output
    assert not (tmp_path / "q.onnx").exists()
    np.savez(tmp_path / "c" / "s.npz", x=np.zeros((4, 1, 5, 32), np.float32), n=np.zeros((4, 1), np.int64))
    result = CliRunner().invoke(main, ["convert", model, "-c", str(tmp_path / "c"), "-q", "-o", str(tmp_path / "q.onnx")])
    assert result.exit_code == 0, result.output
