"""Bias correction: cancel the mean output shift that rounding the weights to int8 causes.

Rounding a layer's weights ``W`` to ``Wq`` changes its output by ``(Wq - W) x``. Its mean over
the data, ``(Wq - W) E[x]``, is a per-output-channel constant the bias can absorb exactly
(Nagel et al., "Data-Free Quantization", 2019, sec. 4.2; here with the empirical input means
from the calibration samples). It matters where a channel has few weights: a 3x3 depthwise
kernel has 9, and their rounding errors do not average out.

The correction is applied to the float model before it is quantized, so the int32 bias that
``quantize_static`` writes already carries it. ``Wq`` is computed exactly as the quantizer will
compute it (same scheme, axis and range), from the pure functions in ``ptq.qmath``.

It is a scored choice (``choose``): the means come from the fitting samples only, and the
correction is kept where it raises the output SQNR on the held-out validation samples by
``MARGIN_DB`` (``--bias-correction`` keeps it unscored, ``--no-bias-correction`` never tries it).
The shifts are recorded in the recipe, so ``--load-ranges`` repeats them without data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ptq import qmath
from ptq.calibrate.runner import sample_values
from ptq.config import Config, ImageFormat, Scheme
from ptq.graph import attr, initializers
from ptq.quantize.plan import Plan
from ptq.recipe import Recipe, Scored

# Means converge quickly; more samples only cost time.
MEAN_SAMPLES = 32
# Kept when it gains this much on the validation samples. Held out (bench/ACCURACY_RESULTS.md,
# "The off-by-default recipes as candidates"), the correction gained on 5 of 6 bench models but
# the validation samples predicted it on one (rec: +0.75 there, +1.25 held out); YOLOv8n gained
# 0.30 dB on validation and lost 0.89 held out. 0.5 dB (as weight range auto) keeps rec only.
MARGIN_DB = 0.5

Shifts = dict[str, np.ndarray]  # node name -> (Wq - W) E[x] per output channel (float64)


@dataclass(frozen=True)
class Target:
    node: str
    op_type: str
    activation: str  # the input whose per-channel mean is needed
    weight: str
    bias: str | None
    axis: int | None  # the weight's per-channel quantization axis
    group: int


def targets(model: onnx.ModelProto, plan: Plan) -> list[Target]:
    """Conv (2-D and 1-D) and Gemm nodes the plan gives int8 weights, with a constant weight."""
    inits = initializers(model.graph)
    found = []
    for node in model.graph.node:
        if node.name not in plan.weights or node.op_type not in ("Conv", "Gemm"):
            continue
        weight_index, axis = plan.weights[node.name]
        if weight_index != 1 or node.input[1] not in inits:
            continue
        if node.op_type == "Gemm" and (attr(node, "transA", 0) or not attr(node, "transB", 0)):
            continue  # keep to y = x W^T + b, the layout Linear layers export
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is not None and (bias not in inits or len(inits[bias].dims) != 1):
            continue
        found.append(Target(node.name, node.op_type, node.input[0], node.input[1], bias, axis, int(attr(node, "group", 1))))
    return found


def channel_means(
    model: onnx.ModelProto, tensors: list[str], data, limit: int | None, image_format: ImageFormat | None,
    indices: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Mean of each tensor over every axis but 1 (channels), over up to ``MEAN_SAMPLES`` samples
    (of those at ``indices``: the fitting part of the split, when there is one)."""
    if indices is not None:
        indices = tuple(indices)[:MEAN_SAMPLES]
    else:
        limit = min(limit or MEAN_SAMPLES, MEAN_SAMPLES)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for values in sample_values(model, tensors, data, limit, image_format, indices):
        for name, value in values.items():
            if value.ndim < 2 or not np.all(np.isfinite(value)):
                continue
            moved = np.moveaxis(value.astype(np.float64), 1, -1).reshape(-1, value.shape[1])
            sums[name] = sums.get(name, 0.0) + moved.sum(axis=0)
            counts[name] = counts.get(name, 0) + moved.shape[0]
    return {name: sums[name] / counts[name] for name in sums if counts[name]}


