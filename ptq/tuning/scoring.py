"""The one scoring of accuracy-aware choices: output SQNR against the float model, measured with
onnxruntime itself on held-out calibration samples the ranges were not fitted on (the validation
part of ``tuning.validation``'s split).

The score is what users judge a model by: SQNR of the model outputs, run by the onnxruntime
kernels the model will use (so a kernel's own arithmetic, e.g. u8 x s8 saturation on AVX2,
counts). Sessions run on one thread so scores, and hence the choices, repeat exactly on a
machine; a different CPU may in principle choose differently, so explicit options are the way
to get identical bytes across machines.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from ptq import qmath
from ptq.calibrate.data import input_specs
from ptq.calibrate.samples import iter_samples
from ptq.calibrate.runner import session
from ptq.config import Config
from ptq.graph import byte_size
from ptq.quantize.masks import MaskPath, find_mask_path
from ptq.quantize.plan import Plan
from ptq.quantize.static import quantize_static
from ptq.quantize.weights import WeightMemo
from ptq.tuning.validation import Split

SCORING_SAMPLES = 8
# Each candidate is a full copy of the model while it is scored; above this size auto falls back
# to percentile rather than hold several copies of a huge model.
MAX_MODEL_BYTES = 512 * 2**20

Ranges = dict[str, tuple[float, float]]


class Scoring:
    """The scoring samples and the float model's outputs on them, computed once per conversion
    and shared by every accuracy-aware choice (method, hybrid groups, float fallback, accuracy
    placement), so the samples are read and the float model run once, whatever is chosen.

    With a ``split`` (``tuning.validation``) the scoring samples are its held-out validation
    samples, which the ranges were not fitted on; without one, the first ``samples`` calibration
    samples."""

    def __init__(self, model: onnx.ModelProto, config: Config, data_dir: Path, split: Split | None = None,
                 samples: int = SCORING_SAMPLES):  # fmt: skip
        self.model = model
        self.split = split
        if split is not None:
            indices, limit = split.scoring, config.calibration_samples
        else:
            indices, limit = None, min(samples, config.calibration_samples or samples)
        self._read = lambda positions: list(iter_samples(data_dir, input_specs(model), limit, config.image_format, positions))
        self.feeds = self._read(indices)
        self.scored_on = split.scored_on if split is not None else f"{len(self.feeds)} calibration samples"
        # Serialized here rather than by ``session``: the caller checked the size already, and
        # ``session`` would measure it again (ByteSize costs a serialization: 0.12 s on MiniLM).
        self._float_session = session(model.SerializeToString(), threads=1)  # kept for ``other_samples``
        self.names = [o.name for o in self._float_session.get_outputs() if o.type == "tensor(float)"]
        self.reference = _float_outputs(self._float_session, self.feeds)
        self.weight_memo = WeightMemo()  # the candidates share ``model``'s weights

    @functools.cached_property
    def mask_path(self) -> MaskPath:
        """``masks.find_mask_path`` of the float model, found once for every plan made of it."""
        return find_mask_path(self.model)

    def outputs(self, candidate: onnx.ModelProto, feeds: list[dict] | None = None) -> list[list[np.ndarray]]:
        """The float outputs (``names``) of ``candidate`` on every scoring sample (or ``feeds``)."""
        return self.timed_outputs(candidate, feeds)[0]

    def timed_outputs(self, candidate: onnx.ModelProto, feeds: list[dict] | None = None) -> tuple[list[list[np.ndarray]], float]:
        """``outputs``, and the median wall time of one run (ms) over the samples: one run each,
        1 thread, no warm-up, on a machine that may be busy: a rough latency that costs nothing
        extra (the runs are made for the scores anyway)."""
        sess = session(candidate.SerializeToString(), threads=1)
        names = [o.name for o in sess.get_outputs() if o.type == "tensor(float)"]
        outputs, times = [], []
        for feed in self.feeds if feeds is None else feeds:
            started = time.perf_counter()
            outputs.append(sess.run(names, feed))
            times.append(time.perf_counter() - started)
        return outputs, 1000.0 * float(np.median(times)) if times else math.nan

    def other_samples(self, positions: Sequence[int]) -> tuple[list[dict], list[list[np.ndarray]]]:
        """The calibration samples at ``positions`` and the float model's outputs on them (for
        cross-validated scoring, ``tuning.method``)."""
        feeds = self._read(tuple(positions))
        return feeds, _float_outputs(self._float_session, feeds)

    def score(self, candidate: onnx.ModelProto) -> float:
        """``output_score`` of ``candidate`` (an int8 model no larger than the float one)."""
        return output_score(self.reference, self.outputs(candidate))

    def candidate(self, plan: Plan, ranges: Ranges, config: Config) -> onnx.ModelProto:
        """The int8 model ``plan``, ``ranges`` and ``config`` make of the float model (a copy)."""
        return quantize_static(copy.deepcopy(self.model), plan, ranges, config, self.weight_memo)

    def with_model(self, model: onnx.ModelProto) -> "Scoring":
        """This scoring for ``model``, a float rewrite of the scored model that computes the same
        outputs (SmoothQuant): the same samples and float outputs, a weight memo of its own."""
        other = copy.copy(self)
        other.model = model
        other.weight_memo = WeightMemo()
        return other

    def score_plan(self, plan: Plan, ranges: Ranges, config: Config) -> float:
        """The score of the int8 model ``plan``, ``ranges`` and ``config`` make of the float model."""
        return self.score(self.candidate(plan, ranges, config))


def scoring_for(model: onnx.ModelProto, config: Config, data_dir: Path, split: Split | None = None) -> Scoring | None:
    """A ``Scoring``, or None for a model too large to copy for each candidate."""
    return Scoring(model, config, data_dir, split) if byte_size(model) <= MAX_MODEL_BYTES else None


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


