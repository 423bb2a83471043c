"""Sensitivity, measured: what each region of the int8 model costs in output fidelity.

A region is one quantized op (a Conv/MatMul/Gemm, an int8 elementwise op, an int8 weight-only
table) with its Q/DQ neighbourhood: keeping the op float makes the planner re-decide its
neighbours (an absorbed Relu, a Reshape that only paid next to it), and the region is every node
that leaves int8 with it. Its cost is measured, not estimated: the model is quantized with all
but that region int8, run by onnxruntime on the held-out validation samples, and compared with
the float model (``Scoring``). MatMul/Gemm regions with a constant weight are also measured on
hybrid kernels, which keep the int8 weight and quantize the activation at run time.

One trial conversion per region and placement: MiniLM (76 regions, 36 of them hybrid-capable)
takes about a minute on one core; a model too large to copy is not searched (``Scoring``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from ptq.config import Config
from ptq.graph import initializers
from ptq import recipe as recipe_module
from ptq.quantize.masks import MaskPath
from ptq.quantize.plan import ACCURACY_GROUP, ELEMENTWISE, HYBRID, WEIGHT_ONLY, WEIGHTED, Plan, make_plan
from ptq.recipe import ACCURACY, Recipe
from ptq.recipe import Placement as RecipePlacement
from ptq.quantize.static import calibrated_tensors
from ptq.tuning.scoring import Ranges, Scoring
from ptq.tuning.figures import Figures, Metric, Target, figures_of

FLOAT, AS_HYBRID = "float", "hybrid"
# Roles whose node can be taken out of int8 (data movement and absorbed activations follow their
# neighbours, so they are parts of regions, not regions).
REGION_ROLES = (WEIGHTED, ELEMENTWISE, WEIGHT_ONLY, HYBRID)


@dataclass(frozen=True)
class Placement:
    """One region taken out of full int8: its op ``node`` kept float or run hybrid."""

    node: str
    kind: str  # FLOAT | AS_HYBRID
    gain_db: float  # measured on the validation samples: this placement alone vs all int8 (Target.rank)
    nodes: tuple[str, ...] = ()  # every node that left int8 with it (the region)

    def to_json(self) -> dict:
        return {"node": self.node, "placement": self.kind, "gain_db": round(self.gain_db, 3), "region": list(self.nodes)}

    @classmethod
    def from_json(cls, value: dict) -> "Placement":
        return cls(str(value["node"]), str(value["placement"]), float(value.get("gain_db", 0.0)), tuple(value.get("region", ())))

@dataclass(frozen=True)
class Sensitivity:
    placement: Placement
    figures: Figures  # of the model with only this placement


def region_ops(model: onnx.ModelProto, plan: Plan) -> list[tuple[str, tuple[str, ...]]]:
    """The ops that head a region, in graph order, with the placements each can take."""
    weights = initializers(model.graph)
    found = []
    for node in model.graph.node:
        decision = plan.decisions.get(node.name)
        if not node.name or not decision or not decision.quantize or decision.role not in REGION_ROLES:
            continue
        kinds = (FLOAT,)
        if (
            decision.role == WEIGHTED
            and node.op_type in ("MatMul", "Gemm")
            and node.name in plan.weights
            and node.input[plan.weights[node.name][0]] in weights
        ):
            kinds = (FLOAT, AS_HYBRID)
        found.append((node.name, kinds))
    return found


def placed(recipe: Recipe, placements: tuple[Placement, ...]) -> Recipe:
    """``recipe`` with ``placements`` added as accuracy placements (``ptq.recipe``), each with
    its measured gain alone as ``score_db``: the planner and the op list read them there, and
    the ranges file saves them, so --load-ranges rebuilds the same model."""
    return recipe.placed(*(
        RecipePlacement(p.node, recipe_module.FLOAT if p.kind == FLOAT else recipe_module.HYBRID, ACCURACY, p.gain_db, ACCURACY_GROUP)
        for p in placements
    ))  # fmt: skip


def apply(model: onnx.ModelProto, config: Config, recipe: Recipe, placements: tuple[Placement, ...],
          mask_path: MaskPath | None = None) -> Plan:  # fmt: skip
    """The plan of ``model`` with ``placements`` added to ``recipe`` (``mask_path``: see ``make_plan``)."""
    return make_plan(model, config, placed(recipe, placements), mask_path)


def region_of(before: Plan, after: Plan) -> tuple[str, ...]:
    """Nodes whose int8 role changed from ``before`` to ``after`` (left int8 or went hybrid)."""
    return tuple(n for n in before.decisions if before.role(n) != after.role(n))


# more_ranges(tensors) -> their ranges, calibrated on the fitting samples with the method chosen
MoreRanges = Callable[[list[str]], Ranges]


def complete(ranges: Ranges, model: onnx.ModelProto, plans: list[Plan], more_ranges: MoreRanges | None) -> bool:
    """Add to ``ranges`` (in place) what ``plans`` need beyond it: keeping a node float can put a
    QuantizeLinear on a tensor that was inside the int8 region (a Conv's output before the Add it
    fed). One calibration pass for all of them; False when some stay missing."""
    missing = sorted({t for p in plans for t in calibrated_tensors(model, p)} - set(ranges))
    if missing and more_ranges is not None:
        ranges.update(more_ranges(missing))
    return not {t for p in plans for t in calibrated_tensors(model, p)} - set(ranges)


def measure(
    scoring: Scoring,
    plan: Plan,
    ranges: Ranges,
    config: Config,
    recipe: Recipe,
    target: Target,
    base: Figures,
    metric: Metric | None = None,
    progress: Callable[[int, int], None] | None = None,
    more_ranges: MoreRanges | None = None,
) -> list[Sensitivity]:
    """Every region's placements, each measured alone on top of ``plan`` (whose figures are
    ``base``), in graph order. Ranges the placements need are added to ``ranges`` by
    ``more_ranges``; a placement whose ranges stay missing is skipped."""
    ops = region_ops(scoring.model, plan)
    trials = [(node, kind) for node, kinds in ops for kind in kinds]
    plans = [apply(scoring.model, config, recipe, (Placement(node, kind, 0.0),), scoring.mask_path) for node, kind in trials]
    complete(ranges, scoring.model, plans, more_ranges)
    found: list[Sensitivity] = []
    for done, ((node, kind), trial_plan) in enumerate(zip(trials, plans), 1):
        if set(calibrated_tensors(scoring.model, trial_plan)) <= set(ranges):
            candidate = scoring.candidate(trial_plan, ranges, config)
            got = figures_of(scoring.names, scoring.reference, scoring.outputs(candidate), metric)
            gain = target.rank(got) - target.rank(base)
            found.append(Sensitivity(Placement(node, kind, gain, region_of(plan, trial_plan)), got))
        if progress:
            progress(done, len(trials))
    return found
