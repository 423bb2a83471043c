"""Assemble a report: measure two models (or a conversion's float and int8), evaluate the gates,
and hold every figure for the renderers and the JSON document (schema in ``schema.md``)."""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ptq.calibrate.samples import DataSource
from ptq.config import ImageFormat
from ptq.errors import CalibrationDataError, UnsupportedModelError, UsageError
from ptq.graph import ort_error_line
from ptq.progress import Progress
from ptq.report import data as data_mod
from ptq.report import gates as gates_mod
from ptq.report.data import EvalData
from ptq.report.env import environment
from ptq.report.inspect import ModelInfo, inspect_model
from ptq.report.measure import (
    DEFAULT_RUNS,
    DEFAULT_WARMUP,
    Fidelity,
    Latency,
    Layers,
    compare_outputs,
    layer_errors,
    open_session,
    quiet_run_options,
    time_models,
)
from ptq.write.oplist import group_fallbacks

SCHEMA = "ptq-report"
SCHEMA_VERSION = 1
KINDS = ("convert", "compare", "bench")



@dataclass(frozen=True)
class MeasureOptions:
    """What to measure and how.

    Attributes:
        threads: onnxruntime intra-op threads for every session (latency is stated with it).
        runs: timed runs per model; warmup: untimed runs per model before timing.
        latency: time the models (``--no-bench`` turns it off).
        fidelity: compare outputs on the data.
        layers: also compare every intermediate tensor (for the HTML/JSON reports).
        samples: use only the first N samples of the data.
        thresholds: gate key -> threshold (see ``ptq.report.gates.GATES``).
    """

    threads: int = 1
    runs: int = DEFAULT_RUNS
    warmup: int = DEFAULT_WARMUP
    latency: bool = True
    fidelity: bool = True
    layers: bool = False
    samples: int | None = None
    thresholds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {self.threads}")
        if self.runs < 1:
            raise UsageError(f"--runs must be at least 1, got {self.runs}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be at least 0, got {self.warmup}")
        if self.samples is not None and self.samples < 1:
            raise UsageError(f"--eval-samples must be at least 1, got {self.samples}")
        object.__setattr__(self, "thresholds", gates_mod.check_thresholds(dict(self.thresholds)))
        if "min_speedup" in self.thresholds and not self.latency:
            raise UsageError("--min-speedup needs the latency measurement; drop --no-bench")
        if {"min_cosine", "min_sqnr", "min_top1"} & set(self.thresholds) and not self.fidelity:
            raise UsageError("fidelity gates need the fidelity measurement")


