"""The Python API: ``convert(path, config) -> ConvertResult``. The CLI is a thin layer over it.

``convert`` reads as the pipeline: load, the float rewrites (``ptq.rewrites.passes``), then
static (calibrate, scored choices, quantize) or dynamic quantization, then the outputs. What the
user asked stays in ``Config``; what ptq decided accumulates in a ``Recipe`` that each stage
returns edited and ``ConvertResult`` hands back.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ptq import __version__, loader, runtime
from ptq.calibrate.data import input_specs
from ptq.calibrate.range_file import SavedRanges, read_ranges, save_ranges
from ptq.calibrate.runner import calibrate, observe, observe_folds
from ptq.calibrate.samples import iter_samples
from ptq.config import CalibrationMethod, Config, OutputPaths, WeightRange
from ptq.errors import OutputError, UsageError
from ptq.loader import SourceNode
from ptq.progress import Progress, silent, steps
from ptq.quantize import fp16
from ptq.quantize.dynamic import quantize_dynamic
from ptq.quantize.plan import Decision, make_plan
from ptq.quantize.static import calibrated_tensors, quantize_static
from ptq.recipe import LATENCY, LatencyRecord, Recipe
from ptq.rewrites import passes
from ptq.tuning import bias_correction, equalization, latency
from ptq.tuning.collapse import describe_guard, guard_log_inputs
from ptq.tuning.groups import choose_fallback, choose_hybrid, describe_fallback, describe_hybrid
from ptq.tuning.method import choose_method, choose_method_cross_validated
from ptq.tuning.scoring import MAX_MODEL_BYTES, scoring_for
from ptq.tuning.smoothing import choose_smoothing
from ptq.tuning.weight_range import choose_weight_range
from ptq.tuning import targets, validation
from ptq.tuning.figures import Figures, figures_of, load_metric
from ptq.calibrate.samples import Samples
from ptq.graph import byte_size
from ptq.write.atomic import transaction
from ptq.write.onnx_file import data_path, serialize, write_onnx
from ptq.write.oplist import OpList, build_oplist, optimized_graph, write_oplist
from ptq.write.ort_file import write_ort


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion produced and measured, and the recipe it decided."""

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
    recipe: Recipe = field(default_factory=Recipe)
    # How the calibration samples were split (static mode with data), the written model's figures
    # on the validation samples, and the accuracy search, when one ran (``ptq.tuning``).
    split: validation.Split | None = None
    held_out: Figures | None = None
    accuracy: targets.SearchResult | None = None

    @property
    def latency(self) -> LatencyRecord | None:
        """Where and how the latency placement was measured (None when it did not run)."""
        return self.recipe.latency

    @property
    def size_ratio(self) -> float:
        return self.int8_size_bytes / self.float_size_bytes if self.float_size_bytes else float("nan")


def convert(path: str | Path, config: Config | None = None, progress: Progress | None = None, *,
            calibration_data=None) -> ConvertResult:  # fmt: skip
    """Quantize the float32 ONNX model at ``path`` to int8 and write the outputs.

    ``calibration_data`` (shorthand for ``config.calibration_data``): a folder or file of samples,
    or samples from Python: an iterable of ``{input name: array}`` dicts, a function returning one,
    or an onnxruntime ``CalibrationDataReader`` with ``rewind()`` (``ptq.calibrate.samples``).

    Static (full int8) when ``config.calibration_data`` or ``config.load_ranges`` is set, dynamic
    (hybrid) otherwise. Writes ``outputs.onnx``, ``outputs.ort`` (unless ``config.write_ort`` is
    False) and ``outputs.ops`` atomically and together; the input is never modified.

    Raises:
        PtqError subclasses with a one-line message and an exit code.
    """
    # One session cache for the whole conversion (the CLI's outer block, with its report, wins):
    # scoring, the folds, the latency search and its confirmation run some models more than once.
    with runtime.reusing_sessions():
        return _convert(path, config, progress, calibration_data)


