"""Run the float model over calibration samples and observe the ranges of chosen tensors.

One onnxruntime session, with the observed tensors added as extra graph outputs; samples are
read and run one at a time and each output updates its observer and is dropped, so peak memory
is one sample's activations whatever the number of samples.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ptq.calibrate import ranges as range_estimators
from ptq.calibrate.data import InputSpec, input_specs
from ptq.calibrate.samples import Samples
from ptq.calibrate.observers import MONOTONE, HistogramObserver, MinMaxObserver, affine, image, union
from ptq.config import CalibrationMethod, ImageFormat
from ptq.errors import CalibrationDataError, UnsupportedModelError, UsageError
from ptq.graph import ort_error_line, to_array
from ptq.progress import StepProgress as Progress
from ptq.runtime import inference_session, session_options


@contextlib.contextmanager
def with_outputs(model: onnx.ModelProto, tensors: Iterable[str]) -> Iterator[onnx.ModelProto]:
    """``model`` returning ``tensors`` too (those not already outputs or inputs), for the duration
    of the block. The outputs are added in place and removed afterwards rather than on a copy:
    a copy would duplicate every weight in memory."""
    present = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    original = len(model.graph.output)
    for name in tensors:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            present.add(name)
    try:
        yield model
    finally:
        del model.graph.output[original:]


def session(model: onnx.ModelProto, threads: int | None = None, spinning: bool = True):
    """A CPU inference session for ``model`` (serialized in memory, or via a file when huge).

    ``spinning=False``: onnxruntime's worker threads sleep between runs instead of spinning, so
    they leave the CPU to the observer thread that works while the next sample runs."""
    try:
        return inference_session(model, session_options(threads=threads, spinning=spinning))
    except Exception as exc:
        raise UnsupportedModelError(f"onnxruntime cannot run the model: {ort_error_line(exc)}") from None


# Batching: samples whose inputs have a free batch axis and equal shapes run together, up to
# MAX_BATCH at a time and as many as keep one run's inputs and observed outputs within
# BATCH_BUDGET_BYTES (estimated from the first sample). Measured on 32 real samples, 2-core EPYC
# (``observe`` wall time, best of 2-3): PP-OCR cls (5 MB a sample, batches of 6) 0.81 -> 0.69 s;
# YOLOv8n (55 MB a sample) 2.49 s unbatched, 2.78 s in batches of 2, 2.98 s in batches of 8:
# big activations run no faster batched on a CPU, so the budget batches only small samples.
MAX_BATCH = 8
BATCH_BUDGET_BYTES = 32 << 20  # two samples of up to 16 MB


def sample_values(
    model: onnx.ModelProto,
    tensors: list[str],
    data_dir: Path,
    limit: int | None = None,
    image_format: ImageFormat | None = None,
    indices: Collection[int] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """For each calibration sample (those at ``indices``, when given), the values of ``tensors`` (graph inputs come from the feed,
    others from one session with them as extra outputs), one sample at a time: for passes
    whose per-tensor state is small (per-channel means or maxima), not for the range pass."""
    graph_inputs = {i.name for i in model.graph.input}
    with with_outputs(model, tensors) as observed:
        sess = session(observed)
    computed = [o.name for o in sess.get_outputs() if o.name in set(tensors)]
    for index, feed in enumerate(Samples(data_dir, input_specs(model), limit, image_format, indices)):
        try:
            values = dict(zip(computed, sess.run(computed, feed)))
        except Exception as exc:
            raise CalibrationDataError(f"sample {index + 1}: onnxruntime failed on it: {ort_error_line(exc)}") from None
        values.update({t: feed[t] for t in tensors if t in graph_inputs and t in feed})
        yield values


def calibrate(
    model: onnx.ModelProto,
    tensors: list[str],
    data_dir: Path,
    method: CalibrationMethod = CalibrationMethod.MINMAX,
    percentile: float = 99.99,
    limit: int | None = None,
    progress: Progress | None = None,
    image_format: ImageFormat | None = None,
    indices: Collection[int] | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    shared_dir: Path | None = None,
) -> tuple[dict[str, tuple[float, float]], int]:
    """Range of every tensor in ``tensors`` over the samples in ``data_dir``, by ``method``.

    Returns:
        ``(ranges, samples_used)``.
    """
    histogram = method != CalibrationMethod.MINMAX
    # MSE and entropy read the fine shape of a histogram, which a nonlinear image (Sigmoid, Tanh)
    # only approximates and a sampled bulk only estimates: measured on held-out samples, YOLOv8n
    # with MSE lost 0.34 dB to derived Sigmoid observers and PP-OCR det with entropy 0.48 dB to
    # sampled binning. Percentile and min/max commute with monotone maps and read the exact tails.
    fine = method in (CalibrationMethod.MSE, CalibrationMethod.ENTROPY)
    observers, used = observe(
        model, tensors, data_dir, histogram, limit, progress, image_format,
        nonlinear_images=not fine, exact=method == CalibrationMethod.ENTROPY, indices=indices,
        workers=workers, ray_address=ray_address, shared_dir=shared_dir,
    )  # fmt: skip
    return {name: choose_range(obs, method, percentile) for name, obs in observers.items()}, used


def observe(
    model: onnx.ModelProto,
    tensors: list[str],
    data_dir: Path,
    histogram: bool = True,
    limit: int | None = None,
    progress: Progress | None = None,
    image_format: ImageFormat | None = None,
    batch_budget: int = BATCH_BUDGET_BYTES,
    nonlinear_images: bool = True,
    exact: bool = False,
    indices: Collection[int] | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    shared_dir: Path | None = None,
) -> tuple[dict[str, MinMaxObserver | HistogramObserver], int]:
    """One observer per tensor in ``tensors``, fed every sample in ``data_dir``: a histogram
    observer (any method's range can be chosen from it afterwards) or a plain min/max one.

    ``nonlinear_images=False`` observes Sigmoid/Tanh outputs instead of deriving them (see
    ``derived_values``); ``exact`` counts every value of large updates too (``HistogramObserver``).

    Samples run in batches where the model allows (see ``_Batcher``; ``batch_budget`` bounds the
    bytes of one batch's inputs and observed outputs, 0 runs them one by one); the observers see
    the same values in the same order either way.

    ``workers`` > 1 or a ``ray_address``: the samples are split into that many shards observed by
    separate processes or Ray tasks and the states merged (``ptq.calibrate.shards``; the model is
    written to ``shared_dir`` for them to read).

    Returns:
        ``(observers, samples_used)``.
    """
    specs = input_specs(model)
    samples = Samples(data_dir, specs, limit, image_format, indices)  # ``indices``: the fitting part of a split
    total = samples.count or 0  # 0: a Python source without len(), counted as it is read
    same = same_values(model, tensors)
    derived = derived_values(model, tensors, same, nonlinear_images)
    skipped = set(same) | set(derived)
    own_tensors = [t for t in tensors if t not in skipped]
    with with_outputs(model, own_tensors) as observed:
        if workers > 1 or ray_address is not None:
            from ptq.calibrate import shards
            from ptq.calibrate.samples import is_path

            if not is_path(data_dir):
                raise UsageError("--workers/--ray: the shard workers read the samples from files; give a folder or a file")

            own, used, _ = shards.observe_sharded(
                observed, own_tensors, data_dir, total, workers, histogram, exact, image_format, batch_budget,
                progress, ray_address, shared_dir, limit=limit, indices=indices,
            )  # fmt: skip
            if progress:
                progress(used, total)
        else:
            parallel = len(os.sched_getaffinity(0)) > 1
            sess = session(observed, spinning=not parallel)
    if workers <= 1 and ray_address is None:
        own, used = observe_samples(
            sess, specs, iter(samples), total, own_tensors, histogram, exact, batch_budget, progress, pipelined=parallel
        )
    return _with_derived(own, derived, same, tensors), used


def _with_derived(own: dict, derived: dict, same: dict, tensors: list[str]) -> dict:
    """``own`` observers plus those of the tensors derived from them (``derived_values``) or equal
    to them (``same_values``), for ``tensors``."""
    observers: dict[str, MinMaxObserver | HistogramObserver] = dict(own)
    for name, (sources, function) in derived.items():  # in graph order: sources come first
        found = [observers[same.get(source, source)] for source in sources]
        observers[name] = image(found[0], function) if function is not None else union(found)
    for name, source in same.items():
        observers[name] = observers[source]
    return {name: observers[name] for name in tensors}


@dataclass
class FoldObservations:
    """Histogram observers per fold of the calibration samples (``observe_folds``), combined on
    demand: the observers a range fitted on any union of folds would read."""

    folds: list[dict]  # per fold, the observers of the tensors observed directly
    derived: dict
    same: dict
    tensors: list[str]
    used: int  # samples observed, all folds

    def combined(self, folds: Iterable[int]) -> dict:
        """The observers of ``tensors`` over the given folds, merged in fold order
        (``shards.merge_states``: the bins a one-pass run over them would have)."""
        from ptq.calibrate.shards import merge_states

        own = merge_states([self.folds[i] for i in sorted(folds)])
        return _with_derived(own, self.derived, self.same, self.tensors)


def observe_folds(
    model: onnx.ModelProto,
    tensors: list[str],
    data_dir,
    folds: list[Collection[int]],
    limit: int | None = None,
    progress: Progress | None = None,
    image_format: ImageFormat | None = None,
    batch_budget: int = BATCH_BUDGET_BYTES,
) -> FoldObservations:
    """Histogram observers of ``tensors`` kept apart per fold (sample positions), one session
    and one pass over the samples of all folds: for cross-validated scoring, where each fold is
    scored with ranges fitted on the others."""
    specs = input_specs(model)
    same = same_values(model, tensors)
    derived = derived_values(model, tensors, same, True)
    skipped = set(same) | set(derived)
    own_tensors = [t for t in tensors if t not in skipped]
    with with_outputs(model, own_tensors) as observed:
        # the options ``observe`` uses: within ``runtime.reusing_sessions`` its session is reused
        sess = session(observed, spinning=len(os.sched_getaffinity(0)) <= 1)
    parts, used = [], 0
    total = sum(len(f) for f in folds)
    for fold in folds:
        samples = Samples(data_dir, specs, limit, image_format, fold)
        start = used

        def fold_progress(done: int, _total: int, start: int = start) -> None:
            if progress:
                progress(start + done, total)

        own, count = observe_samples(sess, specs, iter(samples), samples.count or 0, own_tensors, True, False,
                                     batch_budget, fold_progress)  # fmt: skip
        parts.append(dict(own))
        used += count
    return FoldObservations(parts, derived, same, tensors, used)


def session_from_path(path: str | Path, threads: int | None = None, spinning: bool = True):
    """``session`` for a model file on disk (a shard worker's: external data beside it)."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), session_options(threads=threads, spinning=spinning), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UnsupportedModelError(f"onnxruntime cannot run the model: {ort_error_line(exc)}") from None


def observe_samples(
    sess,
    specs: list[InputSpec],
    samples: Iterable[dict[str, np.ndarray]],
    total: int,
    tensors: list[str],
    histogram: bool = True,
    exact: bool = False,
    batch_budget: int = BATCH_BUDGET_BYTES,
    progress: Progress | None = None,
    first_sample: int = 0,
    whole: int | None = None,
    pipelined: bool = False,
) -> tuple[dict[str, MinMaxObserver | HistogramObserver], int]:
    """One observer per tensor of ``tensors`` (outputs of ``sess`` or inputs in the feeds), fed
    the ``total`` feeds of ``samples`` in order. ``first_sample``: the number of the first feed
    in the whole calibration set of ``whole`` samples, for error messages (a shard's).

    Returns:
        ``(observers, samples_used)``.
    """
    output_names = [o.name for o in sess.get_outputs()]
    wanted = set(tensors)
    make = (lambda: HistogramObserver(exact=exact)) if histogram else MinMaxObserver
    observers: dict[str, MinMaxObserver | HistogramObserver] = {name: make() for name in tensors}
    used = 0

    def observe_sample(feed: dict[str, np.ndarray], outputs: list[np.ndarray]) -> None:
        for name, value in zip(output_names, outputs):
            if name in wanted:
                observers[name].update(value)
        for name, value in feed.items():
            if name in wanted:
                observers[name].update(value)

    # With two or more cores, a sample's observer updates run on one worker thread while
    # onnxruntime runs the next sample (its run releases the GIL), its threads not spinning
    # between runs. One update at a time, in sample order: the observers see what a sequential
    # run shows them, and at most one more sample's outputs are held. YOLOv8n, 32 samples,
    # 2-core EPYC: 44.7 ms a sample sequential, 45.8 pipelined with spinning, 37.9 without.
    worker = ThreadPoolExecutor(1, thread_name_prefix="ptq-observe") if pipelined else None
    pending: Future | None = None

    def update(feed: dict[str, np.ndarray], outputs: list[np.ndarray]) -> None:
        nonlocal used, pending
        if worker is None:
            observe_sample(feed, outputs)
        else:
            if pending is not None:
                pending.result()
            pending = worker.submit(observe_sample, feed, outputs)
        used += 1
        if progress:
            progress(used, total)

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return sess.run(None, feed)
        except Exception as exc:
            of = whole or total
            raise CalibrationDataError(
                f"sample {first_sample + used + 1}{f' of {of}' if of else ''}: onnxruntime failed on it: {ort_error_line(exc)}"
            ) from None

    try:
        batcher = _Batcher(sess, specs, batch_budget)
        for feed in samples:
            batcher.add(feed, run, update)
        batcher.flush(run, update)
        if pending is not None:
            pending.result()
    finally:
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)
    return observers, used


# Ops whose output holds exactly the values of their first input, rearranged: the output's
# histogram and min/max equal the input's, so one observer serves both.
SAME_VALUES_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def same_values(model: onnx.ModelProto, tensors: list[str]) -> dict[str, str]:
    """Observed tensor -> the observed tensor it holds the same values as (its output of a
    ``SAME_VALUES_OPS`` node, followed back through chains of them).

    Such a tensor is not fetched from onnxruntime nor binned: it shares its source's observer,
    which sees the same multiset of values per sample, so the ranges are identical to observing
    it on its own (MiniLM: 48 of its 150 observed tensors are Reshape/Transpose outputs)."""
    wanted = set(tensors)
    same: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in SAME_VALUES_OPS and node.domain in ("", "ai.onnx") and node.input and len(node.output) == 1:
            source, out = node.input[0], node.output[0]
            if out in wanted and source in wanted and out != source:
                same[out] = same.get(source, source)
    return same


def derived_values(
    model: onnx.ModelProto, tensors: list[str], same: dict[str, str], nonlinear: bool = True
) -> dict[str, tuple[list[str], tuple | None]]:
    """Observed tensor -> ``(observed inputs, (forward, inverse) or None)`` for tensors whose
    observer is made from their inputs' after the pass instead of from their values:

    - outputs of strictly increasing elementwise ops: Sigmoid and Tanh (``observers.MONOTONE``),
      and Add, Sub, Mul or Div of the observed tensor by a scalar constant (Mul, Div: positive);
    - Concats of observed tensors (None: the union of their values).

    In graph order. YOLOv8n: 73 of its 224 observed tensors, 5.2 M of the 13.7 M values a sample
    the observer thread would otherwise bin; PP-OCR det: the x + 3 and / 6 of every HardSwish.
    ``nonlinear=False`` leaves Sigmoid and Tanh outputs to be observed: an affine image or a union
    has the source histograms' bins exactly, a nonlinear image only interpolated within them."""
    wanted = set(tensors)
    scalars = {
        t.name: float(v.reshape(-1)[0])
        for t in model.graph.initializer
        if np.prod(t.dims, dtype=np.int64) == 1 and t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
        for v in [to_array(t)]
        if np.isfinite(v).all()
    }
    derived: dict[str, tuple[list[str], tuple | None]] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            continue
        out = node.output[0]
        if out not in wanted or out in same or not node.input:
            continue
        if nonlinear and node.op_type in MONOTONE and node.input[0] in wanted:
            derived[out] = ([node.input[0]], MONOTONE[node.op_type])
        elif node.op_type == "Concat" and all(i in wanted for i in node.input):
            derived[out] = (list(node.input), None)
        elif node.op_type in ("Add", "Sub", "Mul", "Div") and len(node.input) == 2:
            x, c = node.input
            if node.op_type in ("Add", "Mul") and x in scalars:
                x, c = c, x  # commutative: the constant may come first
            if x not in wanted or c not in scalars:
                continue
            c = scalars[c]
            slope, offset = {"Add": (1.0, c), "Sub": (1.0, -c), "Mul": (c, 0.0), "Div": (1.0 / c if c else 0.0, 0.0)}[node.op_type]
            if slope > 0 and np.isfinite(slope):
                derived[out] = ([x], affine(slope, offset))
    return derived


def _free_batch(specs: list[InputSpec]) -> bool:
    """Whether every input has a symbolic first (batch) axis."""
    return bool(specs) and all(
        s.dims is not None and len(s.dims) >= 1 and not (isinstance(s.dims[0], int) and s.dims[0] > 0) for s in specs
    )


def _same_shapes(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)


def _concat(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}


def _split(outputs: list[np.ndarray], n: int) -> list[list[np.ndarray]] | None:
    """The outputs of a batch of ``n`` equal samples cut back into each sample's, or None."""
    if any(o.ndim == 0 or o.shape[0] % n for o in outputs):
        return None
    parts = [np.split(o, n) for o in outputs]
    return [[p[i] for p in parts] for i in range(n)]


class _Batcher:
    """Runs samples one at a time until batching is known to be safe, then in batches.

    Batching is tried only when every input's batch axis is free and the first sample's inputs
    and observed outputs leave room for two or more in ``budget`` bytes. It is switched on after
    a probe: the first two same-shaped samples run alone (and are observed), then together, and
    the batched outputs must equal the single ones bit for bit (a model that mixes its batch
    items, or whose kernels round differently at another batch size, keeps running one by one).
    Batched outputs are cut back per sample and observed in sample order, so the observers see
    exactly the values, in the order, of an unbatched run.
    """

    def __init__(self, sess, specs: list[InputSpec], budget: int):
        self.sess = sess
        self.possible = _free_batch(specs)
        self.size = 0  # 0: not decided yet; 1: one at a time
        self.budget = budget
        self.probe: tuple[dict, list] | None = None
        self.pending: list[dict[str, np.ndarray]] = []

    def add(self, feed, run, observe) -> None:
        if self.size == 1:
            observe(feed, run(feed))
            return
        if self.size == 0:
            self._probe(feed, run, observe)
            return
        if self.pending and not _same_shapes(self.pending[0], feed):
            self.flush(run, observe)
        self.pending.append(feed)
        if len(self.pending) == self.size:
            self.flush(run, observe)

    def _probe(self, feed, run, observe) -> None:
        outputs = run(feed)
        observe(feed, outputs)
        if self.probe is None:
            per_sample = sum(o.nbytes for o in outputs) + sum(v.nbytes for v in feed.values())
            cap = min(MAX_BATCH, self.budget // max(per_sample, 1)) if self.possible else 1
            if cap < 2:
                self.size = 1
            else:
                self.probe, self.cap = (feed, outputs), cap
            return
        first_feed, first_outputs = self.probe
        if not _same_shapes(first_feed, feed):
            self.probe = (feed, outputs)  # probe with the next pair of equal shapes
            return
        self.probe = None
        try:
            batched = self.sess.run(None, _concat([first_feed, feed]))
        except Exception:
            batched = None
        ok = batched is not None and all(
            b.shape[:1] == (a.shape[0] + c.shape[0],) if a.ndim else False
            for a, c, b in zip(first_outputs, outputs, batched)
        ) and all(
            np.array_equal(np.concatenate([a, c]), b, equal_nan=b.dtype.kind in "fc")
            for a, c, b in zip(first_outputs, outputs, batched)
        )
        self.size = self.cap if ok else 1

    def flush(self, run, observe) -> None:
        pending, self.pending = self.pending, []
        if not pending:
            return
        split = None
        if len(pending) > 1:
            try:
                split = _split(self.sess.run(None, _concat(pending)), len(pending))
            except Exception:
                split = None  # run them one by one: an error then names its sample
        if split is None:
            for feed in pending:
                observe(feed, run(feed))
            return
        for feed, outputs in zip(pending, split):
            observe(feed, outputs)


def choose_range(observer, method: CalibrationMethod, percentile: float) -> tuple[float, float]:
    """The range ``method`` picks from what ``observer`` saw; never wider than min/max."""
    if method == CalibrationMethod.MINMAX or not isinstance(observer, HistogramObserver) or observer.minmax.count == 0:
        return observer.range()
    counts, edges = observer.counts, observer.edges
    if method == CalibrationMethod.PERCENTILE:
        lo, hi = range_estimators.percentile_range(counts, edges, percentile)
    elif method == CalibrationMethod.ENTROPY:
        lo, hi = range_estimators.entropy_range(counts, edges)
    else:
        lo, hi = range_estimators.mse_range(counts, edges)
    seen_lo, seen_hi = observer.range()
    return max(lo, seen_lo), min(hi, seen_hi)
