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
LATENCY = "latency"  # the whole model measured faster with it float on this CPU (ptq.tuning.latency)


@dataclass(frozen=True)
class Placement:
    """One node (by name) or every node of an op type, run float or hybrid, and why.

    ``score_db`` is the measurement that decided it, when one did: the output SQNR on the
    scoring samples with this placement added (``group`` names the group the search tried).
    A LATENCY placement carries the node's own times alone (``int8_ms``: its int8 kernel;
    ``float_ms``: its float kernel with the Q/DQ at its edges), which ranked it, and ``model_ms``:
    the whole model's time before and after its group went float, which decided it.
    """

    target: str
    runs: str  # FLOAT | HYBRID
    reason: str  # USER | ACCURACY | LATENCY | a rewrite's name ("smoothquant", ...)
    score_db: float | None = None
    group: str | None = None
    int8_ms: float | None = None
    float_ms: float | None = None
    model_ms: tuple[float, float] | None = None

    def describe(self) -> str | None:
        """The reason a plan gives for this placement, when it has its own words (latency)."""
        if self.reason != LATENCY:
            return None
        alone = (
            f"alone int8 {self.int8_ms:.3f} ms vs float {self.float_ms:.3f} ms with Q/DQ; "
            if self.int8_ms is not None and self.float_ms is not None
            else ""
        )
        whole = f" ({self.model_ms[0]:.2f} -> {self.model_ms[1]:.2f} ms)" if self.model_ms else ""
        return f"latency: {alone}the whole model measured faster with {self.group or 'it'} float on this CPU{whole}"


@dataclass(frozen=True)
class ThreadCheck:
    """The written model against the original float model at another intra-op thread count:
    medians of wall-clock milliseconds (thread CPU time leaves out the other threads' work), and
    the median of per-round ratios, both models timed back to back in each round."""

    threads: int
    original_float_ms: float
    output_ms: float
    speedup: float

    def to_json(self) -> dict:
        return {k: _num(v) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data) -> ThreadCheck:
        if not isinstance(data, dict) or set(data) != {f.name for f in dataclasses.fields(cls)}:
            raise TypeError("a thread check is not an object with threads, original_float_ms, output_ms, speedup")
        return cls(int(data["threads"]), *(float(data[k]) for k in ("original_float_ms", "output_ms", "speedup")))


