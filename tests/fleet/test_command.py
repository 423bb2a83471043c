"""``ptq run``: a fleet with a broken model converts the others, writes their outputs and reports,
and the exit code and the fleet report name the failure; gates fail with exit code 6."""

import json

import pytest

from ptq.errors import EXIT_FLEET_FAILED, EXIT_GATE_FAILED, EXIT_OK
from tests import tiny
from tests.report import real


@pytest.fixture
def fleet(tmp_path):
    tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    tiny.image_samples(tmp_path / "cnn_data", n=4)
    tiny.save(tiny.small_mlp(), tmp_path / "mlp.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    (tmp_path / "out").mkdir()
    text = """\
report = ["out/fleet.md", "out/fleet.json", "out/fleet.html"]

[defaults]
runs = 3
warmup = 1

[[model]]
name = "cnn"
path = "cnn.onnx"
calibration_data = "cnn_data"
calibration_method = "minmax"
output = "out/cnn.int8.onnx"

[model.gates]
min_cosine = 0.5

[[model]]
name = "broken"
path = "broken.onnx"
output = "out/broken.int8.onnx"

[[model]]
name = "mlp"
path = "mlp.onnx"
output = "out/mlp.int8.onnx"
"""
    (tmp_path / "ptq.toml").write_text(text)
    return tmp_path


def test_a_failed_model_leaves_the_others_outputs_and_reports_and_is_named(fleet):
    code, out, err = real.invoke("run", fleet / "ptq.toml", "--jobs", 2)
    assert code == EXIT_FLEET_FAILED, err
    for name in ("cnn", "mlp"):
        for suffix in (".int8.onnx", ".int8.ort", ".int8.ops.json", ".int8.report.json", ".int8.report.md"):
            assert (fleet / "out" / (name + suffix)).stat().st_size > 0
    assert not list((fleet / "out").glob("broken*"))
    assert "ptq: broken failed: " in err and "not an ONNX model" in err
    doc = json.loads((fleet / "out" / "fleet.json").read_text())
    assert doc["schema"] == "ptq-fleet-report" and doc["jobs"] == 2
    assert [m["name"] for m in doc["models"]] == ["cnn", "broken", "mlp"]  # project order, whatever finished first
    assert [m["status"] for m in doc["models"]] == ["ok", "failed", "ok"]
    assert doc["totals"]["failed"] == ["broken"] and doc["totals"]["converted"] == 2
    cnn = doc["models"][0]
    assert cnn["gates"][0]["gate"] == "min_cosine" and cnn["gates"][0]["passed"]
    assert doc["totals"]["int8_size_bytes"] == cnn["int8_size_bytes"] + doc["models"][2]["int8_size_bytes"]
    md = (fleet / "out" / "fleet.md").read_text()
    assert md.startswith("### 💥 ") and "failed: broken" in md and "| broken | FAILED |" in md
    assert "broken" in (fleet / "out" / "fleet.html").read_text()
    assert "broken" in out and "FAILED" in out  # the terminal table


def test_a_failed_gate_exits_6_and_a_clean_fleet_0(fleet):
    text = (fleet / "ptq.toml").read_text()
    no_broken = text.replace('[[model]]\nname = "broken"\npath = "broken.onnx"\noutput = "out/broken.int8.onnx"\n\n', "")
    (fleet / "ptq.toml").write_text(no_broken)
    code, _, err = real.invoke("run", fleet / "ptq.toml", "--only", "cnn", "-q")
    assert code == EXIT_OK, err
    (fleet / "ptq.toml").write_text(no_broken.replace("min_cosine = 0.5", "min_cosine = 1.0\nmin_sqnr = 200"))
    code, _, err = real.invoke("run", fleet / "ptq.toml", "-q")
    assert code == EXIT_GATE_FAILED
    assert "ptq: cnn: gate failed: --min-sqnr 200" in err


def test_a_bad_project_file_converts_nothing(fleet):
    (fleet / "ptq.toml").write_text((fleet / "ptq.toml").read_text().replace("runs = 3", "runs = 0"))
    code, _, err = real.invoke("run", fleet / "ptq.toml")
    assert code == 2 and "ptq.toml:4: defaults.runs: must be an integer >= 1, got 0" in err
    assert not list((fleet / "out").iterdir())
