"""Measure models with onnxruntime: latency, output fidelity, per-layer error.

Everything here runs the models; nothing estimates. Latency: every model is loaded in this one
process with the same session options, warmed up, then timed interleaved (round ``i`` runs each
model once, starting with a different model each round), so drift of the machine (frequency,
other load) hits every model alike; the figures are the median and 90th percentile of the timed
runs, which are all kept. Fidelity: both models run on the same inputs; the reference model's
outputs are the reference (not ground-truth labels).
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ptq import qmath, runtime
from ptq.errors import CalibrationDataError, UnsupportedModelError
from ptq.graph import ort_error_line
from ptq.progress import Progress
from ptq.report.data import EvalData

DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5
LAYER_SAMPLES = 8  # samples the per-layer comparison runs on (streamed: one sample's activations at a time)
LAYER_MAX_MODEL_BYTES = 1_500_000_000


def _quiet(stage: str, done: int, total: int) -> None:
    return None


# ------------------------------------------------------------------------------------- sessions


def session_options(threads: int):
    """Options as users run onnxruntime (``ORT_ENABLE_ALL``, sequential), ``threads`` intra-op threads.

    Intra-op workers do not spin-wait: with several sessions in one process timed in turn, the
    spinning workers of the session that just ran would take cores from the one being timed.
    """
    return runtime.session_options(threads=threads, spinning=False, optimization="ORT_ENABLE_ALL", sequential=True)


def quiet_run_options():
    """Run options that keep onnxruntime's own log line of a failed run off the terminal: ptq
    reports the failure itself, in one line (``ort_error_line``)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    return options


def open_session(model: Path | bytes, threads: int = 1, label: str | None = None, reuse: bool = True):
    """An onnxruntime CPU session; a model onnxruntime cannot load is an ``UnsupportedModelError``.
    ``reuse``: see ``ptq.runtime.inference_session``."""
    source = model if isinstance(model, bytes) else str(model)
    try:
        return runtime.inference_session(source, session_options(threads), reuse=reuse)
    except Exception as exc:
        name = label or (str(model) if not isinstance(model, bytes) else "the model")
        raise UnsupportedModelError(f"onnxruntime cannot load {name}: {ort_error_line(exc)}") from None


def _run(session, feed: dict[str, np.ndarray], label: str) -> list[np.ndarray]:
    try:
        return session.run(None, feed, quiet_run_options())
    except Exception as exc:
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
        raise CalibrationDataError(
            f"onnxruntime cannot run {label} on inputs {shapes}: {ort_error_line(exc)}"
        ) from None


# -------------------------------------------------------------------------------------- latency


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


@dataclass(frozen=True)
class LatencyStats:
    """Timed runs of one model, in milliseconds, in the order they ran."""

    label: str
    path: str
    runs_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)

    @property
    def p90_ms(self) -> float:
        return percentile(self.runs_ms, 90)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.runs_ms)

    @property
    def min_ms(self) -> float:
        return min(self.runs_ms)

    @property
    def max_ms(self) -> float:
        return max(self.runs_ms)

    @property
    def stdev_ms(self) -> float:
        return statistics.stdev(self.runs_ms) if len(self.runs_ms) > 1 else 0.0

    def to_json(self) -> dict:
        return {
            "label": self.label,
            "path": self.path,
            "median_ms": self.median_ms,
            "p90_ms": self.p90_ms,
            "mean_ms": self.mean_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "stdev_ms": self.stdev_ms,
            "runs_ms": list(self.runs_ms),
        }


@dataclass(frozen=True)
class Latency:
    """Interleaved timing of several models on one input."""

    threads: int
    warmup_runs: int  # per model, before timing
    runs: int  # timed runs per model
    input_shapes: dict[str, list[int]]
    models: list[LatencyStats]
    background_load_cores: float | None = None  # cores other processes kept busy meanwhile

    def speedup(self, index: int = 1, reference: int = 0) -> float:
        """Median latency of model ``reference`` over that of model ``index``."""
        return self.models[reference].median_ms / self.models[index].median_ms

    def describe(self) -> str:
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        shapes = ", ".join(f"{k}[{','.join(map(str, v))}]" for k, v in self.input_shapes.items())
        return (
            f"{threads}, {self.warmup_runs} warm-up + {self.runs} timed runs each, interleaved, wall clock;"
            f" input {shapes}"
        )

    def to_json(self) -> dict:
        data = {
            "threads": self.threads,
            "warmup_runs": self.warmup_runs,
            "runs": self.runs,
            "interleaved": True,
            "input_shapes": self.input_shapes,
            "background_load_cores": self.background_load_cores,
            "models": [m.to_json() for m in self.models],
        }
        if len(self.models) == 2:
            data["speedup"] = self.speedup()
        return data


