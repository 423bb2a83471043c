"""--calibration-method auto: the range estimator whose int8 model scores best.

No single range estimator wins on every model (minmax is best where rare large activations
carry the signal, as in PP-OCR cls; percentile where outliers only waste resolution, as in
YOLOv8n). ``--calibration-method auto`` therefore builds the int8 model once per candidate
estimator from the *same* observed histograms (one calibration pass) and keeps the one whose
outputs are closest to the float model's on a few held-out calibration samples (``tuning.scoring``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ptq.calibrate.runner import choose_range
from ptq.config import CalibrationMethod, Config
from ptq.quantize.plan import Plan
from ptq.recipe import Recipe, Scored
from ptq.tuning.scoring import Ranges, Scoring

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


