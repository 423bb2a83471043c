"""The Python API: ``convert(path, config) -> ConvertResult``. The CLI is a thin layer over it."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


from ptq import __version__, loader
from ptq.rewrites import equalize, equalize_activations, smoothquant as smooth
from ptq.tuning import bias_correction
from ptq.loader import SourceNode
from ptq.calibrate.range_file import (
    Rewrites, load_ranges, save_ranges, saved_exclude, saved_hybrid, saved_rewrites, saved_weight_range,
)
from ptq.calibrate.runner import calibrate, observe
from ptq.config import CalibrationMethod, Config, OutputPaths, WeightRange
from ptq.errors import OutputError, UsageError
from ptq.quantize.dynamic import quantize_dynamic
from ptq.quantize.plan import make_plan
from ptq.quantize.static import calibrated_tensors, quantize_static
from ptq.tuning.groups import choose_fallback, choose_hybrid, describe_fallback, describe_hybrid
from ptq.tuning.method import choose_method
from ptq.tuning.scoring import scoring_for
from ptq.tuning.weight_range import choose_weight_range
from ptq.write.atomic import transaction
from ptq.write.onnx_file import data_path, serialize, write_onnx
from ptq.write.oplist import OpList, build_oplist, optimized_graph, write_oplist
from ptq.write.ort_file import write_ort

log = logging.getLogger(__name__)

# progress(stage, done, total): total 0 means "indeterminate".
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion produced and measured."""

    source: Path
    outputs: OutputPaths
    mode: str  # "static" | "dynamic"
    float_size_bytes: int
    int8_size_bytes: int  # the .onnx output
    ort_size_bytes: int | None
    oplist: OpList
    notes: list[str] = field(default_factory=list)
    calibration_samples: int = 0
    calibration_method: str = ""
    seconds: float = 0.0
    # Tensors a float rewrite rescaled on purpose (SmoothQuant's per-channel 1/s): they differ
    # from the float model's namesakes by design, so the per-layer table leaves them out.
    rescaled: tuple[str, ...] = ()

    @property
    def size_ratio(self) -> float:
        return self.int8_size_bytes / self.float_size_bytes if self.float_size_bytes else float("nan")


def resolve_outputs(source: Path, config: Config) -> OutputPaths:
    outputs = OutputPaths.for_output(config.output) if config.output else OutputPaths.default_for(source)
    source_real = source.resolve()
    for path in outputs.all():
        if path.resolve() == source_real:
            raise OutputError(f"output {path} is the input model; choose another -o")
    if not outputs.onnx.parent.is_dir():
        raise OutputError(f"output folder {outputs.onnx.parent} does not exist")
    return outputs


def _smooth(model, config: Config, report: Progress) -> tuple[Config, str | None, tuple[str, ...]]:
    """Apply SmoothQuant in place where it is free (``ptq.smooth``); the Muls that now hold
    per-channel constants are kept float (an int8 kernel would quantize the constant away).
    Returns the new config, a note, and the activations it rescaled."""
    groups = smooth.find_groups(model)
    if not groups:
        return config, None, ()
    report("smooth", 0, 0)
    absmax = smooth.channel_absmax(
        model, [g.activation for g in groups], config.calibration_data, config.calibration_samples, config.image_format
    )
    applied = smooth.apply(model, groups, absmax, config.smoothquant)
    keep_float = tuple(g.producer for g in groups if g.activation in applied)
    note = f"SmoothQuant (alpha {config.smoothquant:g}) moved activation outliers into {len(applied)} MatMul weight(s)"
    return dataclasses.replace(config, exclude=config.exclude + keep_float), note, tuple(sorted(applied))


