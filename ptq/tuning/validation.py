"""The split of the calibration samples into fitting and validation samples.

Every scored choice (calibration method, weight range, hybrid groups, float fallback, accuracy
placement) is judged on samples the ranges were not fitted on: a range fitted on a sample holds
that sample's extremes exactly, so scoring on it favours the estimator that clips least (on
open-nsfw, percentile scored 53 dB on its own 8 fitting samples and 31 dB held out).

The rule, deterministic and independent of the data: of the ``n`` samples (after
``--calibration-samples``), ``v = min(MAX_VALIDATION, n // VALIDATION_SHARE)`` are held out,
evenly spread over the sample order (sample ``floor((i + 1/2) n / v)`` for ``i < v``), so a folder
sorted by source or class lends both parts every kind of sample; the rest fit the ranges. With
fewer than ``MIN_SAMPLES`` samples nothing is held out and the scores say they are on the fitting
samples.
"""

from __future__ import annotations

from dataclasses import dataclass

# One sample in four validates; bench calibration sets of 16-32 samples give 4-8.
VALIDATION_SHARE = 4
# Scoring cost grows with the validation samples (every candidate runs on each of them).
MAX_VALIDATION = 16
# Below this nothing is held out: three fitting samples or fewer would make poor ranges.
MIN_SAMPLES = 4
# Without a held-out part, choices are scored on this many of the fitting samples.
FALLBACK_SCORING = 8


@dataclass(frozen=True)
class Split:
    """Sample positions (0-based, in folder order) that fit the ranges and that validate them."""

    total: int
    validation: tuple[int, ...]

    @property
    def held_out(self) -> bool:
        return bool(self.validation)

    @property
    def fit(self) -> tuple[int, ...]:
        held = set(self.validation)
        return tuple(i for i in range(self.total) if i not in held)

    @property
    def scoring(self) -> tuple[int, ...]:
        """The samples choices are scored on: the validation part, or the first fitting samples."""
        return self.validation or tuple(range(min(self.total, FALLBACK_SCORING)))

    @property
    def scored_on(self) -> str:
        """Where the scores come from, for every printed score."""
        if self.held_out:
            return f"{len(self.validation)} held-out validation samples"
        return f"{len(self.scoring)} fitting samples (too few samples to hold any out: {self.total} < {MIN_SAMPLES})"

    def describe(self) -> str:
        if not self.held_out:
            return f"validation split: none ({self.total} samples, fewer than {MIN_SAMPLES}); choices scored on the fitting samples"
        positions = ", ".join(str(i + 1) for i in self.validation)
        return (
            f"validation split: {len(self.fit)} samples fit the ranges, {len(self.validation)} held out to score"
            f" choices (samples {positions} of {self.total}: one in {VALIDATION_SHARE}, at most {MAX_VALIDATION}, evenly spread)"
        )

    def to_json(self) -> dict:
        return {"total": self.total, "fit": len(self.fit), "validation": [i + 1 for i in self.validation]}


def split(total: int) -> Split:
    """The fitting/validation split of ``total`` samples (see the module docstring)."""
    if total < MIN_SAMPLES:
        return Split(total, ())
    count = min(MAX_VALIDATION, total // VALIDATION_SHARE)
    return Split(total, tuple(int((i + 0.5) * total / count) for i in range(count)))
