"""Fidelity targets met with the fewest regions out of int8, and no silent collapse.

``search`` takes the plan as the other choices left it and returns placements (regions kept
float, or hybrid where that keeps the int8 weight) after which the target holds on the held-out
validation samples:

1. measure every region's placements alone (``sensitivity.measure``), and order them by their
   gain, a hybrid placement preferred to float where it gains at least ``HYBRID_SHARE`` of
   what float gains;
2. take the shortest prefix of that order whose model meets the target: prefixes of 1, 2, 4, ...
   regions, then bisection between the last miss and the first hit; every step runs the candidate
   model (gains of single regions do not add up exactly, so nothing is assumed);
3. prune: return each chosen region, least gain first, to int8 where the target still holds.

Steps 2 and 3 aim above the target by a margin set from the validation samples' spread: the
larger of ``MARGIN_DB`` and ``SPREAD_Z`` jackknife standard errors of the candidate's figure
(``figures.jackknife_spread``), both on the dB scales (``Target.tightened``). A placement that
just meets the target on a few validation samples missed it held out (MiniLM, cosine 0.999 on 8
validation samples: 0.9990 there, 0.9988 on 64 eval sentences); where one validation sample
decides the figure, the spread says so and the margin grows with it. Where the margin cannot be
had, the shortest prefix that meets the target itself is taken.

Every candidate model the search runs is kept as a ``Trial`` (regions out of int8, figures on
the validation samples, run time): the trade-off the reports show.

Without a target, ``COLLAPSE_COSINE`` is the floor: a model whose worst output's cosine on the
validation samples (all samples' outputs as one vector) is below it is searched for a placement that lifts it, and refused when
none does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ptq.config import Config
from ptq.errors import FidelityCollapsedError
from ptq.quantize.plan import Plan, make_plan
from ptq.recipe import Recipe
from ptq.tuning.scoring import Ranges, Scoring
from ptq.tuning import sensitivity
from ptq.tuning.figures import Figures, Metric, Target, figures_of, jackknife_spread, load_metric
from ptq.tuning.sensitivity import AS_HYBRID, FLOAT, Placement, Sensitivity

# Output cosine below which an int8 model is a collapse, not a lossy copy: the cosine of all
# validation samples' outputs taken as one vector (``Figures.cosine_pooled``), so a sample with
# little signal, whose per-sample cosine is mostly noise, weighs as little as its signal (PP-OCR
# det's blank-margin sample 1 of calibration_data/ppocr_det: per-sample cosine 0.73, pooled over
# both validation samples 0.98 at 13.3 dB). On the bench's 7 real models ptq's static int8
# outputs score a worst-output cosine of 0.953 (PP-OCR det), 0.957 (rec) and 0.989-0.9998 (the
# rest) held out (bench/RESULTS.md); the collapses of issue 14 score 0.36-0.62 (MiniLM on padded
# batches, whose embeddings all have norm 1, and a log-mel front-end at -1.8 dB SQNR). 0.9 sits
# between: no bench model is refused, every collapse seen is caught.
COLLAPSE_COSINE = 0.9
# What the placement aims for beyond the target, in dB (``Target.tightened``): at least
# MARGIN_DB, and SPREAD_Z jackknife standard errors of the figure over the validation samples
# where that is more (a one-sided bound at about 98% were the figure normal).
MARGIN_DB = 1.0
SPREAD_Z = 2.0
# A MatMul goes hybrid instead of float when hybrid gains at least this share of float's gain:
# hybrid keeps the int8 weight (a quarter of the size) and most of the speed.
HYBRID_SHARE = 0.8

Progress = Callable[[str, int, int], None]


AS_PLANNED, PREFIX, PRUNE = "as planned", "prefix", "prune"


@dataclass(frozen=True)
class Trial:
    """One candidate model the search ran, measured on the validation samples."""

    regions: int  # regions out of int8
    figures: Figures
    spread_db: float  # jackknife standard error of the target's figure (``Target.rank``), dB
    margin_db: float  # what it had to meet beyond the target: max(floor, SPREAD_Z x spread)
    met: bool  # the target with that margin
    step: str  # AS_PLANNED | PREFIX (the first regions of the order) | PRUNE (one chosen region back in int8)
    run_ms: float  # median wall time of one run over the validation samples (``Scoring.timed_outputs``)

    def to_json(self) -> dict:
        return {
            "regions": self.regions,
            "step": self.step,
            "figures": self.figures.to_json(),
            "spread_db": round(self.spread_db, 3),
            "margin_db": round(self.margin_db, 3),
            "met": self.met,
            "run_ms": round(self.run_ms, 3),
        }


@dataclass(frozen=True)
class SearchResult:
    target: Target
    base: Figures  # of the plan as given
    figures: Figures  # of the plan with ``placements``
    placements: tuple[Placement, ...]
    met: bool
    regions: int  # regions measured
    trials: int  # candidate models run (sensitivity + confirmation)
    seconds: float
    scored_on: str
    collapse: bool = False  # the search ran because the model collapsed (no target given)
    curve: tuple[Trial, ...] = ()  # every candidate run after step 1, the plan as given first

    def tradeoff(self) -> list[Trial]:
        """The trade-off: per count of regions out of int8, the trial that reached the best
        figure with it (``Target.rank``), fewest regions first; the written placement's count
        shows the written placement's own trial."""
        best: dict[int, Trial] = {}
        for trial in self.curve:
            held = best.get(trial.regions)
            if held is None or self.target.rank(trial.figures) > self.target.rank(held.figures):
                best[trial.regions] = trial
        chosen = self.chosen_trial()
        if chosen is not None:
            best[chosen.regions] = chosen
        return [best[k] for k in sorted(best)]

    def chosen_trial(self) -> Trial | None:
        """The trial of the written placement (its figures are ``figures``)."""
        return next((t for t in reversed(self.curve) if t.regions == len(self.placements) and t.figures == self.figures), None)

    def describe(self) -> list[str]:
        why = (f"fidelity collapsed (pooled cosine below {COLLAPSE_COSINE:g})" if self.collapse else f"target {self.target.describe()}")
        lines = [f"accuracy ({why}), on {self.scored_on}: int8 as planned {self.base.describe()}"]
        if not self.placements and self.met:
            lines[0] += "; met with no region out of int8"
            return lines
        kept = ", ".join(f"{p.node} {p.kind} (+{p.gain_db:.1f} dB)" for p in self.placements) or "none"
        verdict = "met" if self.met else "NOT met (the best placement found is used)"
        lines.append(
            f"accuracy: {verdict} with {len(self.placements)} region(s) out of int8: {kept}; now {self.figures.describe()}"
            f" ({self.regions} regions measured, {self.trials} candidate models run, {self.seconds:.1f} s)"
        )
        return lines

    def to_json(self) -> dict:
        chosen = self.chosen_trial()
        return {
            "target": self.target.describe(),
            "collapse": self.collapse,
            "scored_on": self.scored_on,
            "met": self.met,
            "base": self.base.to_json(),
            "figures": self.figures.to_json(),
            "placements": [p.to_json() for p in self.placements],
            "regions_measured": self.regions,
            "trials": self.trials,
            "seconds": self.seconds,
            "rank": {"label": self.target.rank_label(), "target": self.target.rank_level()},
            "curve": [self._trial_json(t, chosen) for t in self.curve],
            "tradeoff": [self._trial_json(t, chosen) for t in self.tradeoff()],
        }

    def _trial_json(self, trial: Trial, chosen: Trial | None) -> dict:
        return {**trial.to_json(), "rank_db": self.target.rank(trial.figures), "written": trial is chosen}


