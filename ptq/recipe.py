"""What ptq decided for one conversion: the frozen counterpart of ``Config`` (what was asked).

``Config`` is never rewritten. The pipeline starts from ``Recipe.asked(config)`` (the user's own
placements, the weight range when it was not left to ``auto``) and each stage that decides
something returns an edited copy: a float rewrite adds its ``RewriteResult`` (and the nodes it
needs kept float), a scored choice records what it picked and what it measured. The planner
reads the placement from here; the ranges file saves the recipe whole, so ``--load-ranges``
rebuilds the same model without data.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ptq.config import CalibrationMethod, Config, WeightRange
from ptq.errors import CalibrationDataError
from ptq.rewrites import Declined, RewriteResult

# Where a node runs when the plan would otherwise make it int8.
FLOAT = "float"
HYBRID = "hybrid"  # int8 weights, activations quantized at run time (MatMul/Gemm, LSTM)

# Why: the user asked (--exclude/--hybrid); a rewrite needs it (the pass's name); the output
# score on the scoring samples rose enough (--auto-hybrid, --auto-fallback).
USER = "user"
ACCURACY = "accuracy"


@dataclass(frozen=True)
class Placement:
    """One node (by name) or every node of an op type, run float or hybrid, and why.

    ``score_db`` is the measurement that decided it, when one did: the output SQNR on the
    scoring samples with this placement added (``group`` names the group the search tried).
    """

    target: str
    runs: str  # FLOAT | HYBRID
    reason: str  # USER | ACCURACY | a rewrite's name ("smoothquant", ...) | "latency" (to come)
    score_db: float | None = None
    group: str | None = None


@dataclass(frozen=True)
class Scored:
    """A candidate of a scored choice and its output SQNR on the scoring samples (dB)."""

    candidate: str
    score_db: float


@dataclass(frozen=True)
class Recipe:
    """What was decided. Attributes:

    calibration_method: the range estimator the ranges came from (auto's pick once it has
        picked; None in dynamic mode).
    method_scores: auto's candidates with their scores (empty when nothing was scored).
    weight_range: min/max or MSE-clipped weight ranges (never auto: auto's pick).
    weight_range_scores: both candidates' scores when auto chose.
    placements: nodes or op types kept float or run hybrid, in the order they were decided.
    rewrites: the float rewrites applied, in pass order.
    bias_corrected: layers whose bias absorbed the mean shift of their int8 weights
        (``tuning.bias_correction``; applied after the ranges file is written, not saved in it).
    scoring_samples: how many calibration samples the scores were measured on.
    """

    calibration_method: CalibrationMethod | None = None
    method_scores: tuple[Scored, ...] = ()
    weight_range: WeightRange = WeightRange.MINMAX
    weight_range_scores: tuple[Scored, ...] = ()
    placements: tuple[Placement, ...] = ()
    rewrites: tuple[RewriteResult, ...] = ()
    bias_corrected: tuple[str, ...] = ()
    scoring_samples: int = 0

    def __post_init__(self) -> None:
        if self.weight_range == WeightRange.AUTO:
            raise ValueError("a recipe holds the weight range chosen, not auto")

    @classmethod
    def asked(cls, config: Config) -> Recipe:
        """The decisions the user made in ``config``: nothing measured yet."""
        placements = tuple(Placement(t, FLOAT, USER) for t in config.exclude) + tuple(Placement(t, HYBRID, USER) for t in config.hybrid)
        return cls(
            calibration_method=config.calibration_method if config.static else None,
            weight_range=WeightRange.MSE if config.weight_range == WeightRange.MSE else WeightRange.MINMAX,
            placements=placements,
        )

    @property
    def float_targets(self) -> tuple[str, ...]:
        """Node names and op types kept float (what the planner excludes)."""
        return tuple(p.target for p in self.placements if p.runs == FLOAT)

    @property
    def hybrid_targets(self) -> tuple[str, ...]:
        return tuple(p.target for p in self.placements if p.runs == HYBRID)

    @property
    def mse_weights(self) -> bool:
        return self.weight_range == WeightRange.MSE

    @property
    def rescaled(self) -> tuple[str, ...]:
        """Tensors the rewrites rescaled on purpose (per-layer comparisons leave them out)."""
        return tuple(t for r in self.rewrites for t in r.rescaled)

    def placed(self, *placements: Placement) -> Recipe:
        """This recipe with ``placements`` added (one already there for the same target and
        kind keeps its first reason)."""
        have = {(p.target, p.runs) for p in self.placements}
        new = []
        for p in placements:
            if (p.target, p.runs) not in have:
                have.add((p.target, p.runs))
                new.append(p)
        return dataclasses.replace(self, placements=self.placements + tuple(new))

    def rewritten(self, result: RewriteResult) -> Recipe:
        """This recipe with the rewrite ``result`` applied: recorded, its nodes kept float."""
        with_result = dataclasses.replace(self, rewrites=self.rewrites + (result,))
        return with_result.placed(*(Placement(n, FLOAT, result.name) for n in result.keep_float))

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------------- JSON

    def to_json(self) -> dict:
        return {
            "calibration_method": self.calibration_method.value if self.calibration_method else None,
            "method_scores": [[s.candidate, _num(s.score_db)] for s in self.method_scores],
            "weight_range": self.weight_range.value,
            "weight_range_scores": [[s.candidate, _num(s.score_db)] for s in self.weight_range_scores],
            "placements": [
                {k: _num(v) if k == "score_db" else v for k, v in dataclasses.asdict(p).items() if v is not None}
                for p in self.placements
            ],
            "rewrites": [
                {
                    "name": r.name,
                    **({"settings": dict(r.settings)} if r.settings else {}),
                    "applied": list(r.applied),
                    "declined": [[d.site, d.reason] for d in r.declined],
                    "rescaled": list(r.rescaled),
                    "keep_float": list(r.keep_float),
                    **({"notes": list(r.notes)} if r.notes else {}),  # the recipe round-trips whole
                }
                for r in self.rewrites
            ],
            "bias_corrected": list(self.bias_corrected),
            "scoring_samples": self.scoring_samples,
        }

    @classmethod
    def from_json(cls, document: object, where: str) -> Recipe:
        """The recipe ``to_json`` wrote; anything else is a ``CalibrationDataError`` naming ``where``."""
        try:
            if not isinstance(document, dict):
                raise TypeError("not an object")
            method = document.get("calibration_method")
            return cls(
                calibration_method=None if method is None else CalibrationMethod(method),
                method_scores=tuple(Scored(str(c), float(s)) for c, s in document.get("method_scores", [])),
                weight_range=WeightRange(document.get("weight_range", "minmax")),
                weight_range_scores=tuple(Scored(str(c), float(s)) for c, s in document.get("weight_range_scores", [])),
                placements=tuple(_placement(p) for p in document.get("placements", [])),
                rewrites=tuple(_rewrite(r) for r in document.get("rewrites", [])),
                bias_corrected=_strings(document.get("bias_corrected", []), "bias_corrected"),
                scoring_samples=int(document.get("scoring_samples", 0)),
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise CalibrationDataError(f"{where}: the saved recipe is not valid ({exc})") from None


def _num(value: float | None) -> float | None | str:
    """JSON has no inf/nan: they are written as strings and read back by ``float``."""
    return value if value is None or math.isfinite(value) else str(value)


def _strings(value, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} is not a list of names")
    return tuple(value)


def _placement(item) -> Placement:
    if not isinstance(item, dict) or item.get("runs") not in (FLOAT, HYBRID) or not isinstance(item.get("target"), str):
        raise TypeError(f"placement {item!r} is not a target run float or hybrid")
    score = item.get("score_db")
    return Placement(item["target"], item["runs"], str(item.get("reason", USER)), None if score is None else float(score), item.get("group"))


def _rewrite(item) -> RewriteResult:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise TypeError(f"rewrite {item!r} has no name")
    settings = item.get("settings", {})
    if not isinstance(settings, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in settings.values()):
        raise TypeError(f"rewrite {item['name']}: settings are not numbers")
    return RewriteResult(
        name=item["name"],
        applied=_strings(item.get("applied", []), "applied"),
        declined=tuple(Declined(str(s), str(r)) for s, r in item.get("declined", [])),
        rescaled=_strings(item.get("rescaled", []), "rescaled"),
        keep_float=_strings(item.get("keep_float", []), "keep_float"),
        notes=_strings(item.get("notes", []), "notes"),
        settings=tuple(sorted((str(k), float(v)) for k, v in settings.items())),
    )
