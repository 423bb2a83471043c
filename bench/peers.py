"""The quantizers the benchmark compares: ptq and its peers, each as one conversion recipe.

A recipe is ``convert(model_path, output_path, calibration_dir) -> notes | None``: it writes an
int8 ``.onnx`` at ``output_path`` (scratch files go beside it) and may return one-line notes
about what it had to do. Recipes run inside a child process
(``bench.convert_one``) so their wall time and peak memory can be measured and their crashes
contained. Each peer runs with the settings its own documentation recommends, or with its plain
defaults where the recipe says so; nothing is tuned per model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Tool:
    """One way to quantize a model.

    Attributes:
        name: short id used on the command line and in tables.
        mode: "static" (needs calibration data, int8 activations) or "dynamic" (weights only).
        reference: the ptq tool this one is compared with for the latency ratio (None for ptq).
        description: the exact settings, for RESULTS.md.
    """

    name: str
    mode: str
    reference: str | None
    description: str

    @property
    def needs_calibration(self) -> bool:
        return self.mode == "static"


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in [
        Tool("ptq-static", "static", None, "`ptq.convert(model, Config(output, calibration_data=DIR))` (CLI defaults)"),
        Tool("ptq-dynamic", "dynamic", None, "`ptq.convert(model, Config(output))` (CLI defaults)"),
        Tool(
            "ort-static",
            "static",
            "ptq-static",
            "onnxruntime best practice: `quant_pre_process` (retried with `skip_symbolic_shape=True` if it raises), models below opset 13"
            " upgraded to 13 with onnx's version converter (per-channel DequantizeLinear needs it), then `quantize_static(QDQ, per_channel=True,"
            " reduce_range=True, activation_type=QUInt8, weight_type=QInt8, calibrate_method=MinMax)`; reduce_range as its documentation"
            " advises for per-channel on x86 and as ptq's default 7-bit weights",
        ),
        Tool(
            "ort-static-default",
            "static",
            "ptq-static",
            "onnxruntime `quantize_static(model, out, reader)` with default arguments, no pre-processing",
        ),
        Tool("ort-dynamic", "dynamic", "ptq-dynamic", "onnxruntime `quantize_dynamic(model, out)` defaults (QInt8)"),
        Tool(
            "nncf",
            "static",
            "ptq-static",
            "`nncf.quantize(onnx_model, nncf.Dataset(samples), subset_size=len(samples))` defaults;"
            " `model_type=TRANSFORMER` for transformer models. Optional: `pip install nncf` (its dependencies"
            " include no torch and no CUDA); without it the nncf rows read skipped",
        ),
    ]
}


def nncf_available() -> bool:
    """Whether NNCF is importable here (it is an optional peer)."""
    return importlib.util.find_spec("nncf") is not None


def calibration_files(calibration_dir: Path) -> list[Path]:
    """The ``.npz`` samples of a calibration folder, in name order (the order ptq reads them)."""
    return sorted(Path(calibration_dir).glob("*.npz"))


def read_samples(calibration_dir: Path) -> Iterator[dict[str, np.ndarray]]:
    """Yield each calibration sample as a feed dict, one file at a time."""
    for path in calibration_files(calibration_dir):
        with np.load(path, allow_pickle=False) as npz:
            yield {key: npz[key] for key in npz.files}


def convert_ptq_static(model: Path, output: Path, calibration_dir: Path | None) -> list[str]:
    """ptq, static mode: calibrated int8 activations and weights."""
    import ptq

    result = ptq.convert(model, ptq.Config(output=output, calibration_data=calibration_dir))
    record = result.latency
    if record is None or not record.measured:
        return []
    # what the latency placement added to the conversion time (the budget question)
    return [f"latency placement {record.seconds:.1f} s of the {record.budget_s:g} s budget"
            f"{' (out of budget: searched what fit)' if record.out_of_budget else ''}, whole conversion in the convert s column"]


def convert_ptq_dynamic(model: Path, output: Path, calibration_dir: Path | None) -> None:
    """ptq, dynamic mode: int8 weights, hybrid kernels, no calibration."""
    import ptq

    ptq.convert(model, ptq.Config(output=output))


def _ort_reader(calibration_dir: Path):
    """An onnxruntime ``CalibrationDataReader`` over the calibration folder's samples."""
    from onnxruntime.quantization import CalibrationDataReader

    class FolderReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = read_samples(calibration_dir)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._samples, None)

    return FolderReader()