def figures_for(scoring: Scoring, plan: Plan, ranges: Ranges, config: Config, metric: Metric | None) -> Figures:
    return figures_of(scoring.names, scoring.reference, scoring.outputs(scoring.candidate(plan, ranges, config)), metric)


def trial_of(
    scoring: Scoring, plan: Plan, ranges: Ranges, config: Config, metric: Metric | None, target: Target, regions: int, step: str,
    margin_db: float = MARGIN_DB, spread_z: float = SPREAD_Z,
) -> Trial:
    """Run the candidate ``plan`` makes on the scoring samples: its figures, spread and run time,
    and whether it meets ``target`` with ``max(margin_db, spread_z x spread)`` to spare."""
    outputs, run_ms = scoring.timed_outputs(scoring.candidate(plan, ranges, config))
    figures = figures_of(scoring.names, scoring.reference, outputs, metric)
    spread = jackknife_spread(scoring.names, scoring.reference, outputs, target.rank) if spread_z else 0.0
    margin = max(margin_db, spread_z * spread)
    return Trial(regions, figures, spread, margin, target.tightened(margin).met(figures), step, run_ms)


def order(found: list[Sensitivity]) -> list[Placement]:
    """One placement per region, best gain first: hybrid where it gains ``HYBRID_SHARE`` of
    float's gain, else float. Regions that gain nothing alone stay in the order, last: where
    the error is spread over many layers (MiniLM: 0.0-0.7 dB each), single gains sink into the
    scoring noise, yet together they still count."""
    by_node: dict[str, dict[str, Placement]] = {}
    for s in found:
        by_node.setdefault(s.placement.node, {})[s.placement.kind] = s.placement
    picked = []
    for node, kinds in by_node.items():
        as_float, as_hybrid = kinds.get(FLOAT), kinds.get(AS_HYBRID)
        best = as_float
        if as_hybrid is not None and (as_float is None or as_hybrid.gain_db >= HYBRID_SHARE * as_float.gain_db):
            best = as_hybrid
        if best is not None:
            picked.append(best)
    positions = {s.placement.node: i for i, s in enumerate(found)}
    return sorted(picked, key=lambda p: (-p.gain_db, positions[p.node]))


