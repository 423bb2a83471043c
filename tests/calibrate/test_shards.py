"""Sharded calibration: shards cover the samples, states round-trip as plain arrays, and the
merged observers of worker processes equal a one-process run (min/max exactly, histogram ranges
within the re-binning tolerance) on the real PP-OCR cls model and real zoo samples (cls, not det:
its small activations keep this test process's peak memory low, which the robustness tests'
child-memory figures inherit)."""

from pathlib import Path

import numpy as np
import pytest

from bench import zoo
from ptq import loader
from ptq.calibrate import shards
from ptq.calibrate.data import input_specs
from ptq.calibrate.samples import Samples
from ptq.calibrate.observers import HistogramObserver, MinMaxObserver
from ptq.calibrate.runner import calibrate, observe
from ptq.config import CalibrationMethod, Config
from ptq.errors import CalibrationDataError
from ptq.quantize.plan import make_plan
from ptq.quantize.static import calibrated_tensors
from tests import tiny

REBIN_TOLERANCE = shards.REBIN_TOLERANCE


@pytest.mark.parametrize("total, n", [(10, 2), (10, 3), (3, 8), (0, 2), (256, 2), (7, 1)])
def test_shard_bounds_cover_every_sample_once_in_order(total, n):
    bounds = shards.shard_bounds(total, n)
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(total))
    sizes = [stop - start for start, stop in bounds]
    assert not sizes or max(sizes) - min(sizes) <= 1
    assert len(bounds) == min(n, total)


def test_states_round_trip_through_plain_arrays():
    rng = np.random.default_rng(0)
    hist, minmax, empty = HistogramObserver(), MinMaxObserver(), HistogramObserver()
    for _ in range(3):
        x = rng.normal(size=5000).astype(np.float32) * rng.uniform(1, 4)
        hist.update(x)
        minmax.update(x)
    data = shards.states_to_npz({"h": hist, "m": minmax, "e": empty})
    with np.load(__import__("io").BytesIO(data), allow_pickle=False) as arrays:  # no object arrays inside
        assert all(arrays[k].dtype != object for k in arrays.files)
    back = shards.observers_from_npz(data)
    assert list(back) == ["h", "m", "e"]
    assert (back["h"].lo, back["h"].hi, back["h"].range(), back["h"].minmax.count) == (hist.lo, hist.hi, hist.range(), hist.minmax.count)
    assert np.array_equal(back["h"].counts, hist.counts)
    assert (back["m"].range(), back["m"].count) == (minmax.range(), minmax.count)
    assert back["e"].minmax.count == 0


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_samples_between_reads_the_same_samples_as_a_full_pass(tmp_path, save):
    model = tiny.small_cnn()
    specs = input_specs(model)
    rng = np.random.default_rng(3)
    save(tmp_path / "a.npz", x=rng.normal(size=(5, 1, 3, 16, 16)).astype(np.float32))  # 5 samples in one file
    np.save(tmp_path / "b.npy", rng.normal(size=(1, 3, 16, 16)).astype(np.float32))
    save(tmp_path / "c.npz", x=rng.normal(size=(4, 1, 3, 16, 16)).astype(np.float32))
    samples = Samples(tmp_path, specs)
    whole = [feed["x"] for feed in samples]
    assert len(whole) == 10
    for start, stop in [(0, 10), (2, 7), (5, 6), (6, 10), (9, 10), (3, 3)]:
        got = [feed["x"] for feed in Samples(tmp_path, specs, stop).between(start, stop)]
        assert len(got) == stop - start
        assert all(np.array_equal(a, b) for a, b in zip(got, whole[start:stop]))


@pytest.fixture(scope="module")
def cls_samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cls_calib")
    zoo.write_calibration_dir("ppocr-cls", folder, "calib", n=12)
    return folder


@pytest.fixture(scope="module")
def cls(cls_samples):
    model = loader.load(zoo.fetch_model("ppocr-cls")).model
    return model, calibrated_tensors(model, make_plan(model, Config(calibration_data=cls_samples)))


def test_two_worker_processes_give_the_ranges_of_one(cls, cls_samples):
    model, tensors = cls
    one, used_one = observe(model, tensors, cls_samples)
    two, used_two = observe(model, tensors, cls_samples, workers=2)
    assert used_one == used_two == len(Samples(cls_samples, input_specs(model))) == 12
    assert list(two) == list(one)
    for name in tensors:
        assert two[name].range() == one[name].range(), name  # min/max merge exactly
        assert two[name].minmax.count == one[name].minmax.count
        assert two[name].counts.sum() == pytest.approx(one[name].counts.sum(), rel=1e-3)
    for method in (CalibrationMethod.PERCENTILE, CalibrationMethod.MSE):
        from ptq.calibrate.runner import choose_range

        worst = 0.0
        for name in tensors:
            lo1, hi1 = choose_range(one[name], method, 99.99)
            lo2, hi2 = choose_range(two[name], method, 99.99)
            width = max(one[name].range()[1] - one[name].range()[0], 1e-12)
            worst = max(worst, abs(lo1 - lo2) / width, abs(hi1 - hi2) / width)
        assert worst <= REBIN_TOLERANCE, (method, worst)


def test_sharded_calibrate_is_deterministic_and_minmax_exact(cls, cls_samples):
    model, tensors = cls
    first, _ = calibrate(model, tensors, cls_samples, method=CalibrationMethod.PERCENTILE, workers=3, limit=7)
    again, _ = calibrate(model, tensors, cls_samples, method=CalibrationMethod.PERCENTILE, workers=3, limit=7)
    assert first == again
    sharded, _ = calibrate(model, tensors, cls_samples, method=CalibrationMethod.MINMAX, workers=2, limit=7)
    single, _ = calibrate(model, tensors, cls_samples, method=CalibrationMethod.MINMAX, limit=7)
    assert sharded == single


def test_a_bad_sample_in_a_later_shard_is_named_by_the_worker(tmp_path):
    model_path = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    model = loader.load(Path(model_path)).model
    data = tmp_path / "data"
    tiny.image_samples(data, n=6)
    # sample 5's compressed bytes damaged after its header: the driver's header scan passes, the
    # worker of the second shard fails reading it
    bad = data / "sample_004.npz"
    np.savez_compressed(bad, x=np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32))
    raw = bytearray(bad.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)
    bad.write_bytes(bytes(raw))
    tensors = [o for n in model.graph.node for o in n.output]
    with pytest.raises(CalibrationDataError, match="sample_004.npz"):
        observe(model, tensors, data, workers=2)


def test_convert_with_two_workers_writes_the_bytes_of_one_with_minmax(tmp_path, cls_samples):
    from tests.report import real

    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"cls{workers}.int8.onnx"
        code, _, err = real.invoke(
            "convert", zoo.fetch_model("ppocr-cls"), "-c", cls_samples, "-o", out, "--no-ort", "-q",
            "--calibration-method", "minmax", "--workers", workers,
        )  # fmt: skip
        assert code == 0, err
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_workers_below_one_is_a_usage_error(tmp_path, cls_samples):
    from tests.report import real

    code, _, err = real.invoke("convert", zoo.fetch_model("ppocr-cls"), "-c", cls_samples, "-o", tmp_path / "x.onnx", "--workers", 0)
    assert code == 2 and "--workers must be at least 1" in err