def _busy_cpu_s() -> float | None:
    """CPU seconds every process has spent busy since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def time_models(
    models: Sequence[tuple[str, Path]],
    feed: dict[str, np.ndarray],
    *,
    threads: int = 1,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    progress: Progress | None = None,
) -> Latency:
    """Latency of each ``(label, path)`` on ``feed``: warm-up, then ``runs`` interleaved rounds."""
    if threads < 1 or runs < 1 or warmup < 0:
        raise ValueError("threads and runs must be >= 1, warmup >= 0")
    progress = progress or _quiet
    sessions = [open_session(path, threads, label) for label, path in models]
    wall0, busy0, own0 = time.perf_counter(), _busy_cpu_s(), _own_cpu_s()
    samples = time_sessions(list(zip((label for label, _ in models), sessions)), feed, runs=runs, warmup=warmup, progress=progress)
    wall, busy1 = time.perf_counter() - wall0, _busy_cpu_s()
    background = None
    if busy0 is not None and busy1 is not None and wall > 0:
        background = max(0.0, ((busy1 - busy0) - (_own_cpu_s() - own0)) / wall)
    return Latency(
        threads=threads,
        warmup_runs=warmup,
        runs=runs,
        input_shapes={k: [int(d) for d in v.shape] for k, v in feed.items()},
        models=[LatencyStats(label, str(path), tuple(s)) for (label, path), s in zip(models, samples)],
        background_load_cores=background,
    )


def time_sessions(
    sessions: Sequence[tuple[str, object]],
    feed: dict[str, np.ndarray],
    *,
    runs: int,
    warmup: int,
    progress: Progress | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> list[list[float]]:
    """Timed runs in milliseconds of each ``(label, session)`` on ``feed``: ``warmup`` runs each,
    then ``runs`` rounds, round ``i`` running every session once starting with session ``i``.

    ``clock``: wall time by default; ``time.thread_time_ns`` counts only the CPU time of this
    thread, which is all of a run's work with 1 intra-op thread and leaves out the time other
    processes hold the core (on a busy machine the wall time of a 1 ms model wanders 1-40 ms
    while its thread time stays within 0.9-1.6 ms: measured on PP-OCR cls, load average 17)."""
    progress = progress or _quiet
    for label, session in sessions:
        for _ in range(warmup):
            _run(session, feed, label)
    samples: list[list[float]] = [[] for _ in sessions]
    order = list(range(len(sessions)))
    for round_index in range(runs):
        shift = round_index % len(order)
        for i in order[shift:] + order[:shift]:
            started = clock()
            sessions[i][1].run(None, feed)
            samples[i].append((clock() - started) / 1e6)
        progress("time", round_index + 1, runs)
    return samples


# ------------------------------------------------------------------------------------- fidelity


def class_axis(shape: Sequence[int]) -> int | None:
    """Axis 1 when an output is shaped like class scores, ``[N, C]`` (or ``[N, C, 1, 1]``) with
    C >= 2, else None.

    The classes must be the axis right after the batch, and every later axis must have one
    entry: a recurrent state ``[1, 1, 128]``, a sequence ``[N, T, C]``, a map ``[N, 1, H, W]``,
    a per-frame score ``[T]`` or a single score ``[N, 1]`` do not qualify. The shape is
    necessary, not sufficient: ``class_scores`` also looks at the values and the name.
    """
    if len(shape) < 2 or shape[1] < 2 or any(d != 1 for d in shape[2:]):
        return None
    return 1


# Name tokens that say an output holds class scores (split on non-letters and camelCase).
CLASS_SCORE_NAMES = frozenset(
    {"logit", "logits", "prob", "probs", "probability", "probabilities", "score", "scores", "class", "classes",
     "cls", "label", "labels", "softmax"}  # fmt: skip
)
SOFTMAX_TOLERANCE = 1e-3  # how far from 1 a row of probabilities may sum (float32 rounding, fused kernels)

SOFTMAX_ROWS = "softmax rows"
LOG_SOFTMAX_ROWS = "log-softmax rows"
NAMED = "named like class scores"


def name_tokens(name: str) -> set[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return {t.lower() for t in re.split(r"[^A-Za-z]+", spaced) if t}


def class_scores(name: str, ref: np.ndarray) -> str | None:
    """Why the reference output ``ref`` (one sample) counts as class scores, or None.

    It must be shaped ``[N, C]`` with C >= 2 (``class_axis``) and either hold probabilities
    (every row of the reference in [0, 1] summing to 1 within 1e-3: a softmax), log-probabilities
    (every row's logsumexp within 1e-3 of 0: a log-softmax), or be named like class scores
    (a token of ``CLASS_SCORE_NAMES`` in its name, for raw logits). Top-1 agreement of anything
    else (an embedding, a recurrent state, a regression head) would be a number without meaning.
    """
    axis = class_axis(ref.shape)
    if axis is None or ref.dtype.kind != "f" or ref.size == 0:
        return None
    r = ref.astype(np.float64)
    if not np.all(np.isfinite(r)):
        return NAMED if name_tokens(name) & CLASS_SCORE_NAMES else None
    if r.min() >= -1e-6 and r.max() <= 1 + 1e-6 and np.all(np.abs(r.sum(axis=axis) - 1) <= SOFTMAX_TOLERANCE):
        return SOFTMAX_ROWS
    if r.max() <= 1e-6:
        peak = r.max(axis=axis, keepdims=True)
        lse = np.log(np.exp(r - peak).sum(axis=axis, keepdims=True)) + peak
        if np.all(np.abs(lse) <= SOFTMAX_TOLERANCE):
            return LOG_SOFTMAX_ROWS
    return NAMED if name_tokens(name) & CLASS_SCORE_NAMES else None


@dataclass
class _OutputAccumulator:
    name: str
    shape: list[int] | None = None
    cosines: list[float] = field(default_factory=list)
    signal: float = 0.0
    noise: float = 0.0
    cross: float = 0.0  # sum of ref . test over samples (the pooled cosine's numerator)
    test_energy: float = 0.0
    max_abs: float = 0.0
    top1_same: int = 0
    top1_rows: int = 0
    top1_applies: bool | None = None
    top1_basis: str | None = None  # why the output counts as class scores (``class_scores``)
    comparable: bool = True

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        if self.shape is None:
            self.shape = [int(d) for d in ref.shape]
        if ref.shape != test.shape or ref.dtype.kind not in "fc" or test.dtype.kind not in "fc":
            self.comparable = False
            return
        r = ref.astype(np.float64).ravel()
        t = test.astype(np.float64).ravel()
        err = r - t
        self.cosines.append(qmath.cosine(r, t))
        self.signal += float(np.dot(r, r))
        self.noise += float(np.dot(err, err))
        self.cross += float(np.dot(r, t))
        self.test_energy += float(np.dot(t, t))
        if err.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(err))))
        basis = class_scores(self.name, ref)  # every sample must qualify
        if basis is None:
            self.top1_applies = False
        elif self.top1_applies is None:
            self.top1_applies, self.top1_basis = True, basis
        elif basis != self.top1_basis:  # the values qualified on some samples only: the name did it
            self.top1_basis = NAMED
        if self.top1_applies:
            axis = class_axis(ref.shape)
            ra, ta = np.argmax(ref, axis=axis).ravel(), np.argmax(test, axis=axis).ravel()
            self.top1_same += int(np.count_nonzero(ra == ta))
            self.top1_rows += int(ra.size)

    def result(self) -> OutputFidelity:
        if not self.comparable or not self.cosines:
            return OutputFidelity(self.name, self.shape, None, None, None, None, None, 0)
        if self.noise == 0.0:
            sqnr = math.inf
        elif self.signal == 0.0:
            sqnr = -math.inf
        else:
            sqnr = 10.0 * math.log10(self.signal / self.noise)
        top1 = self.top1_same / self.top1_rows if self.top1_applies and self.top1_rows else None
        return OutputFidelity(
            self.name,
            self.shape,
            statistics.fmean(self.cosines),
            min(self.cosines),
            sqnr,
            self.max_abs,
            top1,
            self.top1_rows if top1 is not None else 0,
            self.top1_basis if top1 is not None else None,
            _pooled_cosine(self.cross, self.signal, self.test_energy),
        )


def _pooled_cosine(cross: float, signal: float, test_energy: float) -> float:
    """Cosine of all samples' outputs taken as one vector (1.0 when both are all zeros)."""
    if signal == 0.0 and test_energy == 0.0:
        return 1.0
    if signal == 0.0 or test_energy == 0.0:
        return 0.0
    return cross / math.sqrt(signal * test_energy)


def compare_output_lists(
    names: Sequence[str], reference: Sequence[Sequence[np.ndarray]], test: Sequence[Sequence[np.ndarray]]
) -> list[OutputFidelity]:
    """Per output, the figures of ``compare_outputs`` for outputs already computed (one list of
    arrays, in ``names`` order, per sample): what the accuracy search (``ptq.tuning``) judges by,
    so its targets mean what the gates mean."""
    accumulators = [_OutputAccumulator(name) for name in names]
    for ref_sample, test_sample in zip(reference, test):
        for accumulator, ref, got in zip(accumulators, ref_sample, test_sample):
            accumulator.add(np.asarray(ref), np.asarray(got))
    return [a.result() for a in accumulators]


@dataclass(frozen=True)
class OutputFidelity:
    """One output compared over all samples.

    ``cosine`` is the mean over samples of the per-sample cosine similarity, ``cosine_min`` the
    worst sample; ``sqnr_db`` is pooled: 10 log10(sum of squared reference values / sum of
    squared errors) over all samples; ``max_abs_error`` the largest absolute difference seen;
    ``top1`` the fraction of rows whose argmax agrees (None unless the output looks like class
    scores, see ``class_scores``; ``top1_basis`` says why it does). All None when the output is
    not a float tensor of equal shape.
    """

    name: str
    shape: list[int] | None  # of the first sample
    cosine: float | None
    cosine_min: float | None
    sqnr_db: float | None
    max_abs_error: float | None
    top1: float | None
    top1_rows: int = 0
    top1_basis: str | None = None
    # the cosine of all samples' outputs as one vector: a sample with little signal (a blank page
    # under a text detector) weighs little, as in the pooled SQNR (the collapse floor's measure)
    cosine_pooled: float | None = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "shape": self.shape,
            "cosine": self.cosine,
            "cosine_min": self.cosine_min,
            "sqnr_db": self.sqnr_db,
            "max_abs_error": self.max_abs_error,
            "top1": self.top1,
            "top1_rows": self.top1_rows,
            "top1_basis": self.top1_basis,
        }