def _convert(path, config: Config | None, progress: Progress | None, calibration_data) -> ConvertResult:
    config = config or Config()
    if calibration_data is not None:
        config = dataclasses.replace(config, calibration_data=calibration_data)
    started = time.perf_counter()
    source = Path(path)
    outputs = resolve_outputs(source, config)
    progress = progress or silent

    progress("load", 0, 0)
    loaded = loader.load(source)
    model = loaded.model  # quantized in place: a copy would hold every weight twice
    # --exclude/--hybrid name nodes of the prepared graph, before ptq's rewrites.
    notes = list(loaded.notes) + unmatched_names(config, _nodes(model))

    saved = read_ranges(config.load_ranges) if config.load_ranges is not None else None
    config = equalization.resolve(config, saved)
    recipe = starting_recipe(config, saved)
    # Every measured choice scores on held-out validation samples the ranges and the data-driven
    # rewrites are not fitted on (``tuning.validation``).
    split = sample_split(model, config) if config.calibration_data is not None else None
    # (with --load-ranges and -c, the data-driven rewrites measure the same fitting samples again)
    fit = split.fit if split is not None else None
    if saved is not None:
        split = None  # the ranges come from the file: nothing is scored
    recipe = passes.apply(model, config, recipe, progress, fit, saved.recipe if saved is not None else None)
    # Activation equalization is a scored candidate where the cleaned model has its blocks: the
    # equalized copy goes through the same static pipeline (``tuning.equalization``).
    trial = equalization.candidate(model, config, recipe, progress, fit) if split is not None else None
    # The op list follows source nodes into the graph the rewrites left: taken before quantizing.
    prepared = _nodes(model)
    if config.fp16 and not config.static:  # float16 weights, float32 kernels instead of int8 (ptq.quantize.fp16)
        halved = fp16.convert(model)
        quantized = Quantized(halved.model, halved.decisions, recipe, 0, [fp16.describe(halved)])
    elif config.static:
        quantized = quantize_with_ranges(model, config, recipe, saved, progress, source, split)
        if trial is not None:
            prepared_trial = _nodes(trial.model)
            other = quantize_with_ranges(trial.model, config, trial.recipe, saved, progress, source, split)
            keep, note = equalization.pick(quantized, other)
            if keep is other:
                quantized, prepared = other, prepared_trial
            quantized.notes.append(note)
            del trial, other
        recipe = quantized.recipe
        if quantized.saving is not None:
            save_ranges(*quantized.saving, config.percentile, quantized.samples, config.save_ranges)
        if config.fp16:  # the layers left float keep float16 weights
            notes.append(fp16.describe(fp16.convert(quantized.model, fp16.quantization_constants(quantized.model))))
    else:
        quantized = quantize_weights_only(model, config, recipe, progress)
    # The op list follows source nodes into the graph the float cleanup left (what it removed: cleaned).
    cleaned = passes.removed(quantized.recipe)
    added = passes.inserted(quantized.recipe)
    op_types = {n.name: n.op_type for n in quantized.model.graph.node if n.name in added}
    inserted = {name: (op_types[name], why) for name, why in added.items() if name in op_types}
    notes += [note for rewrite in quantized.recipe.rewrites for note in rewrite.notes]
    notes += quantized.notes

    written = write_outputs(
        quantized.model, quantized.decisions, loaded.source_nodes, prepared, outputs, config, progress, cleaned, inserted
    )
    method = quantized.recipe.calibration_method
    return ConvertResult(
        source=source,
        outputs=outputs,
        mode=("static" if not _weights_only(quantized.recipe) else "dynamic") if config.static else "fp16" if config.fp16 else "dynamic",
        float_size_bytes=loaded.size_bytes,
        int8_size_bytes=written.onnx_size,
        ort_size_bytes=written.ort_size,
        oplist=written.oplist,
        notes=notes + written.notes,
        calibration_samples=quantized.samples,
        calibration_method=(f"ranges from {config.load_ranges.name}" if config.load_ranges else method.value) if method else "",
        seconds=time.perf_counter() - started,
        rescaled=quantized.recipe.rescaled,
        recipe=quantized.recipe,
        split=quantized.split,
        held_out=quantized.held_out,
        accuracy=quantized.accuracy,
    )


