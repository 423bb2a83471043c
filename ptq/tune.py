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
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ptq import qmath
from ptq.calibrate.data import input_specs, iter_samples
from ptq.calibrate.runner import choose_range, session
from ptq.config import CalibrationMethod, Config
from ptq.graph import byte_size
from ptq.quantize.plan import Plan
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


@dataclass(frozen=True)
class MethodChoice:
    method: CalibrationMethod
    ranges: Ranges
    trials: tuple[MethodTrial, ...]
    scoring_samples: int

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
    limit = min(SCORING_SAMPLES, config.calibration_samples or SCORING_SAMPLES)
    feeds = list(iter_samples(data_dir, input_specs(model), limit, config.image_format))
    reference = _float_outputs(session(model, threads=1), feeds)
    trials = []
    best: tuple[float, CalibrationMethod, Ranges] | None = None
    for done, method in enumerate(CANDIDATES):
        ranges = ranges_for(method)
        candidate = quantize_static(copy.deepcopy(model), plan, ranges, config)
        score = output_score(reference, _float_outputs(session(candidate, threads=1), feeds))
        del candidate
        trials.append(MethodTrial(method, score))
        if best is None or score > best[0]:
            best = (score, method, ranges)
        if progress:
            progress(done + 1, len(CANDIDATES))
    assert best is not None
    return MethodChoice(best[1], best[2], tuple(trials), len(feeds))