@dataclass(frozen=True)
class LatencyRecord:
    """Where and how the latency placement was measured (``ptq.tuning.latency``), and what it found.

    Times are medians of the CPU time of the calling thread at ``threads`` intra-op threads;
    speedups are medians of per-round ratios (both models ran back to back in each round):
    ``speedup`` = original float (the input file as users run it) / int8 as placed,
    ``cleanup_speedup`` = original / prepared float (ptq's float rewrites and preparation),
    ``int8_speedup`` = prepared float / int8 as placed; their product is ``speedup``.
    ``weights_only``: no int8 placement beat the original float model, so the output holds int8
    weights with float kernels (measured ``weights_only_speedup``).
    """

    cpu: str = ""
    cpu_flags: tuple[str, ...] = ()
    threads: int = 1
    original_float_ms: float | None = None
    prepared_float_ms: float | None = None
    planned_ms: float | None = None
    placed_ms: float | None = None
    speedup: float | None = None
    cleanup_speedup: float | None = None
    int8_speedup: float | None = None
    planned_speedup: float | None = None
    weights_only_speedup: float | None = None
    weights_only: bool = False
    float_groups: tuple[str, ...] = ()
    seconds: float = 0.0
    budget_s: float = 0.0
    out_of_budget: bool = False
    thread_checks: tuple[ThreadCheck, ...] = ()
    weights_only_reason: str = ""
    note: str = ""  # why nothing was measured, or what the figures stand for when unusual
    measured: bool = True  # False once read back from a ranges file (not saved)

    @property
    def output_speedup(self) -> float | None:
        """The written model against the original float model at ``threads`` (None: not measured)."""
        return self.weights_only_speedup if self.weights_only else self.speedup

    @property
    def slowest_speedup(self) -> float:
        """The written model's lowest speedup over the original float model among the thread
        counts it was confirmed at (``threads`` and the thread checks); inf: none measured."""
        speedups = [self.output_speedup] + [c.speedup for c in self.thread_checks]
        return min((s for s in speedups if s is not None), default=math.inf)

    @property
    def slower_than_float(self) -> bool:
        """The written model measured slower than the original float model at one of the thread
        counts it was confirmed at (``threads`` or a thread check)."""
        return self.slowest_speedup < 1.0

    def summary(self, placed: int) -> str:
        """One line for the conversion's notes; ``placed``: how many nodes the placement keeps float."""
        where = f"{self.cpu or 'unknown CPU'} ({', '.join(self.cpu_flags) or 'no int8 flags'}), {self.threads} thread"
        groups = f" ({', '.join(self.float_groups)})" if self.float_groups else ""
        checks = "".join(
            f", {c.speedup:.2f}x at {c.threads} threads ({c.original_float_ms:.2f} -> {c.output_ms:.2f} ms wall clock)"
            for c in self.thread_checks
        )
        if not self.measured:
            speed = f", measured {self.speedup:.2f}x vs the original float model{checks}" if self.speedup else ""
            tail = f"; int8 weights with float kernels ({self.weights_only_reason})" if self.weights_only else ""
            return (
                f"latency placement from the ranges file (measured on {where}{speed}):"
                f" {placed} node(s) placed float{groups}{tail}"
            )
        if self.speedup is None:
            return f"latency placement: {self.note}"
        parts = [
            f"latency placement on {where}, {self.seconds:.1f} s of a {self.budget_s:g} s budget",
            f"{placed} node(s) placed float{groups}",
            (
                f"at {self.threads} thread (thread CPU time, medians; speedups: medians of per-round ratios,"
                f" interleaved): original float {self.original_float_ms:.2f} ms, prepared float"
                f" {self.prepared_float_ms:.2f} ms, int8 as planned {self.planned_ms:.2f} ms, as placed"
                f" {self.placed_ms:.2f} ms: {self.speedup:.2f}x vs the original (float cleanup"
                f" {self.cleanup_speedup:.2f}x, int8 {self.int8_speedup:.2f}x)"
            ),
        ]
        if self.note:
            parts.append(self.note)
        if self.weights_only:
            parts.append(
                f"{self.weights_only_reason}: wrote int8 weights dequantized at load with float kernels instead"
                f" ({self.weights_only_speedup:.2f}x at {self.threads} thread)"
            )
        parts += [
            f"written model at {c.threads} threads (wall clock): {c.speedup:.2f}x vs the original"
            f" ({c.original_float_ms:.2f} -> {c.output_ms:.2f} ms)"
            for c in self.thread_checks
        ]
        if self.slower_than_float:
            parts.append("the written model measured slower than the original float model here, and no output ptq measured was faster")
        if self.out_of_budget:
            parts.append("budget spent before every group was tried")
        return "; ".join(parts)

    def to_json(self) -> dict:
        data = {k: _num(v) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()}
        data["cpu_flags"] = list(self.cpu_flags)
        data["float_groups"] = list(self.float_groups)
        data["thread_checks"] = [c.to_json() for c in self.thread_checks]
        data.pop("measured")
        return data

    @classmethod
    def from_json(cls, data: dict) -> LatencyRecord:
        if not isinstance(data, dict):
            raise TypeError("latency is not an object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in data.items():
            if key not in fields or key == "measured":
                continue
            if key in ("cpu_flags", "float_groups"):
                values[key] = _strings(value, key)
            elif key in ("cpu", "note", "weights_only_reason"):
                values[key] = str(value)
            elif key in ("weights_only", "out_of_budget"):
                values[key] = bool(value)
            elif key == "threads":
                values[key] = int(value)
            elif key == "thread_checks":
                if not isinstance(value, list):
                    raise TypeError("thread_checks is not a list")
                values[key] = tuple(ThreadCheck.from_json(c) for c in value)
            else:
                values[key] = None if value is None else float(value)
        return cls(**values, measured=False)


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
    bias_shifts: per layer, the mean output shift of its int8 weights that its bias absorbed
        (``tuning.bias_correction``), saved so ``--load-ranges`` repeats the correction.
    bias_correction_scores: the scores without ("off") and with ("on") the correction, when scored.
    scoring_samples: how many calibration samples the scores were measured on.
    latency: where and how the latency placement was measured (its placements are in
        ``placements`` with reason LATENCY).
    """

    calibration_method: CalibrationMethod | None = None
    method_scores: tuple[Scored, ...] = ()
    weight_range: WeightRange = WeightRange.MINMAX
    weight_range_scores: tuple[Scored, ...] = ()
    placements: tuple[Placement, ...] = ()
    rewrites: tuple[RewriteResult, ...] = ()
    bias_shifts: tuple[tuple[str, tuple[float, ...]], ...] = ()
    bias_correction_scores: tuple[Scored, ...] = ()
    scoring_samples: int = 0
    latency: LatencyRecord | None = None  # the latency placement's measurements, when it ran

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
    def bias_corrected(self) -> tuple[str, ...]:
        """Layers whose bias absorbed their int8 weights' mean output shift."""
        return tuple(name for name, _ in self.bias_shifts)

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
                {
                    k: _num(v) if k in ("score_db", "int8_ms", "float_ms") else list(v) if k == "model_ms" else v
                    for k, v in dataclasses.asdict(p).items()
                    if v is not None
                }
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
                    **({"measured": {name: list(values) for name, values in r.measured}} if r.measured else {}),
                    **({"inserted": list(r.inserted)} if r.inserted else {}),
                    **({"notes": list(r.notes)} if r.notes else {}),  # the recipe round-trips whole
                }
                for r in self.rewrites
            ],
            "bias_shifts": {name: list(shift) for name, shift in self.bias_shifts},
            "bias_correction_scores": [[s.candidate, _num(s.score_db)] for s in self.bias_correction_scores],
            "scoring_samples": self.scoring_samples,
            **({"latency": self.latency.to_json()} if self.latency is not None else {}),
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
                # files before bias_shifts named the corrected layers only ("bias_corrected"):
                # the correction was never saved, so there is nothing to repeat
                bias_shifts=_shifts(document.get("bias_shifts", {})),
                bias_correction_scores=tuple(Scored(str(c), float(s)) for c, s in document.get("bias_correction_scores", [])),
                scoring_samples=int(document.get("scoring_samples", 0)),
                latency=LatencyRecord.from_json(document["latency"]) if document.get("latency") is not None else None,
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise CalibrationDataError(f"{where}: the saved recipe is not valid ({exc})") from None


