"""What a new user trips on (issue 13): image options everywhere samples are read, options that
would be ignored are refused, grouped help, output that fits the terminal."""

import json
import re

import numpy as np
import pytest

from ptq import errors
from tests import tiny
from tests.report.real import invoke


def _images(folder, n=4, side=16):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(n):
        pixels = (rng.uniform(0, 1, size=(side, side, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def converted(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    calib = tiny.image_samples(tmp_path / "calib")
    code, out, err = invoke("convert", model, "-c", calib, "--no-ort", "-q")
    assert code == 0, out + err
    return model, tmp_path / "m.int8.onnx", _images(tmp_path / "imgs")


def _cosine(report_path) -> float:
    return json.loads(report_path.read_text())["fidelity"]["cosine"]


def test_compare_takes_the_image_options_and_matches_convert(converted, tmp_path):
    """Issue 13.2: before, compare had no --mean/--std and measured images unnormalized."""
    model, int8, imgs = converted
    norm = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]
    code, out, err = invoke("compare", model, int8, "--data", imgs, *norm, "--no-bench", "--report", tmp_path / "c.json")
    assert code == 0, out + err
    code, out, err = invoke("compare", model, int8, "--data", imgs, "--no-bench", "--report", tmp_path / "raw.json")
    assert code == 0, out + err
    # The same measurement through convert's --eval-data with the same options gives the same figure.
    code, out, err = invoke("convert", model, "-c", tmp_path / "calib", "-o", tmp_path / "again.onnx", "--no-ort",
                            "--eval-data", imgs, *norm, "--no-bench", "--report", tmp_path / "v.json")  # fmt: skip
    assert code == 0, out + err
    assert _cosine(tmp_path / "c.json") == _cosine(tmp_path / "v.json")
    assert _cosine(tmp_path / "c.json") != _cosine(tmp_path / "raw.json")  # the options took effect
    code, out, err = invoke("bench", model, int8, "--data", imgs, *norm, "--runs", "2", "--warmup", "0")
    assert code == 0, out + err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bias-correction"], "--bias-correction acts on calibration samples and need -c"),
        (["--auto-fallback"], "--auto-fallback acts on calibration samples"),
        (["--calibration-method", "entropy"], "--calibration-method entropy acts on calibration samples"),
        (["--percentile", "99.9"], "--percentile 99.9 acts on calibration samples"),
        (["--calibration-samples", "4"], "--calibration-samples acts on calibration samples"),
        (["--weight-range", "auto"], "--weight-range auto acts on calibration samples"),
        (["--no-auto-hybrid"], "--auto-hybrid/--no-auto-hybrid act on calibration samples"),
        (["-q", "-v"], "-q/--quiet and -v/--verbose contradict each other"),
    ],
)
def test_options_that_would_do_nothing_are_refused(tmp_path, extra, message):
    """Issue 13.5: before, these exited 0 in dynamic mode with byte-identical output and no note."""
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    code, out, err = invoke("convert", model, "--no-ort", *extra)
    assert code == errors.EXIT_USAGE, out + err
    assert message in err
    assert not (tmp_path / "m.int8.onnx").exists()


def test_image_options_with_array_data_are_refused(tmp_path):
    """Issue 13.5: --mean/--std normalize image files; .npz/.npy data is fed as it is."""
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    calib = tiny.image_samples(tmp_path / "calib")
    code, out, err = invoke("convert", model, "-c", calib, "--mean", "0.5", "--no-ort")
    assert code == errors.EXIT_USAGE, out + err
    assert "--mean applies to image files" in err and "holds none" in err


def test_a_stacked_batch_file_is_named_on_the_terminal(tmp_path):
    """Issue 13.3: N samples stacked on a symbolic batch axis are one sample of N; say so."""
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "all.npy", np.random.default_rng(0).normal(size=(9, 3, 16, 16)).astype(np.float32))
    code, out, err = invoke("convert", model, "-c", calib, "--no-ort", "--no-bench")
    assert code == 0, out + err
    assert "calibrated on 1 samples" in out
    assert "all.npy holds 9 rows on the model's symbolic batch axis: read as ONE sample" in err


def test_help_is_grouped_leads_with_examples_and_shows_every_summary_whole():
    """Issue 13.8: before, one flat list of 53 flags and truncated command summaries."""
    code, out, _ = invoke("convert", "--help")
    assert code == 0
    head = out[: out.index("Input and output:")]
    assert head.count("ptq convert model.onnx") >= 3  # examples first
    for group in ("Input and output:", "Calibration data", "Quantization scheme:", "Recipes", "Measurement data:",
                  "Measurement:", "Gates", "Console:"):  # fmt: skip
        assert group in out, group
    assert "Folder (or one file) of .npz/.npy samples or .png/.jpg images." in " ".join(out.split())  # -c: images work
    code, out, _ = invoke("--help")
    commands = out[out.index("Commands:"):out.index("Exit codes:")]
    assert "..." not in commands
    for name in ("convert", "compare", "inspect", "bench"):
        assert re.search(rf"^  {name} +\S.*\.$", commands, re.MULTILINE), commands


def test_the_summary_fits_the_terminal(tmp_path, monkeypatch):
    """Issue 13.10: before, summary lines reached 205 characters and wrapped mid-word at 80."""
    monkeypatch.setenv("COLUMNS", "80")
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    code, out, err = invoke("convert", model, "--no-ort", "--runs", "2", "--warmup", "0", "--per-layer")
    assert code == 0, out + err
    for line in out.splitlines():
        # a path longer than the line is kept whole, on a line of its own
        assert len(line) <= 80 or (len(line.split()) == 1 or str(tmp_path) in line), line
    assert "dynamic int8" in out and "fidelity" in out
    code, help_text, _ = invoke("convert", "--help")
    assert max(len(line) for line in help_text.splitlines()) <= 80
