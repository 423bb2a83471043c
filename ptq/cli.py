"""Command line: parse options into a Config, call the API, print, and map errors to exit codes."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import click

from ptq import __version__
from ptq.api import ConvertResult, convert
from ptq.config import CalibrationMethod, Config, ImageFormat, OutputPaths, Scheme
from ptq.errors import EXIT_CODES, EXIT_GATE_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, PtqError, UsageError

EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


def _fail(message: str, code: int) -> None:
    click.echo(f"ptq: error: {message}", err=True)
    sys.exit(code)


class _Progress:
    """Stage messages and a calibration progress bar on stderr (silent with --quiet)."""

    LABELS: ClassVar[dict[str, str]] = {
        "load": "Loading and preparing the model",
        "quantize": "Quantizing",
        "analyze": "Reading back what onnxruntime runs",
        "write": "Writing outputs",
    }
    BARS: ClassVar[dict[str, str]] = {
        "calibrate": "Calibrating",
        "fidelity": "Comparing outputs",
        "layers": "Comparing every layer",
        "time": "Timing (interleaved)",
    }

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.stage = None
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage in self.BARS:
            if self.stage != stage:
                self._close()
                self.bar = click.progressbar(length=total, label=self.BARS[stage], file=sys.stderr, show_eta=True)
                self.bar.__enter__()
                self.stage, self.done = stage, 0
            self.bar.update(done - self.done)
            self.done = done
            if done >= total:
                self._close()
            return
        click.echo(f"{self.LABELS.get(stage, stage)}...", err=True)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        self.bar, self.stage, self.done = None, None, 0


@contextlib.contextmanager
def _errors_to_exit_codes(debug: bool) -> Iterator[None]:
    """Map ``PtqError`` to its exit code, Ctrl-C to 130, anything else to 70 (one line each)."""
    try:
        yield
    except PtqError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; nothing partial was written", EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: one line, details with --debug
        if _interrupted(exc):
            _fail("interrupted; nothing partial was written", EXIT_INTERRUPTED)
        if debug:
            traceback.print_exc()
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)", EXIT_INTERNAL)


def _interrupted(exc: BaseException) -> bool:
    """True when a Ctrl-C/SIGTERM caused ``exc``: a library that catches it mid-import or
    mid-call and raises its own error leaves the KeyboardInterrupt in the exception chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _image_format(input_size, mean, std, layout, channel_order) -> ImageFormat:
    """Parse the image options (``--input-size 224x224 --mean 0.485,0.456,0.406``)."""

    def floats(text: str, option: str) -> tuple[float, ...]:
        try:
            return tuple(float(v) for v in text.split(","))
        except ValueError:
            raise UsageError(f"{option} takes comma-separated numbers, got {text!r}") from None

    size = None
    if input_size:
        try:
            h, w = (int(v) for v in input_size.lower().split("x"))
        except ValueError:
            raise UsageError(f"--input-size takes HxW (e.g. 224x224), got {input_size!r}") from None
        size = (h, w)
    return ImageFormat(size, floats(mean, "--mean"), floats(std, "--std"), layout, channel_order)