def resolve_outputs(source: Path, config: Config) -> OutputPaths:
    outputs = OutputPaths.for_output(config.output) if config.output else OutputPaths.default_for(source)
    source_real = source.resolve()
    for path in outputs.all():
        if path.resolve() == source_real:
            raise OutputError(f"output {path} is the input model; choose another -o")
    if not outputs.onnx.parent.is_dir():
        raise OutputError(f"output folder {outputs.onnx.parent} does not exist")
    return outputs


def _nodes(model: onnx.ModelProto) -> list[SourceNode]:
    """What the op list and the name checks need of a graph's nodes."""
    return [SourceNode(n.name, n.op_type, tuple(n.output)) for n in model.graph.node]


def unmatched_names(config: Config, prepared_nodes: list[SourceNode]) -> list[str]:
    """Notes for --exclude/--hybrid names that match no node name or op type of the prepared model."""
    known = {n.name for n in prepared_nodes} | {n.op_type for n in prepared_nodes}
    return [
        f"{option} {name}: matches no node name or op type of the prepared model (onnxruntime's preparation"
        " rewrites some ops, e.g. HardSwish into HardSigmoid and Mul; the op list names what is there)"
        for option, names in (("--exclude", config.exclude), ("--hybrid", config.hybrid))
        for name in names
        if name not in known
    ]


def starting_recipe(config: Config, saved: SavedRanges | None) -> Recipe:
    """What the user asked; with ``--load-ranges``, plus what the saved run decided (its
    placements, its calibration method, its weight range unless this run names one). The saved
    ranges fit only a model rewritten as the saved one was, so the rewrites must match."""
    asked = Recipe.asked(config)
    if saved is None:
        return asked
    recorded, wanted = passes.recorded(saved.recipe), passes.asked(config)
    if recorded != wanted:
        raise UsageError(
            f"{config.load_ranges} holds ranges calibrated with {passes.describe(passes.recorded(saved.recipe, replayed_too=True))}, this run has"
            f" {passes.describe(wanted)}: the rescaled tensors' ranges fit only a model rewritten the same way"
            " (repeat those options, with -c where they need it, or calibrate anew)"
        )
    weight_range = saved.recipe.weight_range if config.weight_range == WeightRange.AUTO else asked.weight_range
    # The saved latency placement is repeated without measuring, unless this run turns the search off.
    keep_latency = config.latency_search
    placements = [p for p in saved.recipe.placements if keep_latency or p.reason != LATENCY]
    # The saved bias correction is repeated unless this run turns it off.
    shifts = () if config.bias_correction is False else saved.recipe.bias_shifts
    return asked.replace(
        calibration_method=saved.recipe.calibration_method, weight_range=weight_range,
        latency=saved.recipe.latency if keep_latency else None, bias_shifts=shifts,
    ).placed(*placements)  # fmt: skip


@dataclass
class Quantized:
    """A quantization stage's output: the int8 model, the plan's decisions per node, the recipe
    as the stage left it, the calibration samples used, and notes."""

    model: onnx.ModelProto
    decisions: dict[str, Decision]
    recipe: Recipe
    samples: int = 0
    notes: list[str] = field(default_factory=list)
    split: validation.Split | None = None
    held_out: Figures | None = None
    accuracy: targets.SearchResult | None = None
    saving: tuple[dict, Recipe] | None = None  # the ranges and recipe --save-ranges records