@dataclass(frozen=True)
class Fidelity:
    """Outputs of the candidate against the reference on the same inputs.

    Headline figures are the worst over outputs: lowest cosine (mean over samples), lowest
    ``cosine_min``, lowest SQNR, largest max abs error, lowest top-1 agreement (over the outputs
    where it applies; None if none does).
    """

    data: dict  # EvalData.to_json()
    outputs: list[OutputFidelity]

    def _worst(self, key: str, pick=min) -> float | None:
        values = [getattr(o, key) for o in self.outputs if getattr(o, key) is not None]
        return pick(values) if values else None

    @property
    def cosine(self) -> float | None:
        return self._worst("cosine")

    @property
    def cosine_min(self) -> float | None:
        return self._worst("cosine_min")

    @property
    def sqnr_db(self) -> float | None:
        return self._worst("sqnr_db")

    @property
    def max_abs_error(self) -> float | None:
        return self._worst("max_abs_error", max)

    @property
    def top1(self) -> float | None:
        return self._worst("top1")

    @property
    def top1_output(self) -> OutputFidelity | None:
        """The output the headline top-1 agreement was computed on (the worst one), or None."""
        scored = [o for o in self.outputs if o.top1 is not None]
        return min(scored, key=lambda o: o.top1) if scored else None

    def to_json(self) -> dict:
        return {
            "cosine": self.cosine,
            "cosine_min": self.cosine_min,
            "sqnr_db": self.sqnr_db,
            "max_abs_error": self.max_abs_error,
            "top1": self.top1,
            "top1_output": self.top1_output.name if self.top1_output else None,
            "outputs": [o.to_json() for o in self.outputs],
        }


