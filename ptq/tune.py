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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ptq import qmath
from ptq.calibrate.data import input_specs, iter_samples
from ptq.calibrate.runner import choose_range, session
from ptq.config import CalibrationMethod, Config
from ptq.graph import byte_size
from ptq.graph import initializers, producers
from ptq.quantize.plan import HYBRID, WEIGHTED, Plan, make_plan
from ptq.quantize.static import quantize_static

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
    """The scoring samples and the float model's outputs on them, computed once per conversion:
    ``choose_method`` hands them (and its score of the chosen candidate) on to ``choose_hybrid``,
    which would otherwise read the samples, build a float session and run it again, and build and
    score the very int8 model ``choose_method`` already scored."""

    def __init__(self, model: onnx.ModelProto, config: Config, data_dir: Path):
        limit = min(SCORING_SAMPLES, config.calibration_samples or SCORING_SAMPLES)
        self.feeds = list(iter_samples(data_dir, input_specs(model), limit, config.image_format))
        # Serialized here rather than by ``session``: the caller checked the size already, and
        # ``session`` would measure it again (ByteSize costs a serialization: 0.12 s on MiniLM).
        self.reference = _float_outputs(session(model.SerializeToString(), threads=1), self.feeds)

    def score(self, candidate: onnx.ModelProto) -> float:
        """``output_score`` of ``candidate`` (an int8 model no larger than the float one)."""
        return output_score(self.reference, _float_outputs(session(candidate.SerializeToString(), threads=1), self.feeds))


@dataclass(frozen=True)
class MethodChoice:
    method: CalibrationMethod
    ranges: Ranges
    trials: tuple[MethodTrial, ...]
    scoring_samples: int
    # What ``choose_hybrid`` may reuse: the scoring state, and the plan and config the chosen
    # candidate was built with (its score is in ``trials``). Held only when hybrid groups exist.
    reusable: tuple[Scoring, Plan, Config] | None = field(default=None, repr=False, compare=False)

    def score_of(self, method: CalibrationMethod) -> float:
        return next(t.sqnr_db for t in self.trials if t.method == method)

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
    model: onnx.ModelProto,
    plan: Plan,
    observers: dict,
    config: Config,
    data_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> MethodChoice:
    """The candidate estimator whose int8 model best matches ``model`` on the first samples."""

    def ranges_for(method: CalibrationMethod) -> Ranges:
        return {name: choose_range(obs, method, config.percentile) for name, obs in observers.items()}

    if byte_size(model) > MAX_MODEL_BYTES:
        return MethodChoice(CalibrationMethod.PERCENTILE, ranges_for(CalibrationMethod.PERCENTILE), (), 0)
    scoring = Scoring(model, config, data_dir)
    trials = []
    best: tuple[float, CalibrationMethod, Ranges] | None = None
    for done, method in enumerate(CANDIDATES):
        ranges = ranges_for(method)
        candidate = quantize_static(copy.deepcopy(model), plan, ranges, config)
        score = scoring.score(candidate)
        del candidate
        trials.append(MethodTrial(method, score))
        if best is None or score > best[0]:
            best = (score, method, ranges)
        if progress:
            progress(done + 1, len(CANDIDATES))
    assert best is not None
    reusable = (scoring, plan, config) if hybrid_groups(model, plan) else None
    return MethodChoice(best[1], best[2], tuple(trials), len(scoring.feeds), reusable)


# A group of MatMuls goes hybrid only when that lifts the output SQNR by at least this much.
HYBRID_GAIN_DB = 1.0


@dataclass(frozen=True)
class HybridChoice:
    config: Config  # with the chosen nodes added to ``hybrid``
    plan: Plan
    trials: tuple[tuple[str, int, float], ...]  # (producer op type, nodes, score dB)
    base_score: float
    kept: tuple[str, ...]  # producer op types whose MatMuls went hybrid

    def describe(self) -> str | None:
        if not self.trials:
            return None
        tried = ", ".join(f"{op}-fed x{n}: {score:.1f} dB" for op, n, score in self.trials)
        kept = ", ".join(self.kept) or "none"
        return (
            f"hybrid MatMuls by input producer: {self.base_score:.1f} dB all int8; {tried}; "
            f"kept hybrid: {kept} (a group needs +{HYBRID_GAIN_DB:g} dB)"
        )


def hybrid_groups(model: onnx.ModelProto, plan: Plan) -> dict[str, list[str]]:
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
    return groups


def choose_hybrid(
    model: onnx.ModelProto, plan: Plan, ranges: Ranges, config: Config, data_dir: Path,
    method_choice: MethodChoice | None = None,
) -> HybridChoice:
    """Greedily run groups of MatMuls with hybrid kernels where that measurably pays.

    ``method_choice``: the ``choose_method`` result these ``ranges`` came from, if any; its
    scoring samples, float outputs and score of this very int8 model are reused (the same
    numbers a fresh computation gives: one thread, the same samples and model)."""
    reuse = method_choice.reusable if method_choice is not None and method_choice.ranges is ranges else None
    if reuse is not None and (reuse[1] is not plan or reuse[2] != config):
        reuse = None
    if reuse is None:
        groups = hybrid_groups(model, plan) if byte_size(model) <= MAX_MODEL_BYTES else {}
    else:
        groups = hybrid_groups(model, plan)  # choose_method checked the size
    if not groups:
        return HybridChoice(config, plan, (), math.nan, ())
    scoring = reuse[0] if reuse is not None else Scoring(model, config, data_dir)

    def score(candidate_plan: Plan, candidate_config: Config) -> float:
        return scoring.score(quantize_static(copy.deepcopy(model), candidate_plan, ranges, candidate_config))

    best_config, best_plan = config, plan
    best = method_choice.score_of(method_choice.method) if reuse is not None else score(plan, config)
    base, trials, kept = best, [], []
    for op_type, names in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        trial_config = dataclasses.replace(best_config, hybrid=best_config.hybrid + tuple(names))
        trial_plan = make_plan(model, trial_config)
        if not set(trial_plan.activations) <= set(ranges):
            continue
        got = score(trial_plan, trial_config)
        trials.append((op_type, len(names), got))
        if got >= best + HYBRID_GAIN_DB:
            best, best_config, best_plan = got, trial_config, trial_plan
            kept.append(op_type)
    return HybridChoice(best_config, best_plan, tuple(trials), base, tuple(kept))
