"""SmoothQuant as a scored choice: smooth the MatMul inputs whose kind measurably gains.

BERT-style encoders carry a few activation channels 10-30x larger than the rest (MiniLM: channel
99 of the LayerNormalization before each feed-forward up-projection reaches 28 where the median
channel stays under 2; channel 856 of layer 0's GELU output reaches 25), and a per-tensor int8
range set by them rounds every other channel coarsely. SmoothQuant (``ptq.rewrites.smoothquant``)
moves them into the MatMul weights. It does not pay everywhere (on MiniLM, smoothing the
attention-output and GELU-fed MatMuls as well costs what smoothing the LayerNorm-fed ones gains),
so it is chosen by measurement, as the hybrid groups are (``tuning.groups``): the smoothable
MatMul inputs are grouped by the op that produces them, and each group is tried in graph order
on top of those kept, kept when the validation score (output SQNR on held-out samples,
``tuning.scoring``) gains ``GAIN_DB``. Each trial re-calibrates the smoothed copy on the fitting
samples with the method already chosen.

It runs after the accuracy placement (``tuning.targets``), on the plan as it will be written: a
collapse the placement lifts (MiniLM's layer-0 down-projection kept float) hides every smaller
gain while it is there (smoothing scored 5.9 dB against 6.3 dB all int8, 18.4 against 15.7 dB
with the placement). ``--smoothquant ALPHA`` decides instead (every group, no scoring); models
without a smoothable MatMul input cost nothing.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import onnx

from ptq.calibrate.runner import calibrate
from ptq.config import Config
from ptq.graph import producers
from ptq.quantize.plan import Plan, make_plan
from ptq.quantize.static import calibrated_tensors
from ptq.recipe import Recipe
from ptq.rewrites import passes, smoothquant
from ptq.tuning.scoring import Ranges, Scoring

# Migration strength: the SmoothQuant paper's default, which balances the activation's and the
# weight's ranges (MiniLM, LayerNorm-fed inputs: 0.5 gave 0.9952 mean sentence cosine, 0.8 0.9949).
ALPHA = 0.5
# What a group must gain to be kept, as for hybrid groups.
GAIN_DB = 1.0
# Recorded with the alpha and the smoothed inputs' channel maxima: ranges calibrated after a
# scored smoothing fit only a model smoothed the same way, which --load-ranges rebuilds from them.
SCORED = passes.SCORED


@dataclass(frozen=True)
class Trial:
    kind: str  # the producer op type of the group's inputs
    inputs: int
    score_db: float
    kept: bool


@dataclass(frozen=True)
class SmoothingChoice:
    """The float model to quantize (smoothed, or the one given), with its plan, ranges and recipe."""

    model: onnx.ModelProto
    recipe: Recipe
    plan: Plan
    ranges: Ranges
    scoring: Scoring | None
    base_score: float = math.nan
    score: float = math.nan
    trials: tuple[Trial, ...] = field(default=())

    @property
    def smoothed(self) -> bool:
        return any(t.kept for t in self.trials)

    def describe(self) -> str:
        if not self.trials:
            return ""
        scored_on = self.scoring.scored_on if self.scoring is not None else ""
        tried = ", ".join(f"{t.kind}-fed x{t.inputs}: {t.score_db:.1f} dB{' (kept)' if t.kept else ''}" for t in self.trials)
        kept = [t for t in self.trials if t.kept]
        verdict = f"smoothed {sum(t.inputs for t in kept)} MatMul input(s)" if kept else "not applied"
        return (
            f"SmoothQuant (alpha {ALPHA:g}) by MatMul input producer, output SQNR on {scored_on}: {self.base_score:.1f} dB as"
            f" planned; {tried}; {verdict} (a group needs +{GAIN_DB:g} dB)"
        )


def input_kinds(model: onnx.ModelProto, groups) -> dict[str, list[str]]:
    """The groups' activations by the op type that produces them, in graph order."""
    made_by = producers(model.graph)
    kinds: dict[str, list[str]] = {}
    for group in groups:
        producer = made_by.get(group.activation)
        kinds.setdefault(producer.op_type if producer is not None else "input", []).append(group.activation)
    return kinds


def choose_smoothing(
    model: onnx.ModelProto, recipe: Recipe, plan: Plan, ranges: Ranges, config: Config, scoring: Scoring | None,
    fit: Collection[int] | None, progress: Callable[[int, int], None] | None = None,
) -> SmoothingChoice:  # fmt: skip
    """The groups of smoothable MatMul inputs that gain ``GAIN_DB`` each on the scoring samples
    (see the module docstring); ``model`` is left as it is (a kept smoothing is a copy)."""
    unchanged = SmoothingChoice(model, recipe, plan, ranges, scoring)
    if scoring is None or not config.auto_smoothquant or config.smoothquant is not None or config.calibration_data is None:
        return unchanged
    if any(r.name == smoothquant.NAME for r in recipe.rewrites):  # repeated from a ranges file
        return unchanged
    groups = smoothquant.find_groups(model, insert=True)
    if not groups:
        return unchanged
    kinds = input_kinds(model, groups)
    if progress:
        progress(0, len(kinds))
    absmax = smoothquant.channel_absmax(
        model, [g.activation for g in groups], config.calibration_data, config.calibration_samples, config.image_format,
        indices=fit,
    )  # fmt: skip
    base = best = scoring.score_plan(plan, ranges, config)
    chosen = unchanged
    kept: list[str] = []
    trials = []
    for done, (kind, activations) in enumerate(kinds.items(), 1):
        candidate = copy.deepcopy(model)
        result = smoothquant.smooth(
            candidate, config, ALPHA, only=set(kept + activations), absmax=absmax, recorded=(("alpha", ALPHA), SCORED)
        )
        trial_recipe = recipe.rewritten(result)
        trial_plan = make_plan(candidate, config, trial_recipe)
        trial_ranges = calibrate(
            candidate, calibrated_tensors(candidate, trial_plan), config.calibration_data,
            method=recipe.calibration_method, percentile=config.percentile, limit=config.calibration_samples,
            image_format=config.image_format, indices=fit,
        )[0]  # fmt: skip
        trial_scoring = scoring.with_model(candidate)
        score = trial_scoring.score_plan(trial_plan, trial_ranges, config)
        keep = score >= best + GAIN_DB
        trials.append(Trial(kind, len(activations), score, keep))
        if keep:
            kept += activations
            best = score
            chosen = SmoothingChoice(candidate, trial_recipe, trial_plan, trial_ranges, trial_scoring)
        if progress:
            progress(done, len(kinds))
    return SmoothingChoice(chosen.model, chosen.recipe, chosen.plan, chosen.ranges, chosen.scoring, base, best, tuple(trials))
