"""The report commands on real models: convert's table and reports, compare, inspect, bench; the
CI gates passing and failing on real figures; exit codes (0, 2 usage, 3/5 input errors, 6 gate)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import onnx

from bench import zoo
from ptq import errors
from tests import tiny
from tests.report import real


def files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------- convert


def test_convert_prints_the_table_and_passes_gates():
    run = real.det_convert()
    assert run.exit_code == 0, run.stdout + run.stderr
    out = run.stdout
    for text in ("measured on 4 eval samples from", "size ", "latency median", "latency p90", "speedup",
                 "1 thread, 2 warm-up + 20 timed runs each, interleaved, wall clock; input x[1,3,", "fidelity ", "cosine ",
                 "SQNR ", "max abs error ", "top-1 n/a", "nodes ", " int8, 0 hybrid, "):  # fmt: skip
        assert text in out, text
    gate_lines = [line for line in out.splitlines() if " pass  --" in line or "FAIL" in line]
    assert len(gate_lines) == 4 and all("pass  --" in line for line in gate_lines)
    assert "--max-size-ratio 0.5: size ratio 0.2" in out  # static int8 ppocr-det is ~0.30x
    assert "gate failed" not in run.stderr
    assert {"det.int8.onnx", "det.int8.ort", "det.int8.ops.json", "report.json", "report.md", "report.html"} <= set(
        files(run.folder)
    )


def test_per_layer_prints_the_worst_layers_first_and_the_markdown_holds_them():
    import re

    run = real.det_convert()
    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "per-layer error vs float, worst first" in line)
    assert re.search(r"\((\d+) tensors, 4 samples\)", lines[start])
    rows = [line for line in lines[start + 2 : start + 17] if " dB " in line]
    assert len(rows) == 15 and "more, every one in a .json or .html --report" in lines[start + 17]
    sqnr = [float(row.split()[0]) for row in rows]
    assert sqnr == sorted(sqnr) and sqnr[0] < 30
    doc = json.loads(run.file("report.json").read_text())
    assert min(t["sqnr_db"] for t in doc["layers"]["tensors"]) == pytest.approx(sqnr[0], abs=0.05)
    md = run.file("report.md").read_text(encoding="utf-8")
    assert "<details><summary>Per-layer error vs float, worst 15 of" in md and md.count(" dB | 0.") >= 15


def test_convert_markdown_is_a_pr_comment():
    md = real.det_convert().file("report.md").read_text(encoding="utf-8")
    assert md.startswith("### ✅ ptq convert: `ppocr-det.onnx` → `det.int8.onnx` (static int8) — all gates passed")
    # int8 size 1.39-1.4x MB: the folded affine constants (ptq.rewrites.fold_affine) are gone
    assert re.search(r"\| size \| 4\.75 MB \| 1\.[34]\d? MB", md) and "| latency median |" in md and "| SQNR |" in md
    assert "| `--max-size-ratio` | 0.5 |" in md and "✅ pass" in md and "FAIL" not in md
    assert "onnxruntime 1." in md and "<sub>" in md


def test_convert_gates_fail_with_exit_6_and_still_write(tmp_path):
    """Every gate fails on real figures; without --eval-data the calibration samples are used, labelled."""
    out = tmp_path / "det.int8.onnx"
    code, stdout, stderr = real.invoke(
        "convert", zoo.fetch_model("ppocr-det"), "-c", real.DET_CALIBRATION, "-o", out, "--no-ort",
        "--runs", 3, "--warmup", 1, "--eval-samples", 3, "--report", tmp_path / "r.json",
        "--max-size-ratio", 0.1, "--min-speedup", 100, "--min-cosine", 0.99999, "--min-sqnr", 60, "--min-top1", 0.5,
    )  # fmt: skip
    assert code == errors.EXIT_GATE_FAILED == 6, stdout + stderr
    failed = [line for line in stderr.splitlines() if line.startswith("ptq: gate failed: ")]
    assert [line.split(": ")[2].split()[0] for line in failed] == [
        "--max-size-ratio", "--min-speedup", "--min-cosine", "--min-sqnr", "--min-top1"]  # fmt: skip
    assert "top-1 agreement does not apply" in stderr
    assert "3 calibration samples from" in stdout and "not held out" in stdout
    assert stdout.count("FAIL  --") == 5
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["gates"]["passed"] is False and not any(r["passed"] for r in doc["gates"]["results"])
    assert doc["data"]["source"] == "calibration" and doc["latency"]["runs"] == 3
    assert {"det.int8.onnx", "det.int8.ops.json", "r.json"} == set(files(tmp_path))


def test_dynamic_without_data_measures_on_synthesized_inputs(tmp_path):
    code, stdout, stderr = real.invoke(
        "convert", zoo.fetch_model("ppocr-cls"), "-o", tmp_path / "cls.onnx", "--no-ort", "--no-bench",
        "--min-top1", 0.5, "--min-cosine", 0.9, "--max-size-ratio", 0.5,
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert "dynamic int8" in stdout and "synthesized inputs from the model's input shapes" in stdout
    assert "latency         not measured (--no-bench)" in stdout
    assert "pass  --min-top1 0.5: top-1 agreement 1.0000 >= 0.5" in stdout  # [N, 2] class scores


def test_quiet_prints_only_failed_gates(tmp_path):
    code, stdout, stderr = real.invoke(
        "convert", zoo.fetch_model("ppocr-cls"), "-o", tmp_path / "cls.onnx", "--no-ort", "-q",
        "--runs", 2, "--warmup", 0, "--min-speedup", 1000,
    )  # fmt: skip
    assert code == 6 and stdout == ""
    assert stderr.startswith("ptq: gate failed: --min-speedup 1000: speedup ")


def test_usage_errors_exit_2_before_converting(tmp_path):
    model = zoo.fetch_model("ppocr-cls")
    for args in (["--no-bench", "--min-speedup", "2"], ["--report", tmp_path / "r.txt"], ["--min-top1", "95"],
                 ["--threads", "0"], ["--runs", "0"], ["--min-cosine", "2"]):  # fmt: skip
        code, stdout, stderr = real.invoke("convert", model, "-o", tmp_path / "cls.onnx", *args)
        assert code == errors.EXIT_USAGE == 2, (args, stdout, stderr)
        assert stderr.startswith("ptq: error: ") and "Traceback" not in stderr
    assert files(tmp_path) == []


def test_bad_eval_data_exits_5_before_converting(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    (tmp_path / "eval").mkdir()
    np.savez(tmp_path / "eval" / "s.npz", image=np.zeros((1, 3, 16, 16), np.float32))
    code, _, stderr = real.invoke("convert", model, "--eval-data", tmp_path / "eval")
    assert code == errors.EXIT_BAD_CALIBRATION == 5
    assert "--eval-data" in stderr and "missing input(s) x" in stderr
    assert files(tmp_path) == ["cnn.onnx", "s.npz"]


def test_report_folder_must_exist(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    code, _, stderr = real.invoke("convert", model, "--report", tmp_path / "nope" / "r.json")
    assert code == errors.EXIT_OUTPUT and "does not exist" in stderr
    assert files(tmp_path) == ["cnn.onnx"]


# ----------------------------------------------------------------------------------- compare


def test_compare_prints_the_table_and_fails_gates():
    run = real.det_compare()
    assert run.exit_code == errors.EXIT_GATE_FAILED, run.stdout + run.stderr
    out = run.stdout
    assert "  A  " in out and "ppocr-det.onnx" in out and "  B  " in out and "det.int8.onnx" in out
    assert "measured on 4 eval samples" in out and "latency median" in out and "fidelity " in out
    assert "A: 0 int8, 0 hybrid, " in out and "(compute nodes onnxruntime runs)" in out
    assert run.stderr.count("ptq: gate failed:") == 5
    md = run.file("report.md").read_text()
    assert md.startswith("### ❌ ptq compare:") and "5 gate(s) failed" in md and md.count("❌ **FAIL**") == 5


def test_compare_gates_pass_on_the_same_figures(tmp_path):
    code, stdout, stderr = real.invoke(
        "compare", zoo.fetch_model("ppocr-det"), real.det_convert().file("det.int8.onnx"), "--data", real.det_eval(),
        "--samples", 2, "--runs", 5, "--warmup", 1,
        "--max-size-ratio", 0.5, "--min-speedup", 0.1, "--min-cosine", 0.5, "--min-sqnr", 3,
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert stdout.count("pass  --") == 4 and "measured on 2 eval samples" in stdout


def test_compare_models_with_different_inputs_is_usage_error(tmp_path):
    a = tiny.save(tiny.small_cnn(), tmp_path / "a.onnx")
    b = tiny.save(tiny.small_mlp(), tmp_path / "b.onnx")
    code, _, stderr = real.invoke("compare", a, b)
    assert code == errors.EXIT_USAGE and "must take the same inputs" in stderr


def test_compare_unreadable_model_exits_3(tmp_path):
    a = tiny.save(tiny.small_cnn(), tmp_path / "a.onnx")
    (tmp_path / "b.onnx").write_text("not a model")
    code, _, stderr = real.invoke("compare", a, tmp_path / "b.onnx")
    assert code == errors.EXIT_INVALID_MODEL and "not an ONNX model" in stderr


# ----------------------------------------------------------------------------------- inspect


def test_inspect_float_and_int8():
    code, out, _ = real.invoke("inspect", zoo.fetch_model("ppocr-det"))
    assert code == 0
    assert "ONNX IR 8, opset ai.onnx 12" in out and "quantized  no" in out
    assert "inputs     x  float32[p2o.DynamicDimension.0, 3," in out and "outputs    sigmoid_0.tmp_0  float32[" in out
    assert "runs       0 int8, 0 hybrid, " in out
    conv = next(line for line in out.splitlines() if line.split()[1:2] == ["Conv"])
    assert "MB" in conv and "int8 kernel (QLinearConv)" in conv
    assert any("HardSigmoid" in line and "float only" in line for line in out.splitlines())

    code, out, _ = real.invoke("inspect", real.det_convert().file("det.int8.onnx"), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["quantized"] is True and info["quantization_ops"]["QuantizeLinear"] > 50
    assert info["opset"] == 13 and info["producer"].startswith("ptq ")
    assert info["executed"]["int8"] > 100
    conv = next(s for s in info["op_types"] if s["op_type"] == "Conv")
    assert conv["count"] == 62 and conv["bytes"] < 1_400_000


def test_inspect_missing_file_exits_3(tmp_path):
    code, _, stderr = real.invoke("inspect", tmp_path / "nope.onnx")
    assert code == errors.EXIT_INVALID_MODEL and "no such file" in stderr


# ------------------------------------------------------------------------------------- bench


def test_bench_times_every_model():
    run = real.det_bench()
    assert run.exit_code == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert "1 thread, 1 warm-up + 5 timed runs each, interleaved, wall clock; input x[1,3," in run.stdout
    assert any(line.split()[:1] == ["ppocr-det.onnx"] and line.rstrip().endswith("1.00x") for line in lines)
    assert any(line.split()[:1] == ["det.int8.onnx"] for line in lines)
    doc = json.loads(run.file("report.json").read_text())
    assert [len(m["runs_ms"]) for m in doc["latency"]["models"]] == [5, 5]
    assert run.file("report.md").read_text().startswith("### ptq bench")


def test_bench_synthesizes_an_input(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    code, out, _ = real.invoke("bench", model, "--runs", 3, "--warmup", 0)
    assert code == 0 and "1 synthesized input" in out and "input x[1,3,16,16]" in out


def test_help_lists_the_commands():
    code, out, _ = real.invoke("--help")
    assert code == 0 and all(c in out for c in ("convert", "compare", "inspect", "bench"))
    code, out, _ = real.invoke("convert", "--help")
    for option in ("--eval-data", "--no-bench", "--threads", "--report", "--max-size-ratio", "--min-speedup",
                   "--min-cosine", "--min-sqnr", "--min-top1"):  # fmt: skip
        assert option in out


def test_convert_writes_only_what_was_asked():
    """The report adds no file beside the model outputs unless --report asks for one."""
    run = real.det_convert()
    written = set(files(run.folder))
    assert written == {"det.int8.onnx", "det.int8.ort", "det.int8.ops.json", "report.json", "report.md", "report.html"}
    onnx.checker.check_model(str(run.file("det.int8.onnx")))


def _needs_side(tmp_path, side: int) -> str:
    """A model whose free height and width must be ``side`` (a Reshape to a fixed size after them)."""
    from onnx import TensorProto, helper, numpy_helper

    out = 8 * (side - 2) ** 2
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Reshape", ["c", "s"], ["y"])]
    graph = helper.make_graph(
        nodes, "fixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out])],
        [numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w"),
         numpy_helper.from_array(np.array([1, out], np.int64), "s")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return tiny.save(model, tmp_path / f"side{side}.onnx")


def test_synthesized_inputs_take_a_size_the_model_runs(tmp_path):
    """Issue 13.1: a model that cannot run the default 224x224 (as PP-OCR rec needs a height of 48)
    is measured on the first free size it runs on; before, exit 5 after writing the outputs."""
    code, stdout, stderr = real.invoke("convert", _needs_side(tmp_path, 48), "--no-ort", "--runs", "2", "--warmup", "0")
    assert code == 0, stdout + stderr
    assert "measured on 4 synthesized inputs" in stdout and "input x[1,3,48,48]" in stdout
    assert "cosine " in stdout


def test_synthesized_inputs_that_cannot_run_say_so_and_exit_0(tmp_path):
    """Issue 13.1: a model no synthesized size fits: the outputs are written, the summary says why
    there are no figures and how to get them, exit 0; a gate on a missing figure fails (exit 6)."""
    path = _needs_side(tmp_path, 16)
    code, stdout, stderr = real.invoke("convert", path, "--no-ort")
    assert code == 0, stdout + stderr
    assert "fidelity and latency not measured: onnxruntime cannot run side16.onnx on inputs synthesized" in stdout
    assert "give real samples with --eval-data DIR" in stdout
    assert "[E:onnxruntime" not in stderr  # onnxruntime's own log line stays off the terminal
    assert files(tmp_path) == ["side16.int8.onnx", "side16.int8.ops.json", "side16.onnx"]
    code, stdout, stderr = real.invoke("convert", path, "--no-ort", "--min-cosine", "0.9")
    assert code == errors.EXIT_GATE_FAILED
    assert "gate failed" in stderr and "not measured: onnxruntime cannot run" in stderr


def test_one_file_of_many_samples_calibrates_and_measures(tmp_path):
    """A single .npz with samples stacked on a new axis 0: calibration and the fidelity
    measurement both read it sample by sample, and count samples, not files."""
    feeds = zoo.inputs("ppocr-cls", "calib", 5)
    calib = tmp_path / "calib"
    calib.mkdir()
    np.savez(calib / "all.npz", x=np.stack([f["x"] for f in feeds]))
    code, stdout, stderr = real.invoke(
        "convert", zoo.fetch_model("ppocr-cls"), "-c", calib, "-o", tmp_path / "cls.onnx", "--no-ort", "--no-bench",
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert "calibrated on 4 samples, 1 more held out to validate" in stdout
    assert "measured on 5 calibration samples" in stdout
