"""Command line: parse options, call the Python API (``ptq.convert``, ``ptq.measure``,
``ptq.compare``, ``ptq.bench``), print what it returns, and map errors to exit codes.

Options are grouped in ``--help`` by cloup (a maintained click extension: option groups and
command sections, no other dependency than click)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import textwrap
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import click
import cloup
from click.core import ParameterSource

from ptq import __version__
from ptq.config import DEFAULT_LATENCY_BUDGET_S, DEFAULT_LATENCY_THREADS, CalibrationMethod, Config, ImageFormat, OutputPaths, Scheme
from ptq.errors import EXIT_CODES, EXIT_GATE_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, PtqError, TargetMissedError, UsageError

EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(
    textwrap.fill(text, 78, initial_indent=f"  {code:>3}  ", subsequent_indent=" " * 7) for code, text in EXIT_CODES.items()
)
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _fail(message: str, code: int) -> None:
    click.echo(f"ptq: error: {message}", err=True)
    sys.exit(code)


def terminal_width() -> int | None:
    """Columns to fit: ``COLUMNS`` when set, else the terminal's; None (no wrapping) when output
    goes to a file or a pipe, where a line per figure is easier to grep."""
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return shutil.get_terminal_size((100, 24)).columns
    return None


class _Progress:
    """Stage messages and progress bars on stderr (silent with --quiet)."""

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
        if stage in self.BARS and total > 0:
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
        if self.stage != stage:  # a stage of unknown length (a Python data source without len()) says so once
            self._close()
            self.stage = stage
            click.echo(f"{self.LABELS.get(stage, self.BARS.get(stage, stage))}...", err=True)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        self.bar, self.stage, self.done = None, None, 0


@contextlib.contextmanager
def _errors_to_exit_codes(debug: bool, interrupted: str = "interrupted; nothing partial was written") -> Iterator[None]:
    """Map ``PtqError`` to its exit code, Ctrl-C to 130 (saying ``interrupted``), anything else to
    70, one line each; numpy's warnings (a NaN in a figure) never reach the terminal."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    except PtqError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail(interrupted, EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: one line, details with --debug
        if _interrupted(exc):
            _fail(interrupted, EXIT_INTERRUPTED)
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


def _given(name: str) -> bool:
    """Whether the user typed the option ``name`` (not its default)."""
    return click.get_current_context().get_parameter_source(name) not in (ParameterSource.DEFAULT, None)


# ------------------------------------------------------------------------------------ options

IMAGE_OPTIONS = ("input_size", "mean", "std", "layout", "channel_order")


def _image_options(title: str = "Images in data folders (.png/.jpg; ignored by .npz/.npy)"):
    return cloup.option_group(
        title,
        cloup.option("--input-size", metavar="HxW", help="Resize images to HxW [default: the model's fixed size]."),
        cloup.option("--mean", metavar="M[,M,M]", default="0,0,0", show_default=True,
                     help="Per-channel mean subtracted from pixels scaled to [0, 1]."),
        cloup.option("--std", metavar="S[,S,S]", default="1,1,1", show_default=True,
                     help="Per-channel std the pixels are divided by (after --mean)."),
        cloup.option("--layout", type=click.Choice(["auto", "nchw", "nhwc"]), default="auto", show_default=True,
                     help="Image input layout (auto: from the model's input shape)."),
        cloup.option("--channel-order", type=click.Choice(["rgb", "bgr"]), default="rgb", show_default=True,
                     help="Channel order of image inputs."),
    )  # fmt: skip


def _image_format(opts: dict, folders) -> ImageFormat:
    """Parse the image options (``--input-size 224x224 --mean 0.485,0.456,0.406``); refuse them when
    the data folders hold no image (they would be silently ignored)."""

    def floats(text: str, option: str) -> tuple[float, ...]:
        try:
            return tuple(float(v) for v in text.split(","))
        except ValueError:
            raise UsageError(f"{option} takes comma-separated numbers, got {text!r}") from None

    size = None
    if opts["input_size"]:
        try:
            h, w = (int(v) for v in opts["input_size"].lower().split("x"))
        except ValueError:
            raise UsageError(f"--input-size takes HxW (e.g. 224x224), got {opts['input_size']!r}") from None
        size = (h, w)
    fmt = ImageFormat(size, floats(opts["mean"], "--mean"), floats(opts["std"], "--std"), opts["layout"], opts["channel_order"])
    given = [f"--{name.replace('_', '-')}" for name in IMAGE_OPTIONS if _given(name)]
    folders = [Path(f) for f in folders if f is not None]
    if given and folders and not any(_holds_images(f) for f in folders):
        raise UsageError(
            f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to image files, and"
            f" {', '.join(map(str, folders))} hold{'s' if len(folders) == 1 else ''} none (.npz/.npy arrays are fed"
            " as they are): drop the option, or normalize the arrays before saving them"
        )
    return fmt


