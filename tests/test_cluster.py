"""Ray, on a real local cluster this module starts (``ray.init(num_cpus=2)``: two worker
processes on this machine): calibration shards and a fleet's conversions run as Ray tasks and
give what the local processes give. Skipped when Ray is not installed (it is in the test extra)."""

import importlib.util
import json
from pathlib import Path

import pytest

from bench import zoo
from ptq import loader
from ptq.calibrate.runner import calibrate
from ptq.config import CalibrationMethod, Config
from ptq.errors import EXIT_FLEET_FAILED, UsageError
from ptq.quantize.plan import make_plan
from ptq.quantize.static import calibrated_tensors
from tests import tiny
from tests.report import real

# Ray is imported by the tests, not at collection: importing it grows this process by ~200 MB,
# which every child process forked afterwards inherits as its ru_maxrss (the robustness tests'
# memory bound reads that).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install '.[test]')")
DET_SAMPLES = Path(__file__).resolve().parents[1] / "calibration_data" / "ppocr_det"


def test_an_unreachable_cluster_is_a_usage_error():
    import ray

    from ptq import cluster

    if ray.is_initialized():
        pytest.skip("connected already")
    with pytest.raises(UsageError, match="--ray 127.0.0.1:1: cannot connect"):
        cluster.connect("127.0.0.1:1")


@pytest.fixture(scope="module")
def cluster():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()  # stops the processes this init started


def test_shards_as_ray_tasks_give_the_ranges_of_one_process(cluster, tmp_path):
    model = loader.load(zoo.fetch_model("ppocr-det")).model
    tensors = calibrated_tensors(model, make_plan(model, Config(calibration_data=DET_SAMPLES)))
    local, used = calibrate(model, tensors, DET_SAMPLES, method=CalibrationMethod.MINMAX, limit=6)
    on_ray, used_ray = calibrate(
        model, tensors, DET_SAMPLES, method=CalibrationMethod.MINMAX, limit=6, workers=2, ray_address="auto", shared_dir=tmp_path
    )
    assert used_ray == used == 6
    assert on_ray == local
    assert not list(tmp_path.iterdir())  # the model file written for the workers is removed


def test_a_fleet_on_ray_converts_the_others_and_names_the_failure(cluster, tmp_path):
    tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    tiny.image_samples(tmp_path / "data", n=3)
    (tmp_path / "bad.onnx").write_bytes(b"\x00" * 16)
    (tmp_path / "ptq.toml").write_text(
        'report = ["fleet.json"]\n[defaults]\nruns = 2\nwarmup = 0\n'
        '[[model]]\nname = "cnn"\npath = "cnn.onnx"\ncalibration_data = "data"\ncalibration_method = "minmax"\n'
        '[[model]]\nname = "bad"\npath = "bad.onnx"\n'
    )
    code, _, err = real.invoke("run", tmp_path / "ptq.toml", "--ray", "auto", "-q")
    assert code == EXIT_FLEET_FAILED, err
    doc = json.loads((tmp_path / "fleet.json").read_text())
    assert doc["backend"] == "ray"
    assert [(m["name"], m["status"]) for m in doc["models"]] == [("cnn", "ok"), ("bad", "failed")]
    assert (tmp_path / "cnn.int8.onnx").stat().st_size > 0 and (tmp_path / "cnn.int8.report.md").exists()