def compare_outputs(
    reference: Path,
    candidate: Path,
    data: EvalData,
    *,
    threads: int = 1,
    labels: tuple[str, str] = ("reference", "candidate"),
    progress: Progress | None = None,
) -> Fidelity:
    """Run both models on every sample of ``data`` and compare their outputs by name."""
    progress = progress or _quiet
    ref = open_session(reference, threads, labels[0])
    cand = open_session(candidate, threads, labels[1])
    ref_names = [o.name for o in ref.get_outputs()]
    cand_names = [o.name for o in cand.get_outputs()]
    if set(ref_names) != set(cand_names):
        if len(ref_names) != len(cand_names):
            raise UnsupportedModelError(
                f"the models have different outputs ({', '.join(ref_names)} vs {', '.join(cand_names)})"
            )
        pairs = list(zip(ref_names, cand_names))  # same count, different names: by position
    else:
        pairs = [(n, n) for n in ref_names]
    accumulators = [_OutputAccumulator(r if r == c else f"{r} / {c}") for r, c in pairs]
    total = data.samples
    for i, feed in enumerate(data.feeds()):
        r_out = dict(zip(ref_names, _run(ref, feed, labels[0])))
        c_out = dict(zip(cand_names, _run(cand, feed, labels[1])))
        for acc, (r, c) in zip(accumulators, pairs):
            acc.add(np.asarray(r_out[r]), np.asarray(c_out[c]))
        progress("fidelity", i + 1, total)
    return Fidelity(data.to_json(), [a.result() for a in accumulators])


