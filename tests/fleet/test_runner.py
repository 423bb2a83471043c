"""run_one converts, measures and reports one model of a fleet and never raises: a failure comes
back as a plain dict with the error line and its exit code."""

from __future__ import annotations

import json

from ptq.errors import EXIT_INVALID_MODEL, EXIT_OK
from ptq.fleet.runner import FAILED, OK, run_one
from tests import tiny


def _job(path, out, **options) -> dict:
    return {"name": "m", "path": str(path), "options": {"output": str(out), "latency": False, **options}, "gates": {}}


def test_run_one_converts_measures_and_writes_the_model_reports(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    answer = run_one(_job(model, tmp_path / "cnn.int8.onnx", write_ort=False))
    assert answer["status"] == OK and answer["exit_code"] == EXIT_OK, answer
    assert answer["mode"] == "dynamic" and 0 < answer["size_ratio"] < 1
    assert all((tmp_path / name).exists() for name in ("cnn.int8.onnx", "cnn.int8.ops.json"))
    report = json.loads((tmp_path / "cnn.int8.report.json").read_text())
    assert report["summary"]["cosine"] == answer["cosine"] and answer["cosine"] > 0.9
    json.dumps(answer)  # the worker's answer is plain JSON


def test_run_one_returns_a_failure_instead_of_raising(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    answer = run_one(_job(broken, tmp_path / "broken.int8.onnx"))
    assert answer["status"] == FAILED and answer["exit_code"] == EXIT_INVALID_MODEL
    assert "\n" not in answer["error"] and "broken.onnx" in answer["error"]
    assert not (tmp_path / "broken.int8.onnx").exists()