def sample_split(model: onnx.ModelProto, config: Config) -> validation.Split:
    """The fitting/validation split of the calibration samples (``tuning.validation``)."""
    available = Samples(config.calibration_data, input_specs(model), config.calibration_samples, config.image_format)
    # a Python source without len() is counted by reading it once (one sample at a time)
    return validation.split(available.count if available.count is not None else sum(1 for _ in available))


def quantize_with_ranges(
    model: onnx.ModelProto, config: Config, recipe: Recipe, saved: SavedRanges | None, progress: Progress,
    source: Path, split: validation.Split | None = None,
) -> Quantized:  # fmt: skip
    """Static mode: ranges (calibrated, or from the file), the scored choices, the latency
    placement (timed against ``source``, the input file), bias correction, then the QDQ model."""
    notes: list[str] = []
    plan = make_plan(model, config, recipe)
    # Outputs of int8 data-movement nodes and Softmax take no range of their own.
    needed = calibrated_tensors(model, plan)
    searching = config.latency_search and config.calibration_data is not None and saved is None
    if searching:  # and what placing convs float needs
        needed += latency.tensors_to_observe(model, config, recipe, plan)
    scoring = None  # made after the calibration pass, which has checked the samples
    score = math.nan  # of the int8 model as planned so far
    samples = 0
    method_note = None
    # Every measured choice below, and the fidelity check at the end, scores on held-out
    # validation samples the ranges are not fitted on (``tuning.validation``).
    fit = None
    if saved is None:
        split = split if split is not None else sample_split(model, config)
        fit = split.fit
        notes.append(split.describe())
    if saved is not None:
        ranges = saved.ranges(needed)
    elif config.calibration_method == CalibrationMethod.AUTO and _cross_validates(split, config, model):
        observers, samples = observe(
            model, needed, config.calibration_data, limit=config.calibration_samples,
            progress=steps(progress, "calibrate"), image_format=config.image_format, indices=fit,
        )  # fmt: skip
        folds = split.folds()  # every fold again, kept apart: the other folds' ranges for scoring each
        observations = observe_folds(
            model, needed, config.calibration_data, list(folds), limit=config.calibration_samples,
            progress=steps(progress, "calibrate folds"), image_format=config.image_format,
        )  # fmt: skip
        scoring = scoring_for(model, config, config.calibration_data, split)
        choice = choose_method_cross_validated(recipe, plan, observers, observations, folds, config, scoring,
                                               progress=steps(progress, "choose method"))  # fmt: skip
        del observations, observers
        ranges, recipe, score, method_note = choice.ranges, choice.recipe, choice.score, choice.describe()
    elif config.calibration_method == CalibrationMethod.AUTO:
        observers, samples = observe(
            model, needed, config.calibration_data, limit=config.calibration_samples,
            progress=steps(progress, "calibrate"), image_format=config.image_format, indices=fit, **_sharding(config),
        )  # fmt: skip
        scoring = scoring_for(model, config, config.calibration_data, split)
        choice = choose_method(recipe, plan, observers, config, scoring, progress=steps(progress, "choose method"))
        del observers
        ranges, recipe, score, method_note = choice.ranges, choice.recipe, choice.score, choice.describe()
    else:
        ranges, samples = calibrate(
            model, needed, config.calibration_data, method=config.calibration_method, percentile=config.percentile,
            limit=config.calibration_samples, progress=steps(progress, "calibrate"), image_format=config.image_format,
            indices=fit,
            **_sharding(config),
        )  # fmt: skip
        scoring = scoring_for(model, config, config.calibration_data, split)  # for the fidelity check if nothing else

    if config.weight_range == WeightRange.AUTO and scoring is not None:
        progress("choose weight range", 0, 0)
        if math.isnan(score):
            score = scoring.score_plan(plan, ranges, config)
        weight_choice = choose_weight_range(recipe, plan, ranges, config, scoring, score)
        recipe, plan, score = weight_choice.recipe, weight_choice.plan, weight_choice.score
        notes.append(weight_choice.describe())
    # else: ranges from a file (its recorded choice is in the recipe) or a model too large to score: min/max
    for enabled, stage, choose, describe in (
        (config.auto_hybrid, "choose hybrid", choose_hybrid, describe_hybrid),
        (config.auto_fallback, "choose fallback", choose_fallback, describe_fallback),
        (True, "guard layers before a log", guard_log_inputs, describe_guard),  # ptq.tuning.collapse
    ):
        if enabled and scoring is not None:
            progress(stage, 0, 0)
            if math.isnan(score):
                score = scoring.score_plan(plan, ranges, config)
            picked = choose(recipe, plan, ranges, config, scoring, score)
            recipe, plan, score = picked.recipe, picked.plan, picked.score
            if describe(picked):
                notes.append(describe(picked))
    if scoring is not None and saved is None:
        progress("bias correction", 0, 0)
        if math.isnan(score) and config.bias_correction is None:
            score = scoring.score_plan(plan, ranges, config)
        corrected = bias_correction.choose(recipe, plan, ranges, config, scoring, score, fit)
        recipe, plan, score = corrected.recipe, corrected.plan, corrected.score
        if corrected.describe():
            notes.append(corrected.describe())
    # else: a saved correction comes with the saved recipe, and make_plan hands it to the quantizer
    if searching:
        progress("latency placement", 0, 0)
        feed = scoring.feeds[0] if scoring is not None else first_sample(model, config)
        found = latency.search(
            model, recipe, plan, ranges, config, feed, source, config.latency_budget, progress, config.calibration_data
        )
        recipe, plan = found.recipe, found.plan
    if recipe.latency is not None:
        placed = sum(1 for p in recipe.placements if p.reason == LATENCY)
        notes.append(recipe.latency.summary(placed))
    held_out = search = None
    if scoring is not None:
        method_used = recipe.calibration_method

        def more_ranges(tensors: list[str]) -> dict:
            # what an accuracy placement needs beyond the plan's ranges: the same samples and method
            return calibrate(
                model, tensors, config.calibration_data, method=method_used, percentile=config.percentile,
                limit=config.calibration_samples, image_format=config.image_format, indices=fit,
            )[0]  # fmt: skip

        outcome = targets.ensure_fidelity(scoring, plan, ranges, config, recipe, progress, more_ranges)
        plan, recipe, ranges, held_out, search = outcome.plan, outcome.recipe, outcome.ranges, outcome.figures, outcome.search
        notes.extend(search.describe() if search is not None else [])
        smoothing = choose_smoothing(
            model, recipe, plan, ranges, config, scoring, fit, lambda done, total: progress("choose smoothquant", done, total)
        )
        if smoothing.smoothed:  # quantize the smoothed copy from here on (the same outputs in float)
            model.CopyFrom(smoothing.model)
            scoring = smoothing.scoring.with_model(model)
            plan, recipe, ranges = smoothing.plan, smoothing.recipe, smoothing.ranges
            held_out = targets.figures_for(scoring, plan, ranges, config, load_metric(config.metric))
        notes += [smoothing.describe()] if smoothing.describe() else []
        if search is None or smoothing.smoothed:
            what = "of the int8 placement (not written: see the latency note) " if _weights_only(recipe) else ""
            notes.append(f"fidelity {what}on {scoring.scored_on}: {held_out.describe()}")

    # What --save-ranges records (written by ``convert`` once the conversion to keep is picked).
    saving = (ranges, recipe) if config.save_ranges is not None else None
    progress("quantize", 0, 0)
    notes += [method_note] if method_note else []
    if _weights_only(recipe):
        # No int8 placement beat the original float model on this CPU: the fastest output that
        # still shrinks the file keeps float kernels with int8 weights (dynamic mode's Conv).
        # (bias correction was measured for int8 static kernels: the fallback does not carry it)
        recipe = recipe.replace(bias_shifts=(), bias_correction_scores=())
        fallback = quantize_dynamic(model, config, recipe.replace(placements=_without_latency(recipe.placements)))
        if scoring is not None:  # the figures every report gives are the written model's
            held_out = figures_of(scoring.names, scoring.reference, scoring.outputs(fallback.model), load_metric(config.metric))
            notes.append(f"fidelity of the written model (int8 weights, float kernels) on {scoring.scored_on}: {held_out.describe()}")
        del scoring
        return Quantized(fallback.model, fallback.decisions, recipe, samples, notes, split, held_out, search, saving)
    del scoring
    quantized = quantize_static(model, plan, ranges, config)
    return Quantized(quantized, plan.decisions, recipe, samples, notes, split, held_out, search, saving)