# ---------------------------------------------------------------------------------- per layer


@dataclass(frozen=True)
class LayerError:
    """The error of one tensor of the reference, found in the candidate."""

    tensor: str
    node: str  # the reference node producing it ("" for a graph input)
    op_type: str  # of that node; "input" for a graph input
    cosine: float
    sqnr_db: float
    max_abs_error: float
    int8: bool = False  # read as the candidate's int8 QuantizeLinear output
    kernel: str | None = None  # int8/hybrid/float/folded: what runs the node (op list), None: unknown

    def to_json(self) -> dict:
        return {
            "tensor": self.tensor,
            "node": self.node,
            "op_type": self.op_type,
            "int8": self.int8,
            "kernel": self.kernel,
            "cosine": self.cosine,
            "sqnr_db": self.sqnr_db,
            "max_abs_error": self.max_abs_error,
        }


@dataclass(frozen=True)
class Layers:
    samples: int
    tensors: list[LayerError]
    note: str = ""

    def to_json(self) -> dict:
        return {
            "samples": self.samples,
            "method": LAYER_METHOD,
            "note": self.note,
            "tensors": [t.to_json() for t in self.tensors],
        }


LAYER_METHOD = (
    "every tensor of the reference (its inputs and node outputs) is looked up in the candidate: where the "
    "candidate quantizes it (a per-tensor QuantizeLinear reads it, or its '/float' rename), that "
    "QuantizeLinear's int8 output is read and dequantized with its scale and zero point (reading it does not "
    "stop onnxruntime's int8 fusions: these are the values the int8 kernels produce); otherwise the float "
    "tensor of the same name is read. Each figure is the error accumulated up to that tensor"
)


@dataclass(frozen=True)
class _Probe:
    tensor: str  # in the reference
    read: str  # what to read in the candidate
    scale: float | None = None  # dequantize what is read (an int8 QuantizeLinear output)
    zero_point: float = 0.0


