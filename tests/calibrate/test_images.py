"""Image calibration folders: decode, resize, normalize and lay out as the model expects."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import ptq
from ptq import errors
from ptq.calibrate.data import InputSpec
from ptq.calibrate.samples import read_sample
from ptq.cli import main
from ptq.config import ImageFormat
from tests import tiny

NCHW = [InputSpec("x", np.dtype(np.float32), ("N", 3, 16, 16))]
FREE = [InputSpec("x", np.dtype(np.float32), ("N", 3, "h", "w"))]
NHWC = [InputSpec("x", np.dtype(np.float32), (1, 8, 8, 3))]


def write_image(path, size=(20, 30), color=(255, 128, 0)):
    Image.new("RGB", (size[1], size[0]), color).save(path)
    return path


def test_image_becomes_normalized_nchw_at_the_model_size(tmp_path):
    path = write_image(tmp_path / "a.png")
    x = read_sample(path, NCHW, ImageFormat(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))["x"]
    assert x.shape == (1, 3, 16, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, 128 / 255 * 2 - 1, -1.0], atol=1e-6)


def test_bgr_and_nhwc(tmp_path):
    path = write_image(tmp_path / "a.jpg", color=(255, 0, 0))
    x = read_sample(path, NHWC, ImageFormat(channel_order="bgr"))["x"]
    assert x.shape == (1, 8, 8, 3)
    assert x[0, 0, 0, 2] > 0.9 and x[0, 0, 0, 0] < 0.1  # red lands in the last channel


def test_free_size_needs_input_size(tmp_path):
    path = write_image(tmp_path / "a.png")
    with pytest.raises(ptq.PtqError, match="give --input-size"):
        read_sample(path, FREE, ImageFormat())
    assert read_sample(path, FREE, ImageFormat(size=(12, 24)))["x"].shape == (1, 3, 12, 24)


def test_corrupt_image_is_a_calibration_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(ptq.PtqError, match="bad.png: not a readable image") as info:
        read_sample(tmp_path / "bad.png", NCHW, ImageFormat())
    assert info.value.exit_code == errors.EXIT_BAD_CALIBRATION


def test_convert_calibrates_on_images(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, color in enumerate([(250, 10, 10), (10, 250, 10), (60, 60, 200)]):
        write_image(calib / f"img{i}.png", color=color)
    result = ptq.convert(model, ptq.Config(calibration_data=calib))
    assert result.calibration_samples == 3 and result.mode == "static"


def test_bad_image_options_are_usage_errors(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    for args in (["--input-size", "48x"], ["--mean", "a,b"], ["--std", "0"]):
        result = CliRunner().invoke(main, ["convert", model, "-q", *args])
        assert result.exit_code == errors.EXIT_USAGE, result.output