def convert(path: str | Path, config: Config | None = None, progress: Progress | None = None) -> ConvertResult:
    """Quantize the float32 ONNX model at ``path`` to int8 and write the outputs.

    Static (full int8) when ``config.calibration_data`` or ``config.load_ranges`` is set, dynamic
    (hybrid) otherwise. Writes ``outputs.onnx``, ``outputs.ort`` (unless ``config.write_ort`` is
    False) and ``outputs.ops`` atomically and together; the input is never modified.

    Raises:
        PtqError subclasses with a one-line message and an exit code.
    """
    config = config or Config()
    started = time.perf_counter()
    source = Path(path)
    outputs = resolve_outputs(source, config)
    report = progress or (lambda stage, done, total: None)

    report("load", 0, 0)
    loaded = loader.load(source)
    model = loaded.model  # quantized in place: a copy would hold every weight twice
    # What the op list needs of the prepared graph, taken before quantization rewrites it.
    prepared_nodes = [SourceNode(n.name, n.op_type, tuple(n.output)) for n in model.graph.node]

    known = {n.name for n in prepared_nodes} | {n.op_type for n in prepared_nodes}
    for option, names in (("--exclude", config.exclude), ("--hybrid", config.hybrid)):
        for name in names:
            if name not in known:
                loaded.notes.append(
                    f"{option} {name}: matches no node name or op type of the prepared model (onnxruntime's preparation"
                    " rewrites some ops, e.g. HardSwish into HardSigmoid and Mul; the op list names what is there)"
                )

    samples = 0
    rescaled: tuple[str, ...] = ()
    method_used, method_note = config.calibration_method, None
    if config.equalize:  # data-free: static and dynamic mode alike
        pairs = equalize.find_pairs(model)
        changed = equalize.apply(model, pairs)
        rescaled += tuple(n.output[0] for n in model.graph.node if n.name in {p.first for p in pairs} | {b for p in pairs for b in p.between})
        loaded.notes.append(f"cross-layer equalization: {changed} of {len(pairs)} Conv pair(s) rescaled")
    if config.static:
        if config.load_ranges is not None:
            saved, asked = saved_rewrites(config.load_ranges), Rewrites.of(config)
            if saved != asked:
                raise UsageError(
                    f"{config.load_ranges} holds ranges calibrated with {saved.describe()}, this run has {asked.describe()}:"
                    " the rescaled tensors' ranges fit only a model rewritten the same way (repeat those options, with -c"
                    " where they need it, or calibrate anew)"
                )
        if config.equalize_activations and config.calibration_data is not None:
            blocks = equalize_activations.find_hardswish_blocks(model)
            keep_float: list[str] = []
            if blocks:
                report("equalize activations", 0, 0)
                absmax = smooth.channel_absmax(
                    model, [b.activation for b in blocks], config.calibration_data, config.calibration_samples,
                    config.image_format, axis=1,
                )  # fmt: skip
                keep_float, moved = equalize_activations.equalize_activations(model, blocks, absmax)
                config = dataclasses.replace(config, exclude=config.exclude + tuple(keep_float))
                rescaled += tuple(moved)
            loaded.notes.append(
                f"activation equalization: {len(keep_float)} of {len(blocks)} HardSwish -> depthwise block(s) rescaled"
            )
        if config.smoothquant is not None and config.calibration_data is not None:
            config, smooth_note, smoothed = _smooth(model, config, report)
            rescaled += smoothed
            if smooth_note:
                loaded.notes.append(smooth_note)
        if config.load_ranges is not None:
            config = dataclasses.replace(
                config,
                weight_range=saved_weight_range(config.load_ranges) if config.weight_range == WeightRange.AUTO else config.weight_range,
                hybrid=config.hybrid + saved_hybrid(config.load_ranges),
                exclude=config.exclude + tuple(n for n in saved_exclude(config.load_ranges) if n not in config.exclude),
            )
        plan = make_plan(model, config)
        # One set of scoring samples and float outputs for every measured choice below.
        choosing = config.calibration_data is not None and config.load_ranges is None and (
            config.calibration_method == CalibrationMethod.AUTO
            or config.auto_hybrid
            or config.auto_fallback
            or config.weight_range == WeightRange.AUTO
        )
        scoring = None  # made after the calibration pass, which has checked the samples
        score = math.nan  # of the int8 model as planned so far
        # Outputs of int8 data-movement nodes and Softmax take no range of their own.
        needed = calibrated_tensors(model, plan)
        if config.load_ranges is not None:
            ranges = load_ranges(config.load_ranges, needed)
        elif config.calibration_method == CalibrationMethod.AUTO:
            observers, samples = observe(
                model,
                needed,
                config.calibration_data,
                limit=config.calibration_samples,
                progress=lambda done, total: report("calibrate", done, total),
                image_format=config.image_format,
            )
            scoring = scoring_for(model, config, config.calibration_data)
            choice = choose_method(plan, observers, config, scoring, progress=lambda done, total: report("choose method", done, total))
            del observers
            ranges, method_used, method_note, score = choice.ranges, choice.method, choice.describe(), choice.score
        else:
            ranges, samples = calibrate(
                model,
                needed,
                config.calibration_data,
                method=config.calibration_method,
                percentile=config.percentile,
                limit=config.calibration_samples,
                progress=lambda done, total: report("calibrate", done, total),
                image_format=config.image_format,
            )
        if choosing and scoring is None and config.calibration_method != CalibrationMethod.AUTO:
            scoring = scoring_for(model, config, config.calibration_data)
        if config.weight_range == WeightRange.AUTO:
            if scoring is not None:
                report("choose weight range", 0, 0)
                if math.isnan(score):
                    score = scoring.score_plan(plan, ranges, config)
                weight_choice = choose_weight_range(plan, ranges, config, scoring, score)
                config = weight_choice.config
                score = weight_choice.mse_score if config.mse_weights else weight_choice.minmax_score
                loaded.notes.append(weight_choice.describe())
            else:  # ranges from a file (its recorded choice came in above) or a model too large to score
                config = dataclasses.replace(config, weight_range=WeightRange.MINMAX)
        for enabled, stage, choose, describe in (
            (config.auto_hybrid, "choose hybrid", choose_hybrid, describe_hybrid),
            (config.auto_fallback, "choose fallback", choose_fallback, describe_fallback),
        ):
            if enabled and scoring is not None:
                report(stage, 0, 0)
                if math.isnan(score):
                    score = scoring.score_plan(plan, ranges, config)
                picked = choose(plan, ranges, config, scoring, score)
                config, plan, score = picked.config, picked.plan, picked.score
                if describe(picked):
                    loaded.notes.append(describe(picked))
        del scoring
        if config.save_ranges is not None:
            save_ranges(
                ranges, method_used, config.percentile, samples, config.save_ranges, config.hybrid, config.exclude,
                config.weight_range, Rewrites.of(config),
            )  # fmt: skip
        if config.bias_correction and config.calibration_data is not None:
            report("bias correction", 0, 0)
            corrected = bias_correction.apply(model, plan, config, config.calibration_data)
            loaded.notes.append(f"bias correction: {corrected} layer(s) corrected for the mean output shift of their int8 weights")
        report("quantize", 0, 0)
        quantized = quantize_static(model, plan, ranges, config)
        decisions = plan.decisions
        mode = "static"
    else:
        if config.weight_range == WeightRange.AUTO:
            loaded.notes.append("weight range auto: minmax (dynamic mode has no samples to score candidates on)")
        report("quantize", 0, 0)
        result = quantize_dynamic(model, config)
        quantized, decisions = result.model, result.decisions
        mode = "dynamic"

    model_bytes = serialize(quantized, __version__, data_location=data_path(outputs.onnx).name)
    report("analyze", 0, 0)
    oplist = build_oplist(
        loaded.source_nodes, prepared_nodes, decisions, optimized_graph(model_bytes)
    )
    report("write", 0, 0)
    notes = list(loaded.notes) + ([method_note] if method_note else [])
    write_ort_file = config.write_ort
    if write_ort_file and model_bytes.external is not None:
        write_ort_file = False
        notes.append(f".ort not written: the ORT format holds at most 2 GB; the .onnx keeps its weights in {data_path(outputs.onnx).name}")
    ort_size = None
    with transaction():  # all outputs or none: renamed into place together at the end
        write_onnx(model_bytes, outputs.onnx)
        if write_ort_file:
            write_ort(model_bytes, outputs.ort)
        write_oplist(oplist, outputs.ops)
    if write_ort_file:
        ort_size = outputs.ort.stat().st_size
    return ConvertResult(
        source=source,
        outputs=outputs,
        mode=mode,
        float_size_bytes=loaded.size_bytes,
        int8_size_bytes=model_bytes.total_size,
        ort_size_bytes=ort_size,
        oplist=oplist,
        notes=notes,
        calibration_samples=samples,
        calibration_method=(
            f"ranges from {config.load_ranges.name}" if config.load_ranges else method_used.value
        ) if config.static else "",
        seconds=time.perf_counter() - started,
        rescaled=rescaled,
    )