def _scalar(inits: dict[str, onnx.TensorProto], name: str) -> float | None:
    tensor = inits.get(name)
    if tensor is None:
        return None
    value = onnx.numpy_helper.to_array(tensor)
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _probes(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> list[tuple[_Probe, str, str]]:
    """(probe, node, op_type) for each reference tensor the candidate has, in reference graph order."""
    inits = {t.name: t for t in candidate.graph.initializer}
    produced = {o for n in candidate.graph.node for o in n.output if o}
    quantized: dict[str, _Probe] = {}
    for node in candidate.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 2:
            continue
        scale = _scalar(inits, node.input[1])
        zero_point = _scalar(inits, node.input[2]) if len(node.input) > 2 and node.input[2] else 0.0
        if scale is None or zero_point is None:
            continue
        source = node.input[0].removesuffix("/float")
        quantized.setdefault(source, _Probe(source, node.output[0], scale, zero_point))
    found: list[tuple[_Probe, str, str]] = []
    for vi in reference.graph.input:
        if vi.name in quantized:
            found.append((quantized[vi.name], "", "input"))
    for node in reference.graph.node:
        if node.op_type in ("Constant", "QuantizeLinear", "DequantizeLinear"):
            continue
        for out in node.output:
            if out in quantized:
                found.append((quantized[out], node.name, node.op_type))
            elif out and out in produced:
                found.append((_Probe(out, out), node.name, node.op_type))
    return found


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    existing = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    for name in dict.fromkeys(names):
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    return model.SerializeToString()


def layer_errors(
    reference: Path,
    candidate: Path,
    data: EvalData,
    *,
    samples: int = LAYER_SAMPLES,
    threads: int = 1,
    progress: Progress | None = None,
    skip: Sequence[str] = (),
) -> Layers:
    """Per-tensor cosine/SQNR/max abs error of the candidate against the reference, in graph order.

    ``skip``: tensors the candidate rescaled on purpose (SmoothQuant), left out with a note."""
    progress = progress or _quiet
    for path in (reference, candidate):
        if Path(path).stat().st_size > LAYER_MAX_MODEL_BYTES:
            return Layers(0, [], note=f"skipped: {path} is too large to keep every activation")
    ref_model = onnx.load(str(reference))
    cand_model = onnx.load(str(candidate))
    probes = _probes(ref_model, cand_model)
    skipped = {p.tensor for p, _, _ in probes} & set(skip)
    probes = [entry for entry in probes if entry[0].tensor not in skipped]
    note = (
        f"{len(skipped)} tensor(s) rescaled per channel on purpose (SmoothQuant, cross-layer equalization) left out: they differ from float by design"
        if skipped else ""
    )  # fmt: skip
    if not probes:
        return Layers(0, [], note=note or "no tensor of the reference has a namesake in the candidate")
    ref_bytes = _with_outputs(ref_model, [p.tensor for p, _, _ in probes])
    cand_bytes = _with_outputs(cand_model, [p.read for p, _, _ in probes])
    del ref_model, cand_model
    ref = open_session(ref_bytes, threads, str(reference))
    cand = open_session(cand_bytes, threads, str(candidate))
    ref_names = [o.name for o in ref.get_outputs()]
    cand_names = [o.name for o in cand.get_outputs()]
    acc = [_OutputAccumulator(p.tensor) for p, _, _ in probes]
    n = 0
    for feed in data.feeds(samples):
        r_out = {**feed, **dict(zip(ref_names, _run(ref, feed, str(reference))))}
        c_out = {**feed, **dict(zip(cand_names, _run(cand, feed, str(candidate))))}
        for a, (probe, _, _) in zip(acc, probes):
            value = np.asarray(c_out[probe.read])
            if probe.scale is not None:
                value = (value.astype(np.float64) - probe.zero_point) * probe.scale
            a.add(np.asarray(r_out[probe.tensor]), value)
        n += 1
        progress("layers", n, min(samples, data.samples))
    tensors = []
    for a, (probe, node, op_type) in zip(acc, probes):
        result = a.result()
        if result.cosine is None or result.shape is None or 0 in result.shape:
            continue
        tensors.append(LayerError(probe.tensor, node, op_type, result.cosine, result.sqnr_db, result.max_abs_error,
                                  probe.scale is not None))  # fmt: skip
    return Layers(n, tensors, note=note)