def _holds_images(folder: Path) -> bool:
    from ptq.calibrate.data import IMAGE_SUFFIXES

    if folder.is_file():
        return folder.suffix.lower() in IMAGE_SUFFIXES
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def _timing_options():
    return cloup.option_group(
        "Measurement",
        cloup.option("--no-bench", is_flag=True, help="Skip the latency measurement (size and fidelity are still reported)."),
        cloup.option("--threads", type=int, default=1, metavar="N", show_default=True, help="onnxruntime intra-op threads."),
        cloup.option("--runs", type=int, default=50, metavar="N", show_default=True, help="Timed runs per model (interleaved)."),
        cloup.option("--warmup", type=int, default=5, metavar="N", show_default=True, help="Untimed warm-up runs per model."),
        cloup.option("--per-layer", is_flag=True,
                     help="Also print the per-layer error table (SQNR of every layer vs float, worst first)."),
        cloup.option("--report", "reports", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
                     help="Write a report: .json (versioned schema), .md (PR comment) or .html (plots). Repeatable."),
    )  # fmt: skip


def _gate_options():
    return cloup.option_group(
        "Gates (exit 6 when a figure misses its threshold; outputs still written)",
        cloup.option("--max-size-ratio", type=float, metavar="R", help="int8 size / float size <= R."),
        cloup.option("--min-speedup", type=float, metavar="S", help="Median latency speedup >= S."),
        cloup.option("--min-cosine", type=float, metavar="C", help="Cosine similarity of outputs >= C."),
        cloup.option("--min-sqnr", type=float, metavar="DB", help="SQNR of outputs >= DB decibels."),
        cloup.option("--min-top1", type=float, metavar="P", help="Top-1 agreement >= P (a fraction, 0..1)."),
    )


def _console_options(verbose: bool = False):
    options = [
        cloup.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (and failed gates)."),
        cloup.option("--debug", is_flag=True, help="Show a traceback on internal errors."),
    ]
    if verbose:
        options.insert(1, cloup.option("-v", "--verbose", is_flag=True, help="List every float fallback node."))
    return cloup.option_group("Console", *options)


def _measure_options(opts: dict, samples_option: str):
    from ptq.report import MeasureOptions

    thresholds = {k: opts[k] for k in ("max_size_ratio", "min_speedup", "min_cosine", "min_sqnr", "min_top1")}
    reports = opts["reports"]
    return MeasureOptions(
        threads=opts["threads"], runs=opts["runs"], warmup=opts["warmup"], latency=not opts["no_bench"],
        layers=opts["per_layer"] or any(Path(p).suffix.lower() in (".html", ".json") for p in reports),
        samples=opts.get(samples_option), thresholds=thresholds,
    )  # fmt: skip


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


def _echo(text: str) -> None:
    from ptq.report.render import fit

    width = terminal_width()
    click.echo(fit(text, width) if width else text)


# ----------------------------------------------------------------------------------- commands


@cloup.group(context_settings=CONTEXT, epilog=EXIT_CODE_HELP)
@click.version_option(__version__, prog_name="ptq")
def main() -> None:
    """ptq: post-training int8 quantization of float32 ONNX models for onnxruntime.

    \b
    Examples:
      ptq convert model.onnx                      dynamic int8, no data needed
      ptq convert model.onnx -c samples/          static int8, calibrated on your samples
      ptq compare model.onnx model.int8.onnx --data held_out/
    """
    # A CI runner that cancels a job sends SIGTERM: treat it like Ctrl-C, so the temp files of
    # an unfinished conversion are removed and nothing partial is left.
    signal.signal(signal.SIGTERM, _terminate)
    notes = logging.getLogger("ptq")  # the sample reader's and loader's notes, on stderr
    notes.setLevel(logging.WARNING)
    if not any(isinstance(h, _NoteHandler) for h in notes.handlers):
        notes.addHandler(_NoteHandler())


