"""Keep float the int8 layers whose rounding a logarithm downstream turns into a collapse.

``log`` turns absolute error into relative error: ``d(log x) = dx / x``. An 8-bit range is set by
the largest values, so every value below half a step rounds to zero, and after the log those
values fall to whatever floor the model clips at. Speech spectra span 60-80 dB: in a log-mel
front-end (STFT as Conv, power, mel-filterbank MatMul, log) most time-frequency bins lie below
the step of the loud frames. Measured on openWakeWord's melspectrogram.onnx, held-out speech
(``bench.zoo`` melspec-oww): output cosine 0.80 (worst clip 0.36) all int8/hybrid; 0.80 with the
STFT convs float; 0.93 with the mel MatMul float; 1.0 only with every layer before the log float.
No calibration method helps (percentile, min/max and MSE all scored -2.3 dB): the loss is in the
8-bit grid itself, not in where the range ends.

The guard finds the int8 or hybrid weighted layers from which a Log is reached through ops that
keep the magnitude (linear ops, powers, sums, clips, reshapes: see ``_KEEPS_MAGNITUDE``), tries
them float together, and keeps them float when that raises the output score on the scoring
samples by ``GUARD_GAIN_DB`` (the same scoring as ``ptq.tuning``). It costs one trial conversion,
and none on models without a Log (the bench's other real models).
"""

from __future__ import annotations

import onnx

from ptq.config import Config
from ptq.graph import consumers
from ptq.quantize.plan import HYBRID, WEIGHTED, Decision, Plan
from ptq.recipe import ACCURACY, FLOAT, Placement, Recipe
from ptq.tuning.groups import GroupChoice, greedy_groups
from ptq.tuning.scoring import Ranges, Scoring

GUARD_GAIN_DB = 1.0
REASON = ACCURACY  # how the recipe, the op list and the notes name a measured float placement
LOG_OPS = frozenset({"Log"})
# Ops through which a value's small magnitudes reach the Log still small.
_KEEPS_MAGNITUDE = frozenset(
    {
        "Conv", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Abs", "Clip", "Relu", "Max", "Min",
        "ReduceSum", "ReduceMean", "ReduceL2", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten",
        "Concat", "Slice", "Split", "Identity", "Cast", "Expand", "Pad",
    }
)  # fmt: skip
GROUP = "layers before a Log"


def log_feeding_layers(model: onnx.ModelProto, plan: Plan) -> tuple[str, ...]:
    """The quantized weighted/hybrid nodes from which a Log is reached through ``_KEEPS_MAGNITUDE`` ops, in graph order."""
    read_by = consumers(model.graph)
    reaches: dict[str, bool] = {}

    def reaches_log(tensor: str) -> bool:
        stack, seen = [tensor], set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            for node in read_by.get(t, []):
                if node.op_type in LOG_OPS:
                    return True
                if node.op_type in _KEEPS_MAGNITUDE:
                    stack.extend(o for o in node.output if o)
        return False

    found = []
    for node in model.graph.node:
        decision = plan.decisions.get(node.name)
        if not (decision and decision.quantize and decision.role in (WEIGHTED, HYBRID)):
            continue
        if node.output and node.output[0] not in reaches:
            reaches[node.output[0]] = reaches_log(node.output[0])
        if node.output and reaches[node.output[0]]:
            found.append(node.name)
    return tuple(found)


def guard_log_inputs(recipe: Recipe, plan: Plan, ranges: Ranges, config: Config, scoring: Scoring, base_score: float) -> GroupChoice:
    """Keep the layers before a Log float where that raises the output score by ``GUARD_GAIN_DB``;
    the kept layers are placed float in the recipe (reason accuracy, with the score reached)."""
    layers = log_feeding_layers(scoring.model, plan)

    def placements(group: str, names: tuple[str, ...], score: float | None) -> tuple[Placement, ...]:
        return tuple(Placement(n, FLOAT, ACCURACY, score, group) for n in names)

    groups = {GROUP: layers} if layers else {}
    choice = greedy_groups(recipe, scoring, plan, ranges, config, base_score, groups, placements, GUARD_GAIN_DB)
    if choice.kept:  # the op list says why, not the plan's generic "excluded by the user"
        reason = (
            f"{REASON}: int8 rounding before a Log collapsed the output; float raised output SQNR on the scoring"
            f" samples {choice.base_score:.1f} -> {choice.score:.1f} dB"
        )
        for name in layers:
            choice.plan.decisions[name] = Decision(False, reason=reason)
    return choice


def describe_guard(choice: GroupChoice) -> str | None:
    return choice.describe(f"{REASON}: int8 {GROUP}", str, GUARD_GAIN_DB, "float")
