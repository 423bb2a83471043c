"""--calibration-method auto: the range estimator whose int8 model scores best.

No single range estimator wins on every model (minmax is best where rare large activations
carry the signal, as in PP-OCR cls; percentile where outliers only waste resolution, as in
YOLOv8n). ``--calibration-method auto`` therefore builds the int8 model once per candidate
estimator from the *same* observed histograms (one calibration pass) and keeps the one whose
outputs are closest to the float model's on a few calibration samples (``tuning.scoring``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ptq.calibrate.runner import choose_range
from ptq.config import CalibrationMethod, Config
from ptq.quantize.plan import Plan
from ptq.tuning.scoring import Ranges, Scoring

# The estimators auto chooses between, in tie-break order (percentile: the best on most models).
CANDIDATES = (CalibrationMethod.PERCENTILE, CalibrationMethod.MINMAX, CalibrationMethod.MSE)


@dataclass(frozen=True)
class MethodTrial:
    method: CalibrationMethod
    sqnr_db: float  # mean over float outputs of the pooled SQNR over the scoring samples


@dataclass(frozen=True)
class MethodChoice:
    method: CalibrationMethod
    ranges: Ranges
    trials: tuple[MethodTrial, ...]
    scoring_samples: int
    score: float = math.nan  # the chosen candidate's score (NaN when none was scored)

    def describe(self) -> str:
        if not self.trials:
            return f"calibration method auto: {self.method.value} (model too large to score candidates)"
        scores = ", ".join(f"{t.method.value} {t.sqnr_db:.1f} dB" for t in self.trials)
        return (
            f"calibration method auto: {self.method.value}, output SQNR on {self.scoring_samples} "
            f"calibration samples: {scores}"
        )


def choose_method(
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
        return MethodChoice(CalibrationMethod.PERCENTILE, ranges_for(CalibrationMethod.PERCENTILE), (), 0)
    trials = []
    best: tuple[float, CalibrationMethod, Ranges] | None = None
    for done, method in enumerate(CANDIDATES):
        ranges = ranges_for(method)
        score = scoring.score_plan(plan, ranges, config)
        trials.append(MethodTrial(method, score))
        if best is None or score > best[0]:
            best = (score, method, ranges)
        if progress:
            progress(done + 1, len(CANDIDATES))
    assert best is not None
    return MethodChoice(best[1], best[2], tuple(trials), len(scoring.feeds), best[0])


