"""The fitting/validation split, and that ranges are fitted on the fitting part only."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ptq
from ptq.calibrate.data import input_specs
from ptq.calibrate.samples import Samples
from ptq.config import CalibrationMethod
from ptq.tuning import validation
from tests import tiny


@pytest.mark.parametrize("total", [0, 1, 3, 4, 7, 8, 24, 32, 64, 65, 200])
def test_split_is_disjoint_spread_and_bounded(total):
    split = validation.split(total)
    assert split == validation.split(total)  # deterministic
    assert set(split.fit) | set(split.validation) == set(range(total))
    assert not set(split.fit) & set(split.validation)
    if total < validation.MIN_SAMPLES:
        assert not split.held_out and split.scoring == tuple(range(min(total, validation.FALLBACK_SCORING)))
        assert "fitting samples" in split.scored_on
        return
    v = len(split.validation)
    assert v == min(validation.MAX_VALIDATION, total // validation.VALIDATION_SHARE)
    assert split.scoring == split.validation
    # spread: one held-out sample in each of v equal blocks of the sample order
    for block, position in enumerate(split.validation):
        assert block * total // v <= position < (block + 1) * total // v


@pytest.mark.parametrize("period", [2, 3, 4, 5])
@pytest.mark.parametrize("total", [16, 24, 32, 40, 64, 65, 200])
def test_split_holds_out_every_kind_of_an_alternating_folder(total, period):
    """A folder that cycles through ``period`` kinds (PP-OCR cls's bench folder alternates upright
    and upside-down lines) lends the validation part every kind: a fixed offset per block of four
    held out only one kind."""
    held = validation.split(total).validation
    if len(held) >= 2 * period:
        assert {i % period for i in held} == set(range(period))


def test_samples_reads_only_the_selected_positions(tmp_path):
    """Positions count across files, multi-sample files included (compressed ones read in order)."""
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(1, 3, 16, 16)).astype(np.float32) for _ in range(7)]
    np.savez(tmp_path / "a.npz", x=arrays[0])
    np.savez_compressed(tmp_path / "b.npz", x=np.stack(arrays[1:4]))  # 3 samples (rank + 1), compressed
    np.savez(tmp_path / "c.npz", x=np.stack(arrays[4:7]))  # 3 samples, stored
    specs = input_specs(tiny.small_cnn())
    for wanted in [(0, 2, 5), (3, 6), (1,), ()]:
        got = [feed["x"] for feed in Samples(tmp_path, specs, indices=wanted)]
        assert len(got) == len(Samples(tmp_path, specs, indices=wanted)) == len(wanted)
        for index, value in zip(wanted, got):
            np.testing.assert_array_equal(value, arrays[index])
    assert len(Samples(tmp_path, specs, limit=4, indices=(1, 5))) == 1  # position 5 is beyond the limit


def test_ranges_are_fitted_without_the_validation_samples(tmp_path):
    """A huge value in a held-out sample does not reach the minmax ranges; in a fitting sample it does."""
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    split = validation.split(8)

    def ranges_with_outlier_at(position: int) -> float:
        data = tmp_path / f"data{position}"
        tiny.image_samples(data, n=8)
        path = data / f"sample_{position:03d}.npz"
        x = np.load(path)["x"].copy()
        x[0, 0, 0, 0] = 1000.0
        np.savez(path, x=x)
        ranges = tmp_path / f"r{position}.json"
        result = ptq.convert(model, ptq.Config(
            output=tmp_path / f"q{position}.onnx", calibration_data=data, calibration_method=CalibrationMethod.MINMAX,
            save_ranges=ranges, write_ort=False,
        ))  # fmt: skip
        assert result.split == split and result.calibration_samples == len(split.fit)
        assert any(n.startswith("validation split: 6 samples fit the ranges, 2 held out") for n in result.notes)
        return json.loads(ranges.read_text())["ranges"]["x"][1]

    held_out, fitting = split.validation[0], split.fit[0]
    assert ranges_with_outlier_at(held_out) < 2.0
    assert ranges_with_outlier_at(fitting) == 1000.0


@pytest.mark.parametrize("total", [3, 4, 8, 10, 16, 24, 32, 65, 200])
def test_folds_cover_every_sample_once_with_the_validation_part_first(total):
    split = validation.split(total)
    folds = split.folds()
    if not split.held_out:
        assert folds == ()
        return
    assert folds[0] == split.validation and 2 <= len(folds) <= validation.MAX_FOLDS
    flat = [i for fold in folds for i in fold]
    assert sorted(flat) == list(range(total))  # each sample in exactly one fold
    assert all(fold for fold in folds)