def _num(value: float | None) -> float | None | str:
    """JSON has no inf/nan: they are written as strings and read back by ``float``."""
    return value if value is None or math.isfinite(value) else str(value)


def _shifts(value, what: str = "bias_shifts") -> tuple[tuple[str, tuple[float, ...]], ...]:
    """Named vectors of finite numbers (bias shifts, a rewrite's measured channel statistics)."""
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object")
    shifts = []
    for name, shift in sorted(value.items()):
        if not isinstance(shift, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in shift):
            raise TypeError(f"{what}[{name!r}] is not a list of numbers")
        if not all(math.isfinite(v) for v in shift):
            raise TypeError(f"{what}[{name!r}] holds NaN or Inf")
        shifts.append((str(name), tuple(float(v) for v in shift)))
    return tuple(shifts)


def _strings(value, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} is not a list of names")
    return tuple(value)


def _placement(item) -> Placement:
    if not isinstance(item, dict) or item.get("runs") not in (FLOAT, HYBRID) or not isinstance(item.get("target"), str):
        raise TypeError(f"placement {item!r} is not a target run float or hybrid")
    score = item.get("score_db")
    number = lambda key: None if item.get(key) is None else float(item[key])
    model_ms = item.get("model_ms")
    return Placement(
        item["target"], item["runs"], str(item.get("reason", USER)), None if score is None else float(score),
        item.get("group"), number("int8_ms"), number("float_ms"),
        None if model_ms is None else (float(model_ms[0]), float(model_ms[1])),
    )  # fmt: skip


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
        measured=_shifts(item.get("measured", {}), f"rewrite {item['name']}: measured"),
        inserted=_strings(item.get("inserted", []), "inserted"),
    )