@dataclass
class Report:
    """Every figure of one ``convert``, ``compare`` or ``bench`` run."""

    kind: str
    labels: list[str]  # one per model: "float"/"int8", "A"/"B", or file names
    models: list[ModelInfo]
    sizes: list[int]  # bytes on disk per model
    options: MeasureOptions
    data: EvalData | None = None
    latency: Latency | None = None
    fidelity: Fidelity | None = None
    layers: Layers | None = None
    kernels: dict[str, int] | None = None  # convert: the op list's int8/hybrid/float/folded source nodes
    kernels_by_op_type: dict[str, dict[str, int]] | None = None
    float_fallbacks: list[dict] = field(default_factory=list)
    conversion: dict | None = None
    gates: list[gates_mod.GateResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # figure -> why it was not measured
    environment: dict = field(default_factory=environment)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    # -- headline figures -------------------------------------------------------------------

    @property
    def size_ratio(self) -> float | None:
        if len(self.sizes) < 2 or not self.sizes[0]:
            return None
        return self.sizes[1] / self.sizes[0]

    @property
    def speedup(self) -> float | None:
        return self.latency.speedup() if self.latency and len(self.latency.models) >= 2 else None

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed_gates(self) -> list[gates_mod.GateResult]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> dict:
        """The headline figures gates read (None where not measured)."""
        s: dict = {"threads": self.options.threads}
        lat, fid = self.latency, self.fidelity
        s["median_ms"] = [m.median_ms for m in lat.models] if lat else None
        if self.kind != "bench":
            s["reference_size_bytes"] = self.sizes[0]
            s["candidate_size_bytes"] = self.sizes[1]
            s["size_ratio"] = self.size_ratio
            s["reference_median_ms"] = lat.models[0].median_ms if lat else None
            s["reference_p90_ms"] = lat.models[0].p90_ms if lat else None
            s["candidate_median_ms"] = lat.models[1].median_ms if lat else None
            s["candidate_p90_ms"] = lat.models[1].p90_ms if lat else None
            s["speedup"] = self.speedup
            for key in ("cosine", "cosine_min", "sqnr_db", "max_abs_error", "top1"):
                s[key] = getattr(fid, key) if fid else None
        return s

    def evaluate_gates(self) -> list[gates_mod.GateResult]:
        self.gates = gates_mod.evaluate(self.options.thresholds, self.summary(), self.missing)
        return self.gates

    # -- breakdowns for the plots -----------------------------------------------------------

    def op_type_rows(self) -> list[dict]:
        """Per op type: nodes and weight bytes per model, the op list's kernels (convert), and the
        per-layer error of the tensors it produces; most reference nodes first."""
        rows: dict[str, dict] = {}

        def row(op: str) -> dict:
            n = len(self.models)
            return rows.setdefault(op, {"op_type": op, "nodes": [0] * n, "kernels": None, "bytes": [0] * n,
                                        "layers": 0, "sqnr_db_median": None, "cosine_min": None})  # fmt: skip

        for i, info in enumerate(self.models):
            for s in info.op_types:
                row(s.op_type)["nodes"][i] = s.count
        for i, info in enumerate(self.models):
            for op, nbytes in info.bytes_by_op_type().items():
                row(op)["bytes"][i] = nbytes
        if self.kernels_by_op_type:
            for op, counts in self.kernels_by_op_type.items():
                row(op)["kernels"] = {k: counts.get(k, 0) for k in ("int8", "hybrid", "float", "folded")}
        if self.layers and self.layers.tensors:
            by_op: dict[str, list] = defaultdict(list)
            for t in self.layers.tensors:
                by_op[t.op_type].append(t)
            for op, tensors in by_op.items():
                r = row(op)
                r["layers"] = len(tensors)
                finite = [t.sqnr_db for t in tensors if math.isfinite(t.sqnr_db)]
                r["sqnr_db_median"] = statistics.median(finite) if finite else (math.inf if tensors else None)
                r["cosine_min"] = min(t.cosine for t in tensors)
        return sorted(rows.values(), key=lambda r: (-r["nodes"][0], -sum(r["nodes"]), -sum(r["bytes"]), r["op_type"]))

    # -- JSON -------------------------------------------------------------------------------

    def to_json(self) -> dict:
        doc = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "created": self.created,
            "environment": self.environment,
            "threads": self.options.threads,
            "models": [
                {"label": label, "role": _role(self.kind, i), **info.to_json(), "size_bytes": size}
                for i, (label, info, size) in enumerate(zip(self.labels, self.models, self.sizes))
            ],
            "summary": self.summary(),
            "data": self.data.to_json() if self.data else None,
            "latency": self.latency.to_json() if self.latency else None,
            "fidelity": self.fidelity.to_json() if self.fidelity else None,
            "layers": self.layers.to_json() if self.layers else None,
            "op_types": self.op_type_rows() if self.kind != "bench" else [],
            "kernels": self.kernels,
            "float_fallbacks": self.float_fallbacks,
            "conversion": self.conversion,
            "gates": {"passed": self.gates_passed, "results": [g.to_json() for g in self.gates]},
            "notes": self.notes,
            "missing": self.missing,
        }
        return json_safe(doc)


def _role(kind: str, index: int) -> str:
    if kind == "bench":
        return "model"
    return "reference" if index == 0 else "candidate"