def _cross_validates(split: validation.Split | None, config: Config, model: onnx.ModelProto) -> bool:
    """Method auto scores by cross-validation where there is a held-out part, the calibration
    runs in this process (sharded runs keep one pass over the fitting part) and the model is
    small enough to score (``tuning.scoring``)."""
    return (split is not None and split.held_out and config.workers <= 1 and config.ray is None
            and byte_size(model) <= MAX_MODEL_BYTES)  # fmt: skip


def _weights_only(recipe: Recipe) -> bool:
    return recipe.latency is not None and recipe.latency.weights_only


def _without_latency(placements):
    return tuple(p for p in placements if p.reason != LATENCY)


def first_sample(model: onnx.ModelProto, config: Config) -> dict:
    """The first calibration sample (what the latency search times when nothing else read one)."""
    return next(iter(iter_samples(config.calibration_data, input_specs(model), 1, config.image_format)))


def _sharding(config: Config) -> dict:
    """The calibration pass's sharding options (``ptq.calibrate.shards``)."""
    return {"workers": config.workers, "ray_address": config.ray, "shared_dir": config.shared_dir}


def quantize_weights_only(model: onnx.ModelProto, config: Config, recipe: Recipe, progress: Progress) -> Quantized:
    """Dynamic mode: int8 weights, hybrid kernels; no samples, so nothing is scored."""
    notes = []
    if config.weight_range == WeightRange.AUTO:
        notes.append("weight range auto: minmax (dynamic mode has no samples to score candidates on)")
    progress("quantize", 0, 0)
    result = quantize_dynamic(model, config, recipe)
    return Quantized(result.model, result.decisions, recipe, 0, notes)