def output_shift(target: Target, w: np.ndarray, wq: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """``(Wq - W) E[x]`` per output channel, or None when the shapes do not line up."""
    delta = (wq.astype(np.float64) - w.astype(np.float64))
    if target.op_type == "Gemm":  # w: [N, K]
        return delta @ mean if delta.shape[1] == mean.shape[0] else None
    out_channels, per_group = delta.shape[0], delta.shape[1]
    if per_group * target.group != mean.shape[0] or out_channels % target.group:
        return None
    summed = delta.reshape(out_channels, per_group, -1).sum(axis=2)  # spatial taps see the same mean
    group_of_output = np.arange(out_channels) // (out_channels // target.group)
    means = mean.reshape(target.group, per_group)[group_of_output]  # [O, C/g]
    return (summed * means).sum(axis=1)


def shifts(model: onnx.ModelProto, plan: Plan, config: Config, data, indices: Sequence[int] | None = None) -> Shifts:
    """``(Wq - W) E[x]`` of every layer ``plan`` gives int8 weights and whose shape lines up, with
    the weights as ``plan`` quantizes them and the means over the samples at ``indices``."""
    found = targets(model, plan)
    if not found:
        return {}
    means = channel_means(model, sorted({t.activation for t in found}), data, config.calibration_samples,
                          config.image_format, indices)  # fmt: skip
    inits = initializers(model.graph)
    symmetric = config.weights == Scheme.SYMMETRIC
    result: Shifts = {}
    for target in found:
        if target.activation not in means:
            continue
        w = numpy_helper.to_array(inits[target.weight]).astype(np.float32)
        if not np.all(np.isfinite(w)):
            continue  # the quantizer refuses such weights with a clear error
        q, scale, zero_point = qmath.quantize_weight(
            w, np.int8, symmetric=symmetric, axis=target.axis, reduce_range=config.reduce_range, mse=plan.mse_weights
        )
        if target.axis is None:
            wq = qmath.dequantize(q, scale, zero_point)
        else:
            shape = qmath.broadcast_shape(w.ndim, target.axis, w.shape[target.axis])
            wq = qmath.dequantize(q, scale.reshape(shape), zero_point.reshape(shape))
        shift = output_shift(target, w, wq, means[target.activation])
        if shift is not None and np.all(np.isfinite(shift)):
            result[target.node] = shift
    return result


@dataclass(frozen=True)
class Choice:
    """The recipe with the correction's decision (its shifts when kept, both scores when scored),
    the plan that carries the shifts to the quantizer, and the score of the model as it stands."""

    recipe: Recipe
    plan: Plan
    score: float
    kept: bool

    def describe(self) -> str:
        layers = len(self.recipe.bias_shifts)
        scores = {s.candidate: s.score_db for s in self.recipe.bias_correction_scores}
        if not scores:
            return f"bias correction: {layers} layer(s) corrected (asked for, not scored)" if self.kept else ""
        measured = f"output SQNR {scores['off']:.1f} dB without, {scores['on']:.1f} dB with"
        if self.kept:
            return f"bias correction: kept, {layers} layer(s) corrected; {measured}"
        return f"bias correction: not kept ({measured}; it must gain {MARGIN_DB} dB)"


def choose(recipe: Recipe, plan: Plan, ranges, config: Config, scoring, score: float, fit: Sequence[int] | None) -> Choice:
    """Correct the biases where that pays on the validation samples (``config.bias_correction``
    None), or as asked (True: always; False: never), with means over the ``fit`` samples."""
    if config.bias_correction is False:
        return Choice(recipe, plan, score, False)
    found = shifts(scoring.model, plan, config, config.calibration_data, fit)
    if not found:
        return Choice(recipe, plan, score, False)
    corrected = recipe.replace(bias_shifts=tuple((name, tuple(float(v) for v in found[name])) for name in sorted(found)))
    corrected_plan = dataclasses.replace(plan, bias_shifts=dict(corrected.bias_shifts))
    if config.bias_correction is True:
        return Choice(corrected, corrected_plan, math.nan, True)
    with_correction = scoring.score_plan(corrected_plan, ranges, config)
    scores = (Scored("off", score), Scored("on", with_correction))
    if with_correction >= score + MARGIN_DB:
        return Choice(corrected.replace(bias_correction_scores=scores), corrected_plan, with_correction, True)
    return Choice(recipe.replace(bias_correction_scores=scores), plan, score, False)