def search(
    scoring: Scoring,
    plan: Plan,
    ranges: Ranges,
    config: Config,
    recipe: Recipe,
    target: Target,
    metric: Metric | None = None,
    progress: Progress | None = None,
    base: Trial | None = None,
    collapse: bool = False,
    more_ranges: sensitivity.MoreRanges | None = None,
    ranked: list[Placement] | None = None,
    prune: bool = True,
    margin_db: float = MARGIN_DB,
    spread_z: float = SPREAD_Z,
) -> SearchResult:
    """Placements after which ``target`` holds on the scoring samples (see the module docstring);
    the best placement found when none does (``met`` False). ``base`` is the plan as given,
    measured by ``trial_of`` with the same margin. Ranges the placements need beyond ``ranges``
    are calibrated by ``more_ranges`` and added to ``ranges`` in place. ``ranked`` replaces
    step 1 (the order to take regions in) and ``prune=False`` skips step 3: what
    ``bench.targets`` compares against."""
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    trials = 0
    curve: list[Trial] = []

    def run(placements: tuple[Placement, ...], step: str) -> Trial | None:
        """The trial with ``placements``; None when their plan needs a range calibration did not provide."""
        nonlocal trials
        placed_plan = sensitivity.apply(scoring.model, config, recipe, placements, scoring.mask_path)
        if not sensitivity.complete(ranges, scoring.model, [placed_plan], more_ranges):
            return None
        trials += 1
        got = trial_of(scoring, placed_plan, ranges, config, metric, target, len(placements), step, margin_db, spread_z)
        curve.append(got)
        return got

    def met(trial: Trial | None) -> bool:
        return trial is not None and trial.met

    def rank(trial: Trial | None) -> float:
        return -math.inf if trial is None else target.rank(trial.figures)

    if base is None:
        base = run((), AS_PLANNED)
        assert base is not None  # the plan as given was quantized with these ranges
    else:
        curve.append(base)

    def result(placements: tuple[Placement, ...], figures: Figures, met: bool, regions: int) -> SearchResult:
        return SearchResult(
            target, base.figures, figures, placements, met, regions, trials, time.perf_counter() - started, scoring.scored_on,
            collapse, tuple(curve),
        )

    if target.met(base.figures):
        return result((), base.figures, True, 0)
    regions = 0
    if ranked is None:
        found = sensitivity.measure(
            scoring, plan, ranges, config, recipe, target, base.figures, metric,
            lambda done, total: report("measure sensitivity", done, total), more_ranges,
        )  # fmt: skip
        trials += len(found)
        regions = len(found)
        ranked = order(found)
    tried: dict[int, Trial | None] = {}

    def prefix(k: int) -> Trial | None:
        if k not in tried:
            tried[k] = run(tuple(ranked[:k]), PREFIX)
        return tried[k]

    report("search placement", 0, 0)
    hit, miss = None, 0
    k = 1
    while k <= len(ranked):
        if met(prefix(k)):
            hit = k
            break
        miss = k
        k = min(2 * k, len(ranked)) if k < len(ranked) else len(ranked) + 1
    if hit is None:  # the margin cannot be had: the shortest prefix tried that meets the target itself
        plain = [n for n in sorted(tried) if tried[n] is not None and target.met(tried[n].figures)]
        if plain:
            return result(tuple(ranked[: plain[0]]), tried[plain[0]].figures, True, regions)
        if not tried:
            return result((), base.figures, False, regions)
        best_k = max(tried, key=lambda n: (rank(tried[n]), -n))
        best = tried[best_k]
        if best is None or rank(best) <= rank(base):
            return result((), base.figures, False, regions)
        return result(tuple(ranked[:best_k]), best.figures, False, regions)
    while hit - miss > 1:  # the shortest prefix that meets the target
        middle = (hit + miss) // 2
        if met(prefix(middle)):
            hit = middle
        else:
            miss = middle
    chosen = list(ranked[:hit])
    figures = tried[hit].figures
    for placement in sorted(chosen[:-1], key=lambda p: p.gain_db) if prune else ():  # least gain first
        without = tuple(p for p in chosen if p is not placement)
        got = run(without, PRUNE)
        if met(got):
            chosen, figures = list(without), got.figures
    return result(tuple(chosen), figures, True, regions)