def json_safe(value):
    """``value`` with non-finite floats as the strings "inf", "-inf", "nan" (JSON has no such numbers)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# ------------------------------------------------------------------------------------ data


def choose_data(
    model: Path,
    *,
    eval_data: DataSource | None = None,
    calibration_data: DataSource | None = None,
    samples: int | None = None,
    option: str = "--eval-data",
    image_format: ImageFormat | None = None,
) -> EvalData:
    """The measured inputs: ``eval_data`` if given, else ``calibration_data`` (labelled as such),
    else inputs synthesized from ``model``'s declared input shapes (labelled as such): the first
    free sizes (``data.FREE_SIZES``) onnxruntime runs the model on. Either data may be a folder or
    samples from Python (``ptq.calibrate.samples``).

    Raises:
        CalibrationDataError: the data does not fit the model, or no synthesized inputs run it.
    """
    onnx_model, specs = data_mod.model_specs(model)
    if eval_data is not None:
        return data_mod.from_source(eval_data, specs, data_mod.EVAL, samples, option=option, image_format=image_format)
    if calibration_data is not None:
        return data_mod.from_source(
            calibration_data, specs, data_mod.CALIBRATION, samples, option="--calibration-data", image_format=image_format
        )
    return runnable_synthesized(Path(model), onnx_model, specs, samples or data_mod.SYNTHESIZED_SAMPLES, option)


def runnable_synthesized(path: Path, onnx_model, specs, n: int, option: str) -> EvalData:
    """Synthesized inputs of the first ``data.FREE_SIZES`` the model at ``path`` runs on.

    One float session tries the first input of each size in turn; a model no size fits (one that
    needs a particular value, e.g. a sample rate, or sizes that agree in ways the shapes do not
    declare) raises a ``CalibrationDataError`` that says how to get figures."""
    first_error, tried = None, []
    session = None
    for image_side, sequence in data_mod.FREE_SIZES:
        try:
            data = data_mod.synthesize(onnx_model, specs, n, option=option, image_side=image_side, sequence=sequence)
        except UnsupportedModelError as exc:
            raise CalibrationDataError(f"cannot synthesize inputs for {path}: {exc}") from None
        feed = data.first()
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
        if shapes in tried:
            continue  # no free axis of this kind: the same inputs
        tried.append(shapes)
        session = session or open_session(path, 1, str(path))
        try:
            session.run(None, feed, quiet_run_options())
            return data
        except Exception as exc:
            first_error = first_error or ort_error_line(exc)
    raise CalibrationDataError(
        f"onnxruntime cannot run {path.name} on inputs synthesized from its declared input shapes (tried"
        f" {'; '.join(tried)}: {first_error}); give real samples with {option} DIR"
    )


def _check_same_inputs(paths: Sequence[Path]) -> None:
    first = None
    for path in paths:
        _, specs = data_mod.model_specs(path)
        names = sorted(s.name for s in specs)
        if first is None:
            first = (path, names)
        elif names != first[1]:
            raise UsageError(
                f"{path} has inputs {', '.join(names)} but {first[0]} has {', '.join(first[1])}:"
                " the models must take the same inputs"
            )


# -------------------------------------------------------------------------------- measuring


def _measure_pair(
    report: Report, paths: tuple[Path, Path], progress: Progress | None, rescaled: tuple[str, ...] = (),
    node_kernels: dict[str, str] | None = None,
) -> Report:
    try:
        report = _measure_pair_unchecked(report, paths, progress, rescaled)
        if report.layers is not None and node_kernels:
            report.layers = _with_kernels(report.layers, node_kernels)
        return report
    except CalibrationDataError as exc:
        if report.data is not None and report.data.source == data_mod.SYNTHESIZED:
            raise CalibrationDataError(
                f"{exc} (the inputs were synthesized from the declared input shapes; give real samples with"
                f" {report.data.option} DIR)"
            ) from None
        raise


def _measure_pair_unchecked(
    report: Report, paths: tuple[Path, Path], progress: Progress | None, rescaled: tuple[str, ...] = ()
) -> Report:
    options = report.options
    labels = (report.labels[0], report.labels[1])
    data = report.data
    if options.fidelity and data is not None:
        report.fidelity = compare_outputs(paths[0], paths[1], data, threads=options.threads, labels=labels,
                                          progress=progress)  # fmt: skip
        if report.fidelity.top1 is None:
            report.missing["top1"] = (
                "does not apply: no output looks like class scores ([N, classes] with classes >= 2, holding"
                " softmax or log-softmax rows, or named like logits/probs/scores)"
            )
    if options.layers and data is not None:
        report.layers = layer_errors(paths[0], paths[1], data, threads=options.threads, progress=progress, skip=rescaled)
    if options.latency and data is not None:
        report.latency = time_models(list(zip(labels, paths)), data.first(), threads=options.threads,
                                     runs=options.runs, warmup=options.warmup, progress=progress)  # fmt: skip
    elif not options.latency:
        report.missing["speedup"] = "not measured (--no-bench)"
    _note_background(report)
    report.evaluate_gates()
    return report


def _with_kernels(layers: Layers, node_kernels: dict[str, str]) -> Layers:
    """Each tensor labelled with the kernel that runs the node producing it: the op list's (one
    source of truth with the .ops.json and the counts), not whether an int8 tensor was readable."""
    import dataclasses

    tensors = [dataclasses.replace(t, kernel=node_kernels.get(t.node)) if t.node else t for t in layers.tensors]
    return dataclasses.replace(layers, tensors=tensors)


def _oplist_kernels(candidate: Path) -> dict[str, str] | None:
    """Node -> kernel from the .ops.json ptq wrote beside ``candidate``, if it did."""
    import json

    from ptq.config import OutputPaths

    ops = OutputPaths.for_output(candidate).ops
    try:
        nodes = json.loads(ops.read_text())["nodes"]
        return {n["name"]: n["kernel"] for n in nodes}
    except (OSError, ValueError, KeyError, TypeError):
        return None


BUSY_CORES = 0.25


def _note_background(report: Report) -> None:
    cores = report.latency.background_load_cores if report.latency else None
    if cores is not None and cores > BUSY_CORES:
        report.notes.append(f"other processes kept {cores:.1f} cores busy while timing: latency figures may be noisy")


def report_conversion(
    result, data: EvalData | None, options: MeasureOptions, progress: Progress | None = None
) -> Report:
    """Measure a ``ptq.convert`` result: its float source against its int8 output."""
    import dataclasses

    source, output = Path(result.source), Path(result.outputs.onnx)
    models = [inspect_model(source, run_onnxruntime=False), inspect_model(output, run_onnxruntime=False)]
    if result.oplist.executed is not None:  # what ptq inspect/compare count on the written model
        models[1] = dataclasses.replace(models[1], executed=result.oplist.executed,
                                        executed_note="compute nodes after onnxruntime's optimizations")  # fmt: skip
    by_op: dict[str, Counter] = defaultdict(Counter)
    for entry in result.oplist.nodes:
        by_op[entry.op_type][entry.kernel] += 1
    fallbacks = group_fallbacks(result.oplist.float_fallbacks())
    report = Report(
        kind="convert",
        labels=["float", "int8"],
        models=models,
        sizes=[result.float_size_bytes, result.int8_size_bytes],
        options=options,
        data=data,
        kernels=result.oplist.summary(),
        kernels_by_op_type={op: dict(c) for op, c in by_op.items()},
        float_fallbacks=[g.to_json() for g in fallbacks],
        conversion={
            "mode": result.mode,
            "calibration_samples": result.calibration_samples,
            "calibration_method": result.calibration_method or None,
            "outputs": {
                "onnx": str(result.outputs.onnx),
                "ort": str(result.outputs.ort) if result.ort_size_bytes is not None else None,
                "ops": str(result.outputs.ops),
            },
            "ort_size_bytes": result.ort_size_bytes,
            "seconds": result.seconds,
            "notes": list(result.notes),
            "latency_placement": _latency_placement(result),
            # ptq.tuning: the fitting/validation split, the written model's figures on the
            # validation samples, and the accuracy search (regions kept float or hybrid, and why)
            "validation_split": result.split.to_json() if getattr(result, "split", None) else None,
            "held_out": result.held_out.to_json() if getattr(result, "held_out", None) else None,
            "accuracy": result.accuracy.to_json() if getattr(result, "accuracy", None) else None,
        },
    )
    # where and how the int8 placement was measured (the Markdown and HTML reports show report notes)
    report.notes += [n for n in result.notes if n.startswith("latency placement")]
    node_kernels = {entry.name: entry.kernel for entry in result.oplist.nodes}
    return _measure_pair(report, (source, output), progress, tuple(getattr(result, "rescaled", ())), node_kernels)


def _latency_placement(result) -> dict | None:
    """The latency search's record and the nodes it placed float (with their measured times)."""
    recipe = getattr(result, "recipe", None)
    if recipe is None or recipe.latency is None:
        return None
    placed = recipe.to_json()["placements"]
    return {**recipe.latency.to_json(), "float_nodes": [p for p in placed if p.get("reason") == "latency"]}