def convert_ort_static(model: Path, output: Path, calibration_dir: Path | None) -> list[str]:
    """onnxruntime's documented best practice for x86 CPUs: pre-process, then QDQ u8/s8 per-channel.

    When symbolic shape inference fails inside ``quant_pre_process``, retry it with
    ``skip_symbolic_shape=True``, the remedy its documentation gives, and say so in a note.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes = []
    model = _at_least_opset_13(model, output.with_name(output.stem + ".opset13.onnx"), notes)
    prepared = output.with_name(output.stem + ".pre.onnx")
    try:
        quant_pre_process(str(model), str(prepared))
    except Exception as error:  # noqa: BLE001 - any failure of symbolic shape inference
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:100]
        notes.append(f"quant_pre_process raised ({reason}); retried with skip_symbolic_shape=True")
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(output),
        _ort_reader(calibration_dir),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    prepared.unlink(missing_ok=True)
    output.with_name(output.stem + ".opset13.onnx").unlink(missing_ok=True)
    return notes


def _at_least_opset_13(model: Path, scratch: Path, notes: list[str]) -> Path:
    """``model`` itself, or a copy at ``scratch`` upgraded to opset 13 when it is older.

    onnxruntime's quantizer writes per-channel ``DequantizeLinear`` nodes (an ``axis`` attribute,
    opset 13) into older models without upgrading them, and onnxruntime then refuses to load the
    result; upgrading first is what a user of its quantizer does on seeing that error.
    """
    import onnx
    from onnx import version_converter

    proto = onnx.load(str(model))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        return model
    onnx.save(version_converter.convert_version(proto, 13), str(scratch))
    notes.append(f"upgraded from opset {opset} to 13 with onnx.version_converter first")
    return scratch


def convert_ort_static_default(model: Path, output: Path, calibration_dir: Path | None) -> None:
    """onnxruntime ``quantize_static`` exactly as its signature defaults it."""
    from onnxruntime.quantization import quantize_static

    quantize_static(str(model), str(output), _ort_reader(calibration_dir))


def convert_ort_dynamic(model: Path, output: Path, calibration_dir: Path | None) -> None:
    """onnxruntime ``quantize_dynamic`` with default arguments."""
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(model), str(output))


def _is_transformer(model: Path) -> bool:
    """True for graphs with attention-style ops (Softmax after MatMul and a LayerNorm/ReduceMean)."""
    import onnx

    ops = {node.op_type for node in onnx.load(str(model), load_external_data=False).graph.node}
    return "Softmax" in ops and "MatMul" in ops and bool(ops & {"LayerNormalization", "ReduceMean"})


def convert_nncf(model: Path, output: Path, calibration_dir: Path | None) -> None:
    """NNCF post-training quantization of the ONNX model with its defaults (MinMax + fast bias correction)."""
    import os

    # NNCF reports usage through openvino-telemetry unless it believes it runs in CI.
    os.environ.setdefault("NNCF_CI", "1")
    import nncf
    import onnx

    samples = list(read_samples(calibration_dir))
    options = {"model_type": nncf.ModelType.TRANSFORMER} if _is_transformer(model) else {}
    quantized = nncf.quantize(onnx.load(str(model)), nncf.Dataset(samples), subset_size=len(samples), **options)
    onnx.save(quantized, str(output))


# A recipe may return notes (one line each) about what it had to do.
RECIPES: dict[str, Callable[[Path, Path, Path | None], list[str] | None]] = {
    "ptq-static": convert_ptq_static,
    "ptq-dynamic": convert_ptq_dynamic,
    "ort-static": convert_ort_static,
    "ort-static-default": convert_ort_static_default,
    "ort-dynamic": convert_ort_dynamic,
    "nncf": convert_nncf,
}
