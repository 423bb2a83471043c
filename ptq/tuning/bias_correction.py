"""Bias correction: cancel the mean output shift that rounding the weights to int8 causes.

Rounding a layer's weights ``W`` to ``Wq`` changes its output by ``(Wq - W) x``. Its mean over
the data, ``(Wq - W) E[x]``, is a per-output-channel constant the bias can absorb exactly
(Nagel et al., "Data-Free Quantization", 2019, sec. 4.2; here with the empirical input means
from the calibration samples). It matters where a channel has few weights: a 3x3 depthwise
kernel has 9, and their rounding errors do not average out.

The correction is applied to the float model before it is quantized, so the int32 bias that
``quantize_static`` writes already carries it. ``Wq`` is computed exactly as the quantizer will
compute it (same scheme, axis and range), from the pure functions in ``ptq.qmath``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ptq import qmath
from ptq.calibrate.runner import sample_values
from ptq.config import Config, ImageFormat, Scheme
from ptq.graph import attr, initializers
from ptq.quantize.plan import Plan

# Means converge quickly; more samples only cost time.
MEAN_SAMPLES = 32


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
    model: onnx.ModelProto, tensors: list[str], data_dir: Path, limit: int | None, image_format: ImageFormat | None
) -> dict[str, np.ndarray]:
    """Mean of each tensor over every axis but 1 (channels), over up to ``MEAN_SAMPLES`` samples."""
    limit = min(limit or MEAN_SAMPLES, MEAN_SAMPLES)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for values in sample_values(model, tensors, data_dir, limit, image_format):
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


def apply(model: onnx.ModelProto, plan: Plan, config: Config, data_dir: Path) -> tuple[str, ...]:
    """Correct the biases in place (the weights as ``plan`` quantizes them); returns the layers
    corrected, by node name."""
    found = targets(model, plan)
    if not found:
        return ()
    means = channel_means(model, sorted({t.activation for t in found}), data_dir, config.calibration_samples, config.image_format)
    graph = model.graph
    inits = initializers(graph)
    symmetric = config.weights == Scheme.SYMMETRIC
    corrected = []
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
        if shift is None or not np.all(np.isfinite(shift)):
            continue
        node = next(n for n in graph.node if n.name == target.node)
        if target.bias is None:
            bias = -shift
        else:
            bias = numpy_helper.to_array(inits[target.bias]).astype(np.float64) - shift
        name = f"{target.bias or target.weight}/corrected"
        while name in inits:
            name += "_"
        tensor = numpy_helper.from_array(bias.astype(np.float32), name)
        graph.initializer.append(tensor)
        inits[name] = graph.initializer[-1]
        if len(node.input) > 2:
            node.input[2] = name
        else:
            node.input.append(name)
        corrected.append(target.node)
    return tuple(corrected)