@dataclass(frozen=True)
class Written:
    oplist: OpList
    onnx_size: int
    ort_size: int | None
    notes: list[str]


def write_outputs(
    quantized: onnx.ModelProto,
    decisions: dict[str, Decision],
    source_nodes,
    prepared_nodes: list[SourceNode],
    outputs: OutputPaths,
    config: Config,
    progress: Progress,
    cleaned: dict[str, str] | None = None,
    inserted: dict[str, tuple[str, str]] | None = None,
) -> Written:
    """Serialize, read back what onnxruntime runs (the op list), write .onnx, .ort and
    .ops.json atomically together."""
    model_bytes = serialize(quantized, __version__, data_location=data_path(outputs.onnx).name)
    progress("analyze", 0, 0)
    oplist = build_oplist(source_nodes, prepared_nodes, decisions, optimized_graph(model_bytes), cleaned, inserted)
    progress("write", 0, 0)
    notes = []
    write_ort_file = config.write_ort
    if write_ort_file and model_bytes.external is not None:
        write_ort_file = False
        notes.append(f".ort not written: the ORT format holds at most 2 GB; the .onnx keeps its weights in {data_path(outputs.onnx).name}")
    with transaction():  # all outputs or none: renamed into place together at the end
        write_onnx(model_bytes, outputs.onnx)
        if write_ort_file:
            write_ort(model_bytes, outputs.ort)
        write_oplist(oplist, outputs.ops)
    ort_size = outputs.ort.stat().st_size if write_ort_file else None
    return Written(oplist, model_bytes.total_size, ort_size, notes)