def report_comparison(a: Path, b: Path, data_dir: DataSource | None, options: MeasureOptions,
                      progress: Progress | None = None, image_format: ImageFormat | None = None) -> Report:  # fmt: skip
    """Measure any two models with the same inputs: ``a`` is the reference, ``b`` the candidate."""
    a, b = Path(a), Path(b)
    models = [inspect_model(a), inspect_model(b)]
    _check_same_inputs([a, b])
    reason = None
    try:
        data = choose_data(a, eval_data=data_dir, samples=options.samples, option="--data", image_format=image_format)
    except CalibrationDataError as exc:
        if data_dir is not None:
            raise
        data, reason = None, str(exc)
    report = Report(
        kind="compare",
        labels=["A", "B"],
        models=models,
        sizes=[m.size_bytes for m in models],
        options=options,
        data=data,
    )
    if reason is not None:
        return _unmeasured(report, reason)
    return _measure_pair(report, (a, b), progress, node_kernels=_oplist_kernels(b) or models[1].node_kernels)


def report_bench(paths: Sequence[Path], data_dir: DataSource | None, options: MeasureOptions,
                 progress: Progress | None = None, image_format: ImageFormat | None = None) -> Report:  # fmt: skip
    """Latency only, of every model, interleaved in one process."""
    paths = [Path(p) for p in paths]
    models = [inspect_model(p, run_onnxruntime=False) for p in paths]
    _check_same_inputs(paths)
    data = choose_data(paths[0], eval_data=data_dir, samples=1, option="--data", image_format=image_format)
    labels = _unique_labels(paths)
    report = Report(kind="bench", labels=labels, models=models, sizes=[m.size_bytes for m in models],
                    options=options, data=data)  # fmt: skip
    report.latency = time_models(list(zip(labels, paths)), data.first(), threads=options.threads, runs=options.runs,
                                 warmup=options.warmup, progress=progress)  # fmt: skip
    _note_background(report)
    return report