@dataclass(frozen=True)
class Outcome:
    """The plan to write after the accuracy check, and what was measured on the way."""

    plan: Plan
    recipe: Recipe  # with the accuracy placements
    figures: Figures  # of the model to write, on the scoring samples
    search: SearchResult | None  # None when the plan met the target (or the floor) as it was
    ranges: Ranges  # the ranges given, and those the placements needed


def ensure_fidelity(
    scoring: Scoring, plan: Plan, ranges: Ranges, config: Config, recipe: Recipe, progress: Progress | None = None,
    more_ranges: sensitivity.MoreRanges | None = None,
) -> Outcome:
    """Meet the user's target (``Target.of(config)``), or without one the collapse floor, by
    ``search``. Raises ``FidelityCollapsedError`` when the floor cannot be reached; a missed
    target returns the best placement found (``search.met`` False: the caller writes it and the
    CLI exits with its code)."""
    target, metric = Target.of(config), load_metric(config.metric)
    (progress or (lambda stage, done, total: None))("check fidelity", 0, 0)
    floor = Target(cosine_pooled=COLLAPSE_COSINE)
    # the collapse floor needs no margin: it tells a collapse from a lossy copy, far from both
    margin_db, spread_z = (MARGIN_DB, SPREAD_Z) if target else (0.0, 0.0)
    base = trial_of(scoring, plan, ranges, config, metric, target or floor, 0, AS_PLANNED, margin_db, spread_z)
    collapse = not target and not floor.met(base.figures)
    if not target and not collapse:
        return Outcome(plan, recipe, base.figures, None, ranges)
    ranges = dict(ranges)
    found = search(
        scoring, plan, ranges, config, recipe, target or floor, metric, progress, base, collapse, more_ranges,
        margin_db=margin_db, spread_z=spread_z,
    )  # fmt: skip
    if collapse and not found.met:
        tried = sorted({p for p in _measured_nodes(scoring, plan)})
        raise FidelityCollapsedError(
            f"the int8 model's outputs collapsed on {scoring.scored_on} ({base.figures.describe()}) and no placement lifted"
            f" them to a pooled cosine of {COLLAPSE_COSINE:g} (pooled cosine {base.figures.cosine_pooled:.4f}; best: {found.figures.describe()},"
            f" pooled cosine {found.figures.cosine_pooled:.4f}); tried keeping float or hybrid each of"
            f" {len(tried)} regions: {_shorten(tried)}. Try --exclude on the first layers, --calibration-method minmax,"
            " or dynamic mode (no -c)"
        )
    if not found.placements:
        return Outcome(plan, recipe, found.figures, found, ranges)
    placed = sensitivity.placed(recipe, found.placements)
    return Outcome(make_plan(scoring.model, config, placed, scoring.mask_path), placed, found.figures, found, ranges)


def _measured_nodes(scoring: Scoring, plan: Plan) -> list[str]:
    return [node for node, _ in sensitivity.region_ops(scoring.model, plan)]


def _shorten(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
