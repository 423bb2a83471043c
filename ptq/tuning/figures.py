"""Fidelity figures of a candidate int8 model on the scoring samples, and the targets they meet.

The figures are the gates' (``ptq.report.measure``): per output, the mean over samples of the
per-sample cosine, the pooled SQNR, the top-1 agreement where the output looks like class
scores; the worst output counts. A user metric (``--metric module:function``) sees the float and
the candidate outputs of every sample and returns one number, higher is better.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptq.config import Config
from ptq.errors import UsageError
from ptq.report.measure import compare_output_lists

Outputs = Sequence[Sequence[np.ndarray]]  # per sample, the float outputs in ``names`` order
# metric(names, reference, candidate) -> float
Metric = Callable[[Sequence[str], Outputs, Outputs], float]

# cosine 1 - 1e-20 and beyond: as good as identical (keeps the dB form finite)
MAX_DB = 200.0


@dataclass(frozen=True)
class Figures:
    sqnr_db: float  # worst output, pooled over samples
    cosine: float  # worst output, mean over samples
    cosine_min: float  # worst sample of any output
    top1: float | None  # worst output that looks like class scores; None when none does
    metric: float | None = None  # the user's metric, when given
    cosine_pooled: float = 1.0  # worst output, all samples as one vector (the collapse floor's measure)

    def describe(self) -> str:
        parts = [f"SQNR {self.sqnr_db:.1f} dB",
                 f"cosine {self.cosine:.4f} (worst sample {self.cosine_min:.4f}, all samples pooled {self.cosine_pooled:.4f})"]  # fmt: skip
        if self.top1 is not None:
            parts.append(f"top-1 {self.top1:.3f}")
        if self.metric is not None:
            parts.append(f"metric {self.metric:.4g}")
        return ", ".join(parts)

    def to_json(self) -> dict:
        return {"sqnr_db": self.sqnr_db, "cosine": self.cosine, "cosine_min": self.cosine_min, "cosine_pooled": self.cosine_pooled,
                "top1": self.top1, "metric": self.metric}  # fmt: skip


def figures_of(names: Sequence[str], reference: Outputs, candidate: Outputs, metric: Metric | None = None) -> Figures:
    outputs = [o for o in compare_output_lists(names, reference, candidate) if o.cosine is not None]
    if not outputs:  # no comparable float output: nothing is lost that we can see
        return Figures(math.inf, 1.0, 1.0, None, metric(names, reference, candidate) if metric else None)
    top1 = [o.top1 for o in outputs if o.top1 is not None]
    return Figures(
        min(o.sqnr_db for o in outputs),
        min(o.cosine for o in outputs),
        min(o.cosine_min for o in outputs),
        min(top1) if top1 else None,
        float(metric(names, reference, candidate)) if metric else None,
        min(o.cosine_pooled for o in outputs),
    )


def jackknife_spread(names: Sequence[str], reference: Outputs, candidate: Outputs, rank: Callable[[Figures], float]) -> float:
    """The jackknife standard error of ``rank(figures)`` over the samples (dB): how far the figure
    moves when the samples change, from how far it moves when each one is left out. 0 with fewer
    than 3 samples (nothing to estimate from). Pooled SQNR and mean cosine are ratios and means
    over samples, so one sample unlike the rest (a borderline orientation, a loud frame) moves
    them: a placement that meets the target by less than this on the validation samples meets it
    by chance."""
    n = len(reference)
    if n < 3:
        return 0.0
    values = [
        rank(figures_of(names, [*reference[:i], *reference[i + 1 :]], [*candidate[:i], *candidate[i + 1 :]])) for i in range(n)
    ]
    mean = sum(values) / n
    return math.sqrt((n - 1) / n * sum((v - mean) ** 2 for v in values))


def cosine_db(cosine: float) -> float:
    """``-10 log10(1 - cosine)``: cosine on a scale where a step means the same near 0.9 and 0.999."""
    gap = 1.0 - cosine
    return MAX_DB if gap <= 0.0 else min(MAX_DB, -10.0 * math.log10(gap))


@dataclass(frozen=True)
class Target:
    """What the search must reach on the scoring samples; every given figure must hold."""

    cosine: float | None = None
    sqnr_db: float | None = None
    top1: float | None = None
    metric: float | None = None
    cosine_pooled: float | None = None  # the collapse floor (``targets.COLLAPSE_COSINE``)

    @classmethod
    def of(cls, config: Config) -> "Target":
        return cls(config.target_cosine, config.target_sqnr, config.target_top1, config.target_metric)

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.cosine, self.sqnr_db, self.top1, self.metric, self.cosine_pooled))

    def misses(self, figures: Figures) -> list[str]:
        """The figures below their target, described (empty when the target holds)."""
        missed = []
        if self.cosine is not None and not figures.cosine >= self.cosine:
            missed.append(f"cosine {figures.cosine:.4f} < {self.cosine:g}")
        if self.cosine_pooled is not None and not figures.cosine_pooled >= self.cosine_pooled:
            missed.append(f"pooled cosine {figures.cosine_pooled:.4f} < {self.cosine_pooled:g}")
        if self.sqnr_db is not None and not figures.sqnr_db >= self.sqnr_db:
            missed.append(f"SQNR {figures.sqnr_db:.1f} dB < {self.sqnr_db:g} dB")
        if self.top1 is not None:
            if figures.top1 is None:
                raise UsageError("--target-top1: no model output looks like class scores (see the report's top-1 basis)")
            if not figures.top1 >= self.top1:
                missed.append(f"top-1 {figures.top1:.3f} < {self.top1:g}")
        if self.metric is not None and not (figures.metric is not None and figures.metric >= self.metric):
            measured = "not measured" if figures.metric is None else f"{figures.metric:.4g}"
            missed.append(f"metric {measured} < {self.metric:g}")
        return missed

    def met(self, figures: Figures) -> bool:
        return not self.misses(figures)

    def _ranked_cosine(self) -> str | None:
        """The cosine figure ``rank`` orders by (a cosine target without an SQNR one, the plain
        cosine before the pooled floor), as the name shared by ``Figures`` and this target."""
        if self.sqnr_db is not None:
            return None
        return "cosine" if self.cosine is not None else "cosine_pooled" if self.cosine_pooled is not None else None

    def rank(self, figures: Figures) -> float:
        """A continuous figure (dB) for ordering regions by what they cost: the cosine on its
        dB scale for a cosine target, else the worst output's SQNR (top-1 and most metrics move
        in steps too coarse to rank by)."""
        cosine = self._ranked_cosine()
        return cosine_db(getattr(figures, cosine)) if cosine else min(figures.sqnr_db, MAX_DB)

    def rank_label(self) -> str:
        """What ``rank`` measures, for an axis or a column."""
        labels = {"cosine": "cosine as -10 log10(1 - cosine), dB", "cosine_pooled": "pooled cosine as -10 log10(1 - cosine), dB"}
        return labels.get(self._ranked_cosine(), "SQNR of the worst output, dB")

    def rank_level(self) -> float | None:
        """The target on ``rank``'s scale; None for top-1 and metric targets (not on that scale)."""
        cosine = self._ranked_cosine()
        return cosine_db(getattr(self, cosine)) if cosine else self.sqnr_db

    def tightened(self, margin_db: float) -> "Target":
        """This target with ``margin_db`` to spare on the dB scales: SQNR ``+ margin_db``, cosine with
        ``1 - cosine`` divided by ``10 ** (margin_db / 10)``; top-1 and metrics (steps) unchanged."""
        factor = 10 ** (-margin_db / 10)
        return Target(
            None if self.cosine is None else 1.0 - (1.0 - self.cosine) * factor,
            None if self.sqnr_db is None else self.sqnr_db + margin_db,
            self.top1,
            self.metric,
            None if self.cosine_pooled is None else 1.0 - (1.0 - self.cosine_pooled) * factor,
        )

    def describe(self) -> str:
        parts = []
        if self.cosine is not None:
            parts.append(f"cosine >= {self.cosine:g}")
        if self.cosine_pooled is not None:
            parts.append(f"pooled cosine >= {self.cosine_pooled:g}")
        if self.sqnr_db is not None:
            parts.append(f"SQNR >= {self.sqnr_db:g} dB")
        if self.top1 is not None:
            parts.append(f"top-1 >= {self.top1:g}")
        if self.metric is not None:
            parts.append(f"metric >= {self.metric:g}")
        return ", ".join(parts)


def load_metric(spec: str | None) -> Metric | None:
    """The user's ``module:function`` as a ``Metric`` (modules are found on sys.path and in the
    working directory); the function takes ``(reference, candidate)``, each a list over samples
    of {output name: array}, and returns a float, higher is better."""
    if spec is None:
        return None
    module_name, function_name = spec.split(":")
    added = str(Path.cwd())
    sys.path.insert(0, added)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(f"--metric {spec}: cannot import {module_name} ({type(exc).__name__}: {exc})") from None
    finally:
        if sys.path and sys.path[0] == added:
            del sys.path[0]
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UsageError(f"--metric {spec}: {module_name} has no function {function_name}")

    def metric(names: Sequence[str], reference: Outputs, candidate: Outputs) -> float:
        as_dicts = lambda outputs: [dict(zip(names, sample)) for sample in outputs]  # noqa: E731
        try:
            value = float(function(as_dicts(reference), as_dicts(candidate)))
        except Exception as exc:
            raise UsageError(f"--metric {spec} failed: {type(exc).__name__}: {exc}") from None
        if math.isnan(value):
            raise UsageError(f"--metric {spec} returned NaN")
        return value

    return metric
