"""Command line: parse options into a Config, call the API, print, and map errors to exit codes."""

from __future__ import annotations

import logging
import sys
import traceback
from collections import Counter
from pathlib import Path

import click

from ptq import __version__
from ptq.api import ConvertResult, convert
from ptq.config import CalibrationMethod, Config, Scheme
from ptq.errors import EXIT_CODES, EXIT_INTERNAL, PtqError

EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int) -> None:
    click.echo(f"ptq: error: {message}", err=True)
    sys.exit(code)


class _Progress:
    """Stage messages and a calibration progress bar on stderr (silent with --quiet)."""

    LABELS = {
        "load": "Loading and preparing the model",
        "quantize": "Quantizing",
        "analyze": "Reading back what onnxruntime runs",
        "write": "Writing outputs",
    }

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage == "calibrate":
            if self.bar is None:
                self.bar = click.progressbar(length=total, label="Calibrating", file=sys.stderr, show_eta=True)
                self.bar.__enter__()
            self.bar.update(done - self.done)
            self.done = done
            if done >= total:
                self.bar.__exit__(None, None, None)
            return
        click.echo(f"{self.LABELS.get(stage, stage)}...", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODE_HELP)
@click.version_option(__version__, prog_name="ptq")
def main() -> None:
    """ptq: post-training int8 quantization of float32 ONNX models for onnxruntime."""


@main.command(epilog=EXIT_CODE_HELP)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Quantized .onnx path [default: <stem>.int8.onnx beside MODEL].")
@click.option("--int8", "int8", is_flag=True, default=True, help="Quantize to int8 (the default and only target).")
@click.option("-c", "--calibration-data", type=click.Path(path_type=Path), help="Folder of .npz/.npy samples: static full int8. Without it: dynamic (hybrid) int8.")
@click.option("--weights", type=click.Choice([s.value for s in Scheme]), default="symmetric", show_default=True, help="int8 weight scheme.")
@click.option("--activations", type=click.Choice([s.value for s in Scheme]), default="asymmetric", show_default=True, help="Activation scheme: asymmetric = uint8 (fast on x86), symmetric = int8.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scales per output channel or per tensor.")
@click.option("--reduce-range", is_flag=True, help="7-bit weights, for x86 CPUs without VNNI (see README).")
@click.option("--exclude", multiple=True, metavar="NAME_OR_OP_TYPE", help="Keep these nodes (by name or op type) float. Repeatable.")
@click.option("--hybrid", multiple=True, metavar="NAME_OR_OP_TYPE", help="Run these MatMul/Gemm nodes with hybrid kernels (activations quantized at run time) in static mode. Repeatable.")
@click.option("--calibration-samples", type=int, metavar="N", help="Use only the first N calibration samples.")
@click.option("--calibration-method", type=click.Choice([m.value for m in CalibrationMethod]), default="minmax", show_default=True, help="How activation ranges are chosen from the calibration data.")
@click.option("--percentile", type=float, default=99.99, show_default=True, help="Tail kept by --calibration-method percentile.")
@click.option("--no-ort", is_flag=True, help="Do not write the .ort flatbuffer.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("-v", "--verbose", is_flag=True, help="List every float fallback node.")
@click.option("--debug", is_flag=True, help="Show a traceback on internal errors.")
def convert_cmd(model, output, int8, calibration_data, weights, activations, per_channel, reduce_range, exclude,
                hybrid, calibration_samples, calibration_method, percentile, no_ort, quiet, verbose, debug) -> None:  # fmt: skip
    """Quantize MODEL (a float32 .onnx) to int8; writes OUT, OUT's .ort and .ops.json."""
    logging.basicConfig(level=logging.WARNING if not debug else logging.DEBUG, format="ptq: %(message)s")
    try:
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
            calibration_method=calibration_method,
            percentile=percentile,
            write_ort=not no_ort,
        )
        result = convert(model, config, progress=_Progress(quiet))
    except PtqError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; no output was written", EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: one line, details with --debug
        if debug:
            traceback.print_exc()
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)", EXIT_INTERNAL)
    if not quiet:
        click.echo(render_summary(result, verbose))


convert_cmd.name = "convert"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def render_summary(result: ConvertResult, verbose: bool = False) -> str:
    """Terminal summary of a conversion: files, sizes, kernels, float fallbacks."""
    counts = result.oplist.summary()
    mode = "static int8" if result.mode == "static" else "dynamic int8 (hybrid, no calibration data)"
    lines = [f"ptq {__version__}: {result.source} -> {result.outputs.onnx}  [{mode}]"]
    lines += [f"  note: {n}" for n in result.notes]
    if result.mode == "static":
        lines.append(f"  calibrated on {result.calibration_samples} samples ({result.calibration_method})")
    lines.append(
        f"  size   float {_mb(result.float_size_bytes)} -> int8 {_mb(result.int8_size_bytes)}"
        f"  ({result.size_ratio:.2f}x)"
        + (f";  .ort {_mb(result.ort_size_bytes)}" if result.ort_size_bytes is not None else "")
    )
    ran = counts["int8"] + counts["hybrid"] + counts["float"]
    lines.append(
        f"  nodes  {counts['int8']} int8, {counts['hybrid']} hybrid, {counts['float']} float"
        f" of {ran} that run ({counts['folded']} folded away by onnxruntime before quantization)"
    )
    fallbacks = result.oplist.float_fallbacks()
    if fallbacks:
        lines.append("  float fallbacks:")
        if verbose:
            lines += [f"    {e.name} ({e.op_type}): {e.reason}" for e in fallbacks]
        else:
            grouped = Counter((e.op_type, e.reason) for e in fallbacks)
            for (op_type, reason), n in sorted(grouped.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"    {n:>4} x {op_type}: {reason}")
    written = [result.outputs.onnx] + ([result.outputs.ort] if result.ort_size_bytes is not None else []) + [result.outputs.ops]
    lines.append("  wrote  " + ", ".join(str(p) for p in written))
    lines.append(f"  took   {result.seconds:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    main()
