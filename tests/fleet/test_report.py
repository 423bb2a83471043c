"""The fleet report's totals and renderings from run_one's dicts (converted, gate failed, failed)."""

import json

from ptq.fleet import report
from ptq.fleet.runner import FleetResult


def _result() -> FleetResult:
    gate = {"gate": "min_sqnr", "passed": False, "message": "--min-sqnr 30: SQNR 21.00 dB < 30 dB"}
    models = [
        {"name": "a", "path": "a.onnx", "status": "ok", "float_size_bytes": 4_000_000, "int8_size_bytes": 1_000_000,
         "float_ms": 10.0, "int8_ms": 5.0, "size_ratio": 0.25, "speedup": 2.0, "cosine": 0.999, "sqnr_db": 30.0,
         "gates": [{"gate": "min_cosine", "passed": True, "message": "ok"}], "reports": ["out/a.int8.report.md"]},
        {"name": "b", "path": "b.onnx", "status": "gate failed", "float_size_bytes": 2_000_000, "int8_size_bytes": 1_000_000,
         "float_ms": 6.0, "int8_ms": 5.0, "size_ratio": 0.5, "speedup": 1.2, "cosine": 0.99, "sqnr_db": 21.0, "gates": [gate]},
        {"name": "c", "path": "c.onnx", "status": "failed", "error": "c.onnx: not an ONNX model", "exit_code": 3},
    ]  # fmt: skip
    return FleetResult(models, 12.5, 2, "processes", "ptq.toml", "2026-01-01T00:00:00+00:00")


def test_totals_sum_the_converted_models_and_name_the_failures():
    t = report.totals(_result())
    assert (t["models"], t["converted"], t["passed"]) == (3, 2, 1)
    assert t["failed"] == ["c"] and t["gate_failed"] == ["b"]
    assert t["float_size_bytes"] == 6_000_000 and t["int8_size_bytes"] == 2_000_000 and t["size_ratio"] == 2 / 6
    assert t["speedup"] == 16.0 / 10.0


def test_renderings_name_every_model_and_the_verdict():
    result = _result()
    md = report.markdown(result)
    assert md.startswith("### 💥 ptq run ptq.toml: 3 models, 2 converted, 1 passed — failed: c; gate failed: b")
    assert "| b | GATE FAILED |" in md and "--min-sqnr 30: SQNR 21.00 dB < 30 dB" in md
    assert "- 💥 **c** (`c.onnx`): c.onnx: not an ONNX model" in md
    assert "| total (3) | 1 ok | 6.00 MB | 2.00 MB | 0.33x |" in md
    doc = json.loads(report.render(result, ".json"))
    assert doc["schema"] == report.SCHEMA and [m["name"] for m in doc["models"]] == ["a", "b", "c"]
    html = report.html(result)
    assert '<tr class="failed">' in html and '<tr class="gate-failed">' in html
    table = report.text_table(result).splitlines()
    assert table[0].split()[:2] == ["model", "status"] and any(line.startswith("c ") and "FAILED" in line for line in table)