def _measure_options(f):
    """Options shared by convert, compare and bench: how latency is measured, and report files."""
    options = [
        click.option("--threads", type=int, default=1, metavar="N", show_default=True, help="onnxruntime intra-op threads for every measurement."),
        click.option("--runs", type=int, default=50, metavar="N", show_default=True, help="Timed runs per model (interleaved)."),
        click.option("--warmup", type=int, default=5, metavar="N", show_default=True, help="Untimed warm-up runs per model."),
        click.option("--report", "reports", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
                     help="Write a report: .json (versioned schema), .md (PR comment) or .html (plots). Repeatable."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _per_layer_option(f):
    return click.option(
        "--per-layer",
        is_flag=True,
        help="Also print the per-layer error table: SQNR of every layer's output vs float, worst first"
        " (always in .json/.html reports).",
    )(f)


def _gate_options(f):
    """CI gates: exit code 6 when a figure misses its threshold (the report is still written)."""
    options = [
        click.option("--max-size-ratio", type=float, metavar="R", help="Gate: candidate size / reference size <= R."),
        click.option("--min-speedup", type=float, metavar="S", help="Gate: median latency speedup >= S."),
        click.option("--min-cosine", type=float, metavar="C", help="Gate: cosine similarity of outputs >= C."),
        click.option("--min-sqnr", type=float, metavar="DB", help="Gate: SQNR of outputs >= DB decibels."),
        click.option("--min-top1", type=float, metavar="P", help="Gate: top-1 agreement >= P (a fraction, 0..1)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _thresholds(max_size_ratio, min_speedup, min_cosine, min_sqnr, min_top1) -> dict:
    return {
        "max_size_ratio": max_size_ratio,
        "min_speedup": min_speedup,
        "min_cosine": min_cosine,
        "min_sqnr": min_sqnr,
        "min_top1": min_top1,
    }


def _wants_layers(reports) -> bool:
    return any(Path(p).suffix.lower() in (".html", ".json") for p in reports)


def _write_reports(report, reports) -> None:
    """Write the report files (before anything is printed: a closed stdout must not lose them)."""
    from ptq.report import write_report

    for path in reports:
        write_report(report, path)


def _finish(report, reports, quiet: bool) -> None:
    """Name the written report files; on a failed gate print the failing lines and exit 6."""
    if not quiet:
        for path in reports:
            click.echo(f"  report {path}")
    if report.failed_gates:
        for gate in report.failed_gates:
            click.echo(f"ptq: gate failed: {gate.message}", err=True)
        sys.exit(EXIT_GATE_FAILED)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODE_HELP)
@click.version_option(__version__, prog_name="ptq")
def main() -> None:
    """ptq: post-training int8 quantization of float32 ONNX models for onnxruntime."""
    # A CI runner that cancels a job sends SIGTERM: treat it like Ctrl-C, so the temp files of
    # an unfinished conversion are removed and nothing partial is left.
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


@main.command(epilog=EXIT_CODE_HELP)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Quantized .onnx path [default: <stem>.int8.onnx beside MODEL].")
@click.option("--int8", "int8", is_flag=True, default=True, help="Quantize to int8 (the default and only target).")
@click.option("-c", "--calibration-data", type=click.Path(path_type=Path), help="Folder of .npz/.npy samples: static full int8. Without it: dynamic (hybrid) int8.")
@click.option("--weights", type=click.Choice([s.value for s in Scheme]), default="symmetric", show_default=True, help="int8 weight scheme.")
@click.option("--activations", type=click.Choice([s.value for s in Scheme]), default="asymmetric", show_default=True, help="Activation scheme: asymmetric = uint8 (fast on x86), symmetric = int8.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scales per output channel or per tensor.")
@click.option("--reduce-range/--no-reduce-range", default=True, show_default=True, help="7-bit weights: exact on every x86 CPU. --no-reduce-range gives 8-bit weights, only for targets with VNNI or ARM (see README).")
@click.option("--exclude", multiple=True, metavar="NAME_OR_OP_TYPE", help="Keep these nodes (by name or op type) float. Repeatable.")
@click.option("--hybrid", multiple=True, metavar="NAME_OR_OP_TYPE", help="Run these MatMul/Gemm nodes with hybrid kernels (activations quantized at run time) in static mode. Repeatable.")
@click.option("--calibration-samples", type=int, metavar="N", help="Use only the first N calibration samples.")
@click.option("--equalize", is_flag=True, help="Cross-layer equalization of Conv -> [Relu] -> Conv pairs, exact in float; pays with --per-tensor weights (off by default: see README).")
@click.option("--equalize-activations", is_flag=True, help="Static mode: equalize the per-channel ranges of depthwise-conv inputs behind Conv -> HardSwish blocks (MobileNetV3/PP-LCNet), exact in float; adds one float Mul per block (see README).")
@click.option("--weight-range", type=click.Choice(["minmax", "mse", "auto"]), default="minmax", show_default=True, help="Per-channel weight ranges: min/max, the clipping with the least squared weight error (mse), or auto: mse where it raises output SQNR on the calibration samples by 0.5 dB (static mode; see README).")
@click.option("--smoothquant", "smoothquant", type=float, default=None, metavar="ALPHA", help="SmoothQuant with strength ALPHA (e.g. 0.5) for MatMuls fed by a constant Mul (transformer GELU -> down-projection); static mode. Off by default (no measured gain, see README).")
@click.option("--bias-correction", "bias_correction", is_flag=True, help="Static mode: correct Conv/Gemm biases for the mean output shift of their int8 weights (off by default: helps some models, hurts others; see README).")
@click.option("--auto-fallback", "auto_fallback", is_flag=True, help="Static mode: keep an op type of int8 elementwise nodes float where that raises output SQNR on the calibration samples by 1 dB (off by default, see README).")
@click.option("--auto-hybrid/--no-auto-hybrid", default=True, show_default=True, help="Static mode: run groups of MatMuls with hybrid kernels where that measurably raises output SQNR on the calibration samples.")
@click.option("--input-size", metavar="HxW", help="Images (.png/.jpg) in the data folders are resized to HxW [default: the model's fixed size].")
@click.option("--mean", metavar="M[,M,M]", default="0,0,0", show_default=True, help="Per-channel mean subtracted from images scaled to [0, 1].")
@click.option("--std", metavar="S[,S,S]", default="1,1,1", show_default=True, help="Per-channel std images are divided by (after --mean).")
@click.option("--layout", type=click.Choice(["auto", "nchw", "nhwc"]), default="auto", show_default=True, help="Image input layout (auto: from the model's input shape).")
@click.option("--channel-order", type=click.Choice(["rgb", "bgr"]), default="rgb", show_default=True, help="Channel order of image inputs.")
@click.option("--calibration-method", type=click.Choice([m.value for m in CalibrationMethod]), default="auto", show_default=True, help="How activation ranges are chosen from the calibration data; auto scores percentile, minmax and mse on the calibration samples and keeps the best (see README).")
@click.option("--save-ranges", type=click.Path(path_type=Path), metavar="FILE", help="Write the calibrated ranges to FILE (JSON).")
@click.option("--load-ranges", type=click.Path(path_type=Path), metavar="FILE", help="Take ranges from FILE (from --save-ranges) instead of calibrating: static mode without -c.")
@click.option("--percentile", type=float, default=99.99, show_default=True, help="Tail kept by --calibration-method percentile.")
@click.option("--no-ort", is_flag=True, help="Do not write the .ort flatbuffer.")
@click.option("--eval-data", type=click.Path(path_type=Path), metavar="DIR", help="Folder of .npz/.npy samples or images (calibration format) to measure fidelity and latency on [default: the calibration samples, labelled so; in dynamic mode without data: inputs synthesized from the model's input shapes].")
@click.option("--eval-samples", type=int, metavar="N", help="Measure on the first N samples only.")
@click.option("--no-bench", is_flag=True, help="Skip the latency measurement (size and fidelity are still reported).")
@_measure_options
@_per_layer_option
@_gate_options
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (and failed gates).")
@click.option("-v", "--verbose", is_flag=True, help="List every float fallback node.")
@click.option("--debug", is_flag=True, help="Show a traceback on internal errors.")
def convert_cmd(model, output, int8, calibration_data, weights, activations, per_channel, reduce_range, exclude,
                hybrid, calibration_samples, equalize, equalize_activations, weight_range, smoothquant, bias_correction, auto_fallback, auto_hybrid, input_size, mean, std, layout, channel_order, calibration_method, save_ranges, load_ranges, percentile, no_ort, eval_data, eval_samples, no_bench,
                threads, runs, warmup, reports, per_layer, max_size_ratio, min_speedup, min_cosine, min_sqnr, min_top1,
                quiet, verbose, debug) -> None:  # fmt: skip
    """Quantize MODEL (a float32 .onnx) to int8; writes OUT, OUT's .ort and .ops.json, then measures
    size, latency (float and int8 interleaved) and fidelity side by side, checks the gates and
    writes the --report files."""
    from ptq import report as reporting

    logging.basicConfig(level=logging.WARNING if not debug else logging.DEBUG, format="ptq: %(message)s")
    measured = None
    with _errors_to_exit_codes(debug):
        options = reporting.MeasureOptions(
            threads=threads, runs=runs, warmup=warmup, latency=not no_bench, layers=per_layer or _wants_layers(reports),
            samples=eval_samples, thresholds=_thresholds(max_size_ratio, min_speedup, min_cosine, min_sqnr, min_top1),
        )  # fmt: skip
        outputs = OutputPaths.for_output(output) if output else OutputPaths.default_for(model)
        reports = reporting.check_report_paths(reports, protected=[model, *outputs.all()])
        measure = not quiet or bool(reports) or bool(options.thresholds)
        image_format = _image_format(input_size, mean, std, layout, channel_order)
        data = (
            reporting.choose_data(model, eval_data=eval_data, samples=eval_samples, image_format=image_format)
            if measure and eval_data
            else None
        )
        config = Config(
            output=output,
            calibration_data=calibration_data,
            weights=weights,
            activations=activations,
            per_channel=per_channel,
            reduce_range=reduce_range,
            exclude=tuple(exclude),
            hybrid=tuple(hybrid),
            calibration_samples=calibration_samples,
            smoothquant=smoothquant,
            weight_range=weight_range,
            equalize=equalize,
            equalize_activations=equalize_activations,
            auto_hybrid=auto_hybrid,
            bias_correction=bias_correction,
            auto_fallback=auto_fallback,
            calibration_method=calibration_method,
            image_format=image_format,
            percentile=percentile,
            save_ranges=save_ranges,
            load_ranges=load_ranges,
            write_ort=not no_ort,
        )
        result = convert(model, config, progress=_Progress(quiet))
    with _errors_to_exit_codes(debug):
        if measure:
            try:
                if data is None:
                    data = reporting.choose_data(
                        model, calibration_data=calibration_data, samples=eval_samples, image_format=image_format
                    )
                measured = reporting.report_conversion(result, data, options, progress=_Progress(quiet))
            except PtqError as exc:
                exc.args = (f"the outputs were written, but measuring them failed: {exc}",)
                raise
            _write_reports(measured, reports)
        if not quiet:
            click.echo(render_summary(result, verbose, measured))
            if per_layer and measured is not None:
                from ptq.report.render import layer_table

                click.echo(layer_table(measured))
        if measured is not None:
            _finish(measured, reports, quiet)


convert_cmd.name = "convert"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def render_summary(result: ConvertResult, verbose: bool = False, measured=None) -> str:
    """Terminal summary of a conversion: files, sizes, kernels, float fallbacks; with ``measured``
    (a ``ptq.report.Report``) the size/latency/fidelity table and the gates."""
    counts = result.oplist.summary()
    mode = "static int8" if result.mode == "static" else "dynamic int8 (hybrid, no calibration data)"
    lines = [f"ptq {__version__}: {result.source} -> {result.outputs.onnx}  [{mode}]"]
    lines += [f"  note: {n}" for n in result.notes]
    if result.mode == "static":
        lines.append(f"  calibrated on {result.calibration_samples} samples ({result.calibration_method})")
    ran = counts["int8"] + counts["hybrid"] + counts["float"]
    if measured is None:
        lines.append(
            f"  size   float {_mb(result.float_size_bytes)} -> int8 {_mb(result.int8_size_bytes)}"
            f"  ({result.size_ratio:.2f}x)"
            + (f";  .ort {_mb(result.ort_size_bytes)}" if result.ort_size_bytes is not None else "")
        )
        lines.append(
            f"  nodes  {counts['int8']} int8, {counts['hybrid']} hybrid, {counts['float']} float"
            f" of {ran} that run ({counts['folded']} folded away by onnxruntime before quantization)"
        )
    else:
        from ptq.report.render import text_table

        lines.append(text_table(measured))
    fallbacks = result.oplist.float_fallbacks()
    if fallbacks:
        lines.append("  float fallbacks:")
        if verbose:
            lines += [f"    {e.name} ({e.op_type}): {e.reason}" for e in fallbacks]
        else:
            for group in result.oplist.grouped_fallbacks():  # by op type and reason template
                lines.append(f"    {group.count:>4} x {group.describe()}")
    written = [result.outputs.onnx] + ([result.outputs.ort] if result.ort_size_bytes is not None else []) + [result.outputs.ops]
    lines.append("  wrote  " + ", ".join(str(p) for p in written))
    lines.append(f"  took   {result.seconds:.1f} s")
    return "\n".join(lines)


@main.command(epilog=EXIT_CODE_HELP)
@click.argument("model_a", metavar="A", type=click.Path(path_type=Path))
@click.argument("model_b", metavar="B", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), metavar="DIR", help="Folder of .npz/.npy samples to run both models on [default: inputs synthesized from A's input shapes, labelled so].")
@click.option("--samples", type=int, metavar="N", help="Measure on the first N samples only.")
@click.option("--no-bench", is_flag=True, help="Skip the latency measurement.")
@_measure_options
@_per_layer_option
@_gate_options
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (and failed gates).")
@click.option("--debug", is_flag=True, help="Show a traceback on internal errors.")
def compare(model_a, model_b, data, samples, no_bench, threads, runs, warmup, reports, per_layer, max_size_ratio,
            min_speedup, min_cosine, min_sqnr, min_top1, quiet, debug) -> None:  # fmt: skip
    """Size, latency and fidelity of B against A (the reference), e.g. last release vs this build,
    on the same inputs; the same table, reports and gates as convert."""
    from ptq import report as reporting
    from ptq.report.render import layer_table, text_table

    with _errors_to_exit_codes(debug):
        options = reporting.MeasureOptions(
            threads=threads, runs=runs, warmup=warmup, latency=not no_bench, layers=per_layer or _wants_layers(reports),
            samples=samples, thresholds=_thresholds(max_size_ratio, min_speedup, min_cosine, min_sqnr, min_top1),
        )  # fmt: skip
        reports = reporting.check_report_paths(reports, protected=[model_a, model_b])
        report = reporting.report_comparison(model_a, model_b, data, options, progress=_Progress(quiet))
        _write_reports(report, reports)
        if not quiet:
            click.echo(f"ptq {__version__} compare")
            click.echo(text_table(report))
            if per_layer:
                click.echo(layer_table(report))
        _finish(report, reports, quiet)


@main.command(epilog=EXIT_CODE_HELP)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option("--no-ort", is_flag=True, help="Do not ask onnxruntime which nodes it runs int8.")
@click.option("--debug", is_flag=True, help="Show a traceback on internal errors.")
def inspect(model, as_json, no_ort, debug) -> None:
    """What MODEL holds: op histogram, parameters and bytes by op type, which ops onnxruntime can run
    int8, whether it is already quantized, opset and IR version, inputs and outputs."""
    import json

    from ptq.report import inspect_model
    from ptq.report.build import json_safe
    from ptq.report.render import inspect_text

    with _errors_to_exit_codes(debug):
        info = inspect_model(model, run_onnxruntime=not no_ort)
        click.echo(json.dumps(json_safe(info.to_json()), indent=1) if as_json else inspect_text(info))


@main.command(epilog=EXIT_CODE_HELP)
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), metavar="DIR", help="Time on the first sample of this folder [default: an input synthesized from the first model's input shapes].")
@_measure_options
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--debug", is_flag=True, help="Show a traceback on internal errors.")
def bench(models, data, threads, runs, warmup, reports, quiet, debug) -> None:
    """Latency only: every MODEL in one process, warmed up, then timed interleaved."""
    from ptq import report as reporting
    from ptq.report.render import bench_table

    with _errors_to_exit_codes(debug):
        options = reporting.MeasureOptions(threads=threads, runs=runs, warmup=warmup, fidelity=False)
        reports = reporting.check_report_paths(reports, protected=models)
        report = reporting.report_bench(models, data, options, progress=_Progress(quiet))
        _write_reports(report, reports)
        if not quiet:
            click.echo(f"ptq {__version__} bench")
            click.echo(bench_table(report))
        _finish(report, reports, quiet)


if __name__ == "__main__":  # pragma: no cover
    main()