class _NoteHandler(logging.Handler):
    """Log records as ``ptq: note: ...`` lines on the current stderr (click's, under test too)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"ptq: note: {record.getMessage()}", err=True)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


CONVERT_HELP = """Quantize MODEL (a float32 .onnx) to int8, then measure size, latency and
fidelity of float and int8 side by side.

\b
Examples:
  ptq convert model.onnx
      dynamic int8 (no data): weights int8, activations quantized at run time
  ptq convert model.onnx -c calib/ --eval-data held_out/
      static int8 calibrated on calib/; figures from the held-out samples
  ptq convert model.onnx -c photos/ --mean .485,.456,.406 --std .229,.224,.225
      images normalized as in training
  ptq convert model.onnx -c calib/ --min-cosine 0.99 --report out.html
      exit 6 when the outputs' cosine to float is below 0.99; an HTML report

Writes OUT (.onnx), OUT.ort and OUT.ops.json (what onnxruntime runs for every node)."""


@main.command("convert", help=CONVERT_HELP, short_help="Quantize a float32 ONNX model to int8 and measure it.",
              epilog=EXIT_CODE_HELP, align_option_groups=False)  # fmt: skip
@click.argument("model", type=click.Path(path_type=Path))
@cloup.option_group(
    "Input and output",
    cloup.option("-o", "--output", type=click.Path(path_type=Path), help="Quantized .onnx path [default: <stem>.int8.onnx beside MODEL]."),
    cloup.option("--no-ort", is_flag=True, help="Do not write the .ort flatbuffer."),
    cloup.option("--int8", "int8", is_flag=True, default=True, help="Quantize to int8 (the default and only target)."),
    cloup.option("--fp16", is_flag=True, help="Without -c: float16 weights that onnxruntime expands to float32 when it loads the model, instead of int8 (about half the size, float speed). With -c: the layers that stay float keep float16 weights that way."),
)  # fmt: skip
@cloup.option_group(
    "Calibration data (static int8; without -c: dynamic int8)",
    cloup.option("-c", "--calibration-data", type=click.Path(path_type=Path), metavar="PATH",
                 help="Folder (or one file) of .npz/.npy samples or .png/.jpg images."),
    cloup.option("--calibration-samples", type=int, metavar="N", help="Use only the first N samples."),
    cloup.option("--save-ranges", type=click.Path(path_type=Path), metavar="FILE", help="Write the calibrated ranges to FILE (JSON)."),
    cloup.option("--load-ranges", type=click.Path(path_type=Path), metavar="FILE",
                 help="Take ranges from FILE (from --save-ranges) instead of calibrating: static int8 without -c."),
    cloup.option("--workers", type=int, default=1, metavar="N", show_default=True,
                 help="Calibrate in N shards, each in its own process, and merge the observers (README)."),
    cloup.option("--ray", "ray_address", metavar="auto|ADDRESS",
                 help="Run the shards as Ray tasks on this cluster (pip install '.[ray]' in ptq's repository; data on shared storage)."),
    cloup.option("--shared-dir", type=click.Path(path_type=Path), metavar="DIR",
                 help="Folder every Ray node sees at the same path, for the model the shards read [default: temp]."),
)  # fmt: skip
@_image_options()
@cloup.option_group(
    "Quantization scheme",
    cloup.option("--weights", type=click.Choice([s.value for s in Scheme]), default="symmetric", show_default=True, help="int8 weight scheme."),
    cloup.option("--activations", type=click.Choice([s.value for s in Scheme]), default="asymmetric", show_default=True,
                 help="asymmetric = uint8 (fast on x86), symmetric = int8."),
    cloup.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scales per output channel or per tensor."),
    cloup.option("--reduce-range/--no-reduce-range", default=True, show_default=True,
                 help="7-bit weights, exact on every x86 CPU; 8-bit only for VNNI or ARM targets (README)."),
    cloup.option("--exclude", multiple=True, metavar="NAME|OP", help="Keep these nodes (name or op type) float. Repeatable."),
    cloup.option("--hybrid", multiple=True, metavar="NAME|OP",
                 help="Static int8: run these MatMul/Gemm nodes with hybrid kernels. Repeatable."),
)  # fmt: skip
@cloup.option_group(
    "Recipes (measured choices, float rewrites; -c: needs calibration data)",
    cloup.option("--calibration-method", type=click.Choice([m.value for m in CalibrationMethod]), default="auto", show_default=True,
                 help="-c: how activation ranges are chosen; auto scores percentile, minmax and mse and keeps the best."),
    cloup.option("--percentile", type=float, default=99.99, show_default=True, help="-c: tail kept by --calibration-method percentile."),
    cloup.option("--weight-range", type=click.Choice(["minmax", "mse", "auto"]), default="minmax", show_default=True,
                 help="Weight ranges: min/max, least squared error (mse), or auto (-c: mse where it gains 0.5 dB)."),
    cloup.option("--auto-hybrid/--no-auto-hybrid", default=True, show_default=True,
                 help="-c: run MatMul groups with hybrid kernels where that raises output SQNR."),
    cloup.option("--auto-smoothquant/--no-auto-smoothquant", default=True, show_default=True,
                 help="-c: SmoothQuant MatMul input groups where that raises held-out output SQNR 1 dB."),
    cloup.option("--auto-fallback", is_flag=True, help="-c: keep an elementwise op type float where that gains 1 dB (off: README)."),
    cloup.option("--bias-correction/--no-bias-correction", default=None,
                 help="-c: correct Conv/Gemm biases for their int8 weights' mean shift [default: where it gains 0.5 dB on validation]."),
    cloup.option("--equalize", is_flag=True, help="Cross-layer equalization of Conv pairs (pays with --per-tensor)."),
    cloup.option("--equalize-activations/--no-equalize-activations", default=None,
                 help="-c: equalize depthwise-conv inputs behind Conv -> HardSwish [default: where it gains 0.5 dB on validation]."),
    cloup.option("--smoothquant", type=float, default=None, metavar="ALPHA", help="-c: SmoothQuant with strength ALPHA (e.g. 0.5)."),
    cloup.option("--latency-search/--no-latency-search", default=None,
                 help="-c: time placements on this CPU, keep float the int8 convs that slow the model [default: on]."),
    cloup.option("--latency-budget", type=float, default=None, metavar="SECONDS",
                 help=f"-c: seconds the latency search may spend [default: {DEFAULT_LATENCY_BUDGET_S:g}]."),
    cloup.option("--latency-threads", default=None, metavar="N[,N]",
                 help="-c: thread counts you deploy with; the output must be no slower than float at each"
                      f" [default: {','.join(map(str, DEFAULT_LATENCY_THREADS))}]."),
)  # fmt: skip
@cloup.option_group(
    "Accuracy targets (-c: on held-out calibration samples; exit 8 when unreachable)",
    cloup.option("--target-cosine", type=float, metavar="C", help="Keep the fewest regions float (or hybrid) so that output cosine >= C."),
    cloup.option("--target-sqnr", type=float, metavar="DB", help="The same for output SQNR >= DB decibels."),
    cloup.option("--target-top1", type=float, metavar="P", help="The same for top-1 agreement >= P (a fraction)."),
    cloup.option("--metric", metavar="MODULE:FUNCTION",
                 help="Your metric: FUNCTION(reference, candidate) -> float, higher is better; each a list over samples of {output: array}."),
    cloup.option("--target-metric", type=float, metavar="X", help="The same for --metric >= X."),
)  # fmt: skip
@cloup.option_group(
    "Measurement data",
    cloup.option("--eval-data", type=click.Path(path_type=Path), metavar="PATH",
                 help="Held-out samples (calibration format) for the figures [default: the calibration samples, labelled"
                      " not held out; without -c: inputs synthesized from the model's input shapes]."),
    cloup.option("--eval-samples", type=int, metavar="N", help="Measure on the first N samples only."),
)  # fmt: skip
@_timing_options()
@_gate_options()
@_console_options(verbose=True)
def convert_cmd(model: Path, **opts) -> None:
    from ptq import runtime

    # The report runs the input and the output again, as the conversion's latency confirmation
    # did: one session cache for both (``ptq.runtime.SessionCache``).
    with runtime.reusing_sessions():
        _convert_and_measure(model, **opts)


def _convert_and_measure(model: Path, **opts) -> None:
    import ptq
    from ptq import report as reporting
    from ptq.api import convert
    from ptq.report.render import conversion_summary, layer_table

    quiet, debug = opts["quiet"], opts["debug"]
    if debug:
        logging.getLogger("ptq").setLevel(logging.DEBUG)
    measured = None
    with _errors_to_exit_codes(debug):
        if quiet and opts["verbose"]:
            raise UsageError("-q/--quiet and -v/--verbose contradict each other: choose one")
        if _given("auto_hybrid") and opts["calibration_data"] is None:
            raise UsageError("--auto-hybrid/--no-auto-hybrid act on calibration samples and need -c/--calibration-data")
        if _given("auto_smoothquant") and opts["calibration_data"] is None:
            raise UsageError("--auto-smoothquant/--no-auto-smoothquant act on calibration samples and need -c/--calibration-data")
        options = _measure_options(opts, "eval_samples")
        output = opts["output"]
        outputs = OutputPaths.for_output(output) if output else OutputPaths.default_for(model)
        reports = reporting.check_report_paths(opts["reports"], protected=[model, *outputs.all()])
        wants_figures = not quiet or bool(reports) or bool(options.thresholds)
        image_format = _image_format(opts, [opts["calibration_data"], opts["eval_data"]])
        eval_data = opts["eval_data"]
        data = (  # read and checked before converting: a bad folder fails in seconds, not after the conversion
            reporting.choose_data(model, eval_data=eval_data, samples=opts["eval_samples"], image_format=image_format)
            if wants_figures and eval_data
            else None
        )
        config = Config(
            output=output,
            calibration_data=opts["calibration_data"],
            weights=opts["weights"],
            activations=opts["activations"],
            per_channel=opts["per_channel"],
            reduce_range=opts["reduce_range"],
            exclude=tuple(opts["exclude"]),
            hybrid=tuple(opts["hybrid"]),
            calibration_samples=opts["calibration_samples"],
            smoothquant=opts["smoothquant"],
            weight_range=opts["weight_range"],
            equalize=opts["equalize"],
            equalize_activations=opts["equalize_activations"],
            auto_hybrid=opts["auto_hybrid"],
            auto_smoothquant=opts["auto_smoothquant"],
            bias_correction=opts["bias_correction"],
            auto_fallback=opts["auto_fallback"],
            calibration_method=opts["calibration_method"],
            image_format=image_format,
            percentile=opts["percentile"],
            save_ranges=opts["save_ranges"],
            load_ranges=opts["load_ranges"],
            write_ort=not opts["no_ort"],
            fp16=opts["fp16"],
            **({} if opts["latency_search"] is None else {"latency_search": opts["latency_search"]}),
            **({} if opts["latency_budget"] is None else {"latency_budget": opts["latency_budget"]}),
            **({} if opts["latency_threads"] is None else {"latency_threads": _thread_counts(opts["latency_threads"])}),
            target_cosine=opts["target_cosine"],
            target_sqnr=opts["target_sqnr"],
            target_top1=opts["target_top1"],
            metric=opts["metric"],
            target_metric=opts["target_metric"],
            workers=opts["workers"],
            ray=opts["ray_address"],
            shared_dir=opts["shared_dir"],
        )
        result = convert(model, config, progress=_Progress(quiet))
    from ptq.report.render import written_files

    written = ", ".join(str(p) for p in written_files(result))
    with _errors_to_exit_codes(debug, interrupted=f"interrupted while measuring; the outputs are complete: {written}"):
        if wants_figures:
            try:
                measured = ptq.measure(result, data, calibration_data=config.calibration_data,
                                             image_format=image_format, options=options, progress=_Progress(quiet))  # fmt: skip
            except PtqError as exc:
                exc.args = (f"the outputs were written, but measuring them failed: {exc}",)
                raise
            _write_reports(measured, reports)
        if not quiet:
            _echo(conversion_summary(result, opts["verbose"], measured))
            if opts["per_layer"] and measured is not None:
                _echo(layer_table(measured))
        if measured is not None:
            _finish(measured, reports, quiet)
        if result.accuracy is not None and not result.accuracy.met:
            raise TargetMissedError(
                f"target {result.accuracy.target.describe()} not met on {result.accuracy.scored_on}; the best placement"
                f" found was written ({result.accuracy.figures.describe()})"
            )


@main.command(epilog=EXIT_CODE_HELP, short_help="Size, latency and fidelity of model B against model A.")
@click.argument("model_a", metavar="A", type=click.Path(path_type=Path))
@click.argument("model_b", metavar="B", type=click.Path(path_type=Path))
@cloup.option_group(
    "Measurement data",
    cloup.option("--data", type=click.Path(path_type=Path), metavar="PATH",
                 help="Samples (calibration format: .npz/.npy/images) to run both models on [default: inputs"
                      " synthesized from A's input shapes, labelled so]."),
    cloup.option("--samples", type=int, metavar="N", help="Measure on the first N samples only."),
)  # fmt: skip
@_image_options()
@_timing_options()
@_gate_options()
@_console_options()
def compare(model_a: Path, model_b: Path, **opts) -> None:
    """Size, latency and fidelity of B against A (the reference), e.g. last release vs this build,
    on the same inputs; the same table, reports and gates as convert."""
    import ptq
    from ptq import report as reporting
    from ptq.report.render import layer_table, text_table

    quiet = opts["quiet"]
    with _errors_to_exit_codes(opts["debug"]):
        options = _measure_options(opts, "samples")
        reports = reporting.check_report_paths(opts["reports"], protected=[model_a, model_b])
        image_format = _image_format(opts, [opts["data"]])
        report = ptq.compare(model_a, model_b, opts["data"], image_format=image_format, options=options,
                             progress=_Progress(quiet))  # fmt: skip
        _write_reports(report, reports)
        if not quiet:
            _echo(f"ptq {__version__} compare\n{text_table(report)}")
            if opts["per_layer"]:
                _echo(layer_table(report))
        _finish(report, reports, quiet)


@main.command(epilog=EXIT_CODE_HELP, short_help="What a model holds and which of its ops run int8.")
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
        if as_json:
            click.echo(json.dumps(json_safe(info.to_json()), indent=1))
        else:
            _echo(inspect_text(info))


@main.command(epilog=EXIT_CODE_HELP, short_help="Latency only: several models timed interleaved.")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@cloup.option_group(
    "Measurement data",
    cloup.option("--data", type=click.Path(path_type=Path), metavar="PATH",
                 help="Time on the first sample of PATH [default: an input synthesized from the first model's input shapes]."),
)  # fmt: skip
@_image_options()
@cloup.option_group(
    "Measurement",
    cloup.option("--threads", type=int, default=1, metavar="N", show_default=True, help="onnxruntime intra-op threads."),
    cloup.option("--runs", type=int, default=50, metavar="N", show_default=True, help="Timed runs per model (interleaved)."),
    cloup.option("--warmup", type=int, default=5, metavar="N", show_default=True, help="Untimed warm-up runs per model."),
    cloup.option("--report", "reports", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
                 help="Write a report: .json, .md or .html. Repeatable."),
)  # fmt: skip
@_console_options()
def bench(models, **opts) -> None:
    """Latency only: every MODEL in one process, warmed up, then timed interleaved."""
    import ptq
    from ptq import report as reporting
    from ptq.report.render import bench_table

    quiet = opts["quiet"]
    with _errors_to_exit_codes(opts["debug"]):
        options = reporting.MeasureOptions(threads=opts["threads"], runs=opts["runs"], warmup=opts["warmup"], fidelity=False)
        reports = reporting.check_report_paths(opts["reports"], protected=models)
        image_format = _image_format(opts, [opts["data"]])
        report = ptq.bench(models, opts["data"], image_format=image_format, options=options, progress=_Progress(quiet))
        _write_reports(report, reports)
        if not quiet:
            _echo(f"ptq {__version__} bench\n{bench_table(report)}")
        _finish(report, reports, quiet)


def _thread_counts(text: str) -> tuple[int, ...]:
    """``--latency-threads 1,2`` -> (1, 2); anything else is a usage error."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--latency-threads takes comma-separated thread counts, got {text!r}") from None
    return counts


from ptq.fleet.command import run as _run  # noqa: E402  (ptq run: the fleet of a project file)

main.add_command(_run)

if __name__ == "__main__":  # pragma: no cover
    main()