def _unique_labels(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths]


# ------------------------------------------------------------------------------- the Python API


def _unmeasured(report: Report, reason: str) -> Report:
    """A report without fidelity and latency: the note says why and how to get them; the gates on
    them fail, naming the reason."""
    report.notes.append(f"fidelity and latency not measured: {reason}")
    for figure in ("cosine", "sqnr_db", "top1", "speedup"):
        report.missing.setdefault(figure, f"not measured: {reason}")
    report.evaluate_gates()
    return report


def measure(
    result,
    eval_data: DataSource | EvalData | None = None,
    *,
    calibration_data: DataSource | None = None,
    image_format: ImageFormat | None = None,
    options: MeasureOptions | None = None,
    progress: Progress | None = None,
) -> Report:
    """Measure a conversion (a ``ptq.ConvertResult``): size, latency and fidelity of its int8 output
    against its float source, and the gates of ``options.thresholds``.

    The inputs are ``eval_data`` (a folder, samples from Python, or an ``EvalData`` from
    ``choose_data``); without it the ``calibration_data`` (labelled as not held out); without
    either, inputs synthesized from the model's input shapes. When onnxruntime runs the model on
    no synthesized inputs, nothing was asked for that cannot be had: the report says so in a note
    and lists the figures as missing (their gates fail) instead of raising.

    Raises:
        CalibrationDataError: the given samples do not fit the model, or a model fails on them.
    """
    options = options or MeasureOptions()
    if isinstance(eval_data, EvalData):
        data = eval_data
    else:
        try:
            data = choose_data(result.source, eval_data=eval_data, calibration_data=calibration_data,
                               samples=options.samples, image_format=image_format)  # fmt: skip
        except CalibrationDataError as exc:
            if eval_data is not None or calibration_data is not None:
                raise
            return _unmeasured(report_conversion(result, None, options, progress), f"{exc}")
    return report_conversion(result, data, options, progress)


def compare(
    reference: str | Path,
    candidate: str | Path,
    data: DataSource | None = None,
    *,
    image_format: ImageFormat | None = None,
    options: MeasureOptions | None = None,
    progress: Progress | None = None,
) -> Report:
    """Size, latency and fidelity of ``candidate`` against ``reference`` on ``data`` (a folder or
    samples from Python; default: synthesized inputs, or a note when the model runs on none)."""
    return report_comparison(reference, candidate, data, options or MeasureOptions(), progress, image_format)


def bench(models: Sequence[str | Path], data: DataSource | None = None, *, image_format: ImageFormat | None = None,
          options: MeasureOptions | None = None, progress: Progress | None = None) -> Report:  # fmt: skip
    """Latency of every model, interleaved in one process, on the first sample of ``data``."""
    options = options or MeasureOptions(fidelity=False)
    return report_bench(models, data, options, progress, image_format)
