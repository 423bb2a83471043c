"""The split of the calibration samples into fitting and validation samples.

Every scored choice (calibration method, weight range, hybrid groups, float fallback, accuracy
placement) is judged on samples the ranges were not fitted on: a range fitted on a sample holds
that sample's extremes exactly, so scoring on it favours the estimator that clips least (on
open-nsfw, percentile scored 53 dB on its own 8 fitting samples and 31 dB held out).

The rule, deterministic and independent of the data: of the ``n`` samples (after
``--calibration-samples``), ``v = min(MAX_VALIDATION, n // VALIDATION_SHARE)`` are held out,
one from each of ``v`` equal blocks of the sample order, so a folder sorted by source or class
lends both parts every kind of sample; the rest fit the ranges. Within its block, each held-out
sample is the one whose position modulo 2, 3, 4 and 5 is least represented among those held out
so far: a fixed offset per block aliases with a folder that cycles through its kinds (PP-OCR cls's
bench folder alternates upright and upside-down lines; every fourth sample held out only upright
ones, and the method they chose lost 6.6 dB on the eval split). With
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
# Cross-validated choices (``Split.folds``): the validation part and the fitting part dealt into
# at most this many folds in all, each scored on ranges fitted on the others.
MAX_FOLDS = 4


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
            f" choices (samples {positions} of {self.total}: one in {VALIDATION_SHARE}, at most {MAX_VALIDATION}, one per block of the sample order)"
        )

    def folds(self) -> tuple[tuple[int, ...], ...]:
        """Folds for cross-validated scoring: fold 0 is the validation part, the fitting samples
        are dealt in turn into the others (``MAX_FOLDS`` in all, each about as large as the
        validation part), so every sample is scored once on ranges fitted without it and the
        ranges of fold 0's turn are exactly those the conversion keeps. Empty without a held-out
        part."""
        if not self.held_out:
            return ()
        count = max(2, min(MAX_FOLDS, round(self.total / len(self.validation))))
        fit = self.fit
        return (self.validation,) + tuple(fit[i :: count - 1] for i in range(count - 1))

    def to_json(self) -> dict:
        return {"total": self.total, "fit": len(self.fit), "validation": [i + 1 for i in self.validation]}


def split(total: int) -> Split:
    """The fitting/validation split of ``total`` samples (see the module docstring)."""
    if total < MIN_SAMPLES:
        return Split(total, ())
    count = min(MAX_VALIDATION, total // VALIDATION_SHARE)
    held: list[int] = []
    seen = {period: [0] * period for period in _PERIODS}
    for block in range(count):
        start, stop = block * total // count, (block + 1) * total // count
        position = min(range(start, stop), key=lambda q: (sum(seen[p][q % p] for p in _PERIODS), q))
        for period in _PERIODS:
            seen[period][position % period] += 1
        held.append(position)
    return Split(total, tuple(held))


# The folder periods the split balances: a folder cycling through 2-5 kinds lends the validation
# part every kind once it holds out twice as many samples as there are kinds.
_PERIODS = (2, 3, 4, 5)
