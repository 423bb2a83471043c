"""The command line on bad input: one clear line, a documented exit code, no file left behind."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto

import ptq.report.env
from ptq import errors
from ptq.cli import main
from tests import tiny


def invoke(*args):
    return CliRunner().invoke(main, ["convert", *map(str, args)])


def files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def cnn(tmp_path):
    return tmp_path / tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx").split("/")[-1]


def check_error(result, code, message, folder, before):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("ptq: error:")]
    messages = (message,) if isinstance(message, str) else message
    assert len(lines) == 1 and any(m in lines[0] for m in messages), result.output
    assert "Traceback" not in result.output
    assert files(folder) == before, "a partial output was left behind"


def test_success_prints_summary_and_writes_three_files(cnn, tmp_path):
    calib = tiny.image_samples(tmp_path / "calib", n=3)
    result = invoke(cnn, "-c", calib)
    assert result.exit_code == 0, result.output
    assert "static int8" in result.output and "int8," in result.output
    assert {"cnn.int8.onnx", "cnn.int8.ort", "cnn.int8.ops.json"} <= set(files(tmp_path))


def test_missing_file(tmp_path):
    check_error(invoke(tmp_path / "nope.onnx"), errors.EXIT_INVALID_MODEL, "no such file", tmp_path, [])


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n" * 20)
    check_error(invoke(bad), errors.EXIT_INVALID_MODEL, "not an ONNX model", tmp_path, files(tmp_path))


def test_truncated_file(cnn, tmp_path):
    data = cnn.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    # Depending on where the cut falls, protobuf fails to parse or the checker finds a hole.
    check_error(invoke(cut), errors.EXIT_INVALID_MODEL, ("not an ONNX model", "invalid ONNX model"), tmp_path, files(tmp_path))


def test_float16_model_is_refused(tmp_path):
    model = tiny.save(tiny.small_cnn(dtype=TensorProto.FLOAT16), tmp_path / "half.onnx")
    check_error(invoke(model), errors.EXIT_UNSUPPORTED_MODEL, "not a float32 model", tmp_path, files(tmp_path))


def test_already_quantized_model_is_refused(cnn, tmp_path):
    calib = tiny.image_samples(tmp_path / "calib", n=2)
    assert invoke(cnn, "-c", calib, "-o", tmp_path / "q.onnx").exit_code == 0
    before = files(tmp_path)
    check_error(invoke(tmp_path / "q.onnx", "-o", tmp_path / "qq.onnx"), errors.EXIT_UNSUPPORTED_MODEL, "already quantized", tmp_path, before)


def test_output_equal_to_input_is_refused(cnn, tmp_path):
    data = cnn.read_bytes()
    check_error(invoke(cnn, "-o", cnn), errors.EXIT_OUTPUT, "is the input model", tmp_path, files(tmp_path))
    assert cnn.read_bytes() == data


def test_calibration_keys_must_match(cnn, tmp_path):
    (tmp_path / "calib").mkdir()
    np.savez(tmp_path / "calib" / "s.npz", image=np.zeros((1, 3, 16, 16), np.float32))
    check_error(invoke(cnn, "-c", tmp_path / "calib"), errors.EXIT_BAD_CALIBRATION, "missing input(s) x", tmp_path, files(tmp_path))


def test_calibration_shapes_must_match(cnn, tmp_path):
    (tmp_path / "calib").mkdir()
    np.save(tmp_path / "calib" / "s.npy", np.zeros((1, 1, 16, 16), np.float32))
    check_error(invoke(cnn, "-c", tmp_path / "calib"), errors.EXIT_BAD_CALIBRATION, "has shape [1, 1, 16, 16]", tmp_path, files(tmp_path))


def test_empty_calibration_folder(cnn, tmp_path):
    (tmp_path / "calib").mkdir()
    check_error(invoke(cnn, "-c", tmp_path / "calib"), errors.EXIT_BAD_CALIBRATION, "no .npz or .npy files", tmp_path, files(tmp_path))


def test_bad_option_value_is_usage_error(cnn, tmp_path):
    result = invoke(cnn, "--weights", "sideways")
    assert result.exit_code == errors.EXIT_USAGE
    assert files(tmp_path) == ["cnn.onnx"]


def test_nan_weight_names_the_tensor(tmp_path):
    m = tiny.small_cnn()
    for t in m.graph.initializer:
        if t.name == "w2":
            w = onnx.numpy_helper.to_array(t).copy()
            w[0, 0, 0, 0] = np.nan
            t.CopyFrom(onnx.numpy_helper.from_array(w, "w2"))
    model = tiny.save(m, tmp_path / "nan.onnx")
    check_error(invoke(model), errors.EXIT_UNSUPPORTED_MODEL, "'w2' contains 1 NaN/Inf", tmp_path, files(tmp_path))


def test_help_lists_exit_codes():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for code in errors.EXIT_CODES:
        assert f"{code:>3}  " in result.output


def test_outputs_identical_across_processes(cnn, tmp_path):
    calib = tiny.image_samples(tmp_path / "calib", n=3)
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.onnx"
        subprocess.run([sys.executable, "-m", "ptq.cli", "convert", "-q", str(cnn), "-c", calib, "-o", str(out)], check=True)
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert (tmp_path / "a.ops.json").read_bytes() == (tmp_path / "b.ops.json").read_bytes()


def test_an_error_caused_by_ctrl_c_counts_as_interrupted():
    """A library that turns a KeyboardInterrupt into its own error (seen once: Ctrl-C landing
    inside an import) still gives exit 130, not the internal-error 70."""
    from ptq import cli

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("import failed halfway")
    except RuntimeError as exc:
        assert cli._interrupted(exc)
    assert not cli._interrupted(RuntimeError("a real bug"))


def test_latency_budget_must_be_positive(cnn, tmp_path):
    calib = tiny.image_samples(tmp_path / "calib", n=2)
    before = files(tmp_path)
    check_error(invoke(cnn, "-c", calib, "--latency-budget", "0"), errors.EXIT_USAGE, "--latency-budget", tmp_path, before)


@pytest.mark.parametrize("threads", ["two", "1,0", ""])
def test_latency_threads_must_be_thread_counts(cnn, tmp_path, threads):
    calib = tiny.image_samples(tmp_path / "calib", n=2)
    before = files(tmp_path)
    check_error(invoke(cnn, "-c", calib, "--latency-threads", threads), errors.EXIT_USAGE, "--latency-threads", tmp_path, before)


@pytest.mark.latency_search
def test_latency_search_switch_and_budget_reach_the_conversion(cnn, tmp_path):
    calib = tiny.image_samples(tmp_path / "calib", n=2)
    on = invoke(
        cnn, "-c", calib, "-o", tmp_path / "on.onnx", "--latency-budget", "3", "--no-bench", "--save-ranges",
        tmp_path / "on.json", "--report", tmp_path / "on.md", "--latency-threads", "1,3",
    )  # fmt: skip
    assert on.exit_code == 0, on.output
    assert "latency placement on " in on.output and "of a 3 s budget" in on.output
    assert "written model at 3 threads (wall clock)" in " ".join(on.output.split())
    saved = json.loads((tmp_path / "on.json").read_text())["recipe"]["latency"]
    assert [c["threads"] for c in saved["thread_checks"]] == [3]
    cpu = ptq.report.env.cpu_info()["model"]
    assert f"Latency placement on {cpu}" in (tmp_path / "on.md").read_text()  # the report names the CPU
    off = invoke(cnn, "-c", calib, "-o", tmp_path / "off.onnx", "--no-latency-search", "--no-bench", "--save-ranges", tmp_path / "off.json")
    assert off.exit_code == 0, off.output
    assert "latency placement" not in off.output
    assert '"latency"' in (tmp_path / "on.json").read_text() and '"latency"' not in (tmp_path / "off.json").read_text()
