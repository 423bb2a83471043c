"""The worker side of sharded calibration: one shard observed in this process from paths only,
its observer states returned as plain data, a bad shard returned as an error line and code."""

from __future__ import annotations

import numpy as np
import onnx

from ptq.calibrate.shard_worker import observe_shard, peak_rss_bytes
from ptq.calibrate.shards import ShardTask, observers_from_npz
from ptq.errors import EXIT_BAD_CALIBRATION
from tests import tiny


def _task(model_path, data_dir, start, stop, **more) -> dict:
    return ShardTask(
        model_path=str(model_path), data_dir=str(data_dir), start=start, stop=stop, tensors=("x", "prob"), histogram=False,
        exact=True, image_format=None, threads=1, batch_budget=1 << 20, whole=stop, **more,
    ).to_dict()  # fmt: skip


def test_observe_shard_sees_only_its_samples(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    data = tiny.image_samples(tmp_path / "calib", n=6)
    done: list[int] = []
    first, second = observe_shard(_task(model, data, 0, 3), progress=done.append), observe_shard(_task(model, data, 3, 6))
    assert done and done[-1] == 3
    assert (first["used"], second["used"]) == (3, 3) and first["peak_rss_bytes"] > 0
    lo_hi = [observers_from_npz(r["states"])["x"].range() for r in (first, second)]
    # the two shards saw different images, so their ranges differ; each is a real range
    assert lo_hi[0] != lo_hi[1] and all(lo < hi for lo, hi in lo_hi)


def test_observe_shard_returns_a_bad_sample_as_an_error(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    data = tmp_path / "calib"
    data.mkdir()
    np.savez(data / "sample_000.npz", x=np.zeros((1, 3, 5, 5), np.float32))  # the model wants 16x16
    answer = observe_shard(_task(model, data, 0, 1))
    assert answer["exit_code"] == EXIT_BAD_CALIBRATION and "sample_000" in answer["error"]


def test_peak_rss_is_at_least_what_this_process_holds_now():
    held = np.ones(64 << 20, np.uint8)  # 64 MiB touched
    assert peak_rss_bytes() >= held.nbytes
    assert onnx  # the worker module imports onnx for the input specs
