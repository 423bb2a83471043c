"""Float16 weights that onnxruntime expands to float32 when it loads the model (``--fp16``).

As TFLite's float16 quantization: each large float32 initializer W is stored as float16 W16
and read through ``Cast(W16, to=FLOAT)``, so the file holds about half the bytes while inputs,
outputs and every kernel stay float32. onnxruntime's constant folding runs the Cast once when it
loads the model (the Casts read only initializers), so the session runs the float32 kernels on
float32 weights: latency as float, and the only error is W's rounding to float16 (relative
2**-11; values below 2**-14 lose precision as subnormals).

Kept float32: initializers with fewer than ``MIN_ELEMENTS`` values (biases of small layers,
shape and scale constants: they would save little and shape inference needs them constant),
those float16 cannot hold (a magnitude over 65504, such as an attention-mask fill
``finfo(float32).min``, which would become -inf), and initializers that are also graph inputs
(a caller may feed them). Subgraph initializers are left as they are.

With calibration data (``--fp16 -c``) the model is int8 first and only the layers that stay float
get float16 weights: the quantization constants (the scales and zero points QuantizeLinear,
DequantizeLinear and the integer kernels read) stay as they are, since onnxruntime fuses Q/DQ
pairs only around constant float32 scales. Measured: openWakeWord's log-mel front-end, whose
layers all stay float (``ptq.tuning.collapse``), 1.09 -> 0.55 MB at output cosine 1.000000.

The ``.ort`` file holds float32 weights: onnxruntime saves the graph after its constant folding,
which expands the Casts; an ORT-format session does not fold constants when it loads, so a file
that kept them would cast every weight on every run (measured, MiniLM, 1 thread: 35.4 ms a
sentence with the Casts kept vs 18.2 ms folded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.graph import to_array, unique_name
from ptq.quantize.plan import Decision

MIN_ELEMENTS = 16
FP16_MAX = float(np.finfo(np.float16).max)  # 65504
REASON = "float kernel: float16 weights, expanded to float32 when onnxruntime loads the model (--fp16)"


@dataclass(frozen=True)
class Fp16Result:
    model: onnx.ModelProto
    decisions: dict[str, Decision]
    converted: tuple[str, ...]  # initializers now stored as float16, in graph order
    kept: dict[str, str]  # large float32 initializer -> why it stays float32


def convertible(values: np.ndarray) -> str | None:
    """Why ``values`` (a float32 initializer) must stay float32, or None when float16 holds it."""
    if values.size < MIN_ELEMENTS:
        return f"fewer than {MIN_ELEMENTS} values"
    if not np.all(np.isfinite(values)):
        return "holds NaN/Inf"
    if float(np.max(np.abs(values))) > FP16_MAX:
        return f"a value beyond float16's range ({FP16_MAX:g})"
    return None


# Ops that read quantization constants (scales, zero points): their inputs keep their type.
QUANTIZATION_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
     "MatMulIntegerToFloat", "DynamicQuantizeLSTM"}
)  # fmt: skip


def quantization_constants(model: onnx.ModelProto) -> frozenset[str]:
    """Tensors read by quantization ops or by ops outside the default domain (left as they are)."""
    return frozenset(
        t for n in model.graph.node if n.op_type in QUANTIZATION_OPS or n.domain not in ("", "ai.onnx") for t in n.input
    )


def convert(model: onnx.ModelProto, keep: frozenset[str] = frozenset()) -> Fp16Result:
    """Store ``model``'s large float32 initializers as float16, each read through a Cast to float32.

    Edits ``model`` in place (the caller's prepared copy) and returns it with what changed;
    initializers named in ``keep`` stay as they are (``quantization_constants``).
    """
    graph = model.graph
    inputs = {i.name for i in graph.input} | keep
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output} | inputs
    taken |= {n.name for n in graph.node}
    casts: list[onnx.NodeProto] = []
    converted: list[str] = []
    kept: dict[str, str] = {}
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or tensor.name in inputs:
            continue
        values = to_array(tensor)
        why = convertible(values)
        if why is not None:
            if values.size >= MIN_ELEMENTS:
                kept[tensor.name] = why
            continue
        name = tensor.name
        half = unique_name(f"{name}_fp16", taken)
        taken.add(half)
        tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float16), half))
        cast_name = unique_name(f"{name}_to_float32", taken)
        taken.add(cast_name)
        casts.append(helper.make_node("Cast", [half], [name], name=cast_name, to=TensorProto.FLOAT))
        converted.append(name)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # first: the Casts read only initializers
    # Shape annotations from the preparation: onnxruntime infers them again, and on a small model
    # they are a few percent of the file (PP-OCR cls: 24 of 560 kB).
    del graph.value_info[:]
    decisions = {n.name: Decision(False, reason=REASON) for n in nodes}
    return Fp16Result(model, decisions, tuple(converted), kept)


def describe(result: Fp16Result) -> str:
    """One line for the conversion notes."""
    line = f"float16 weights: {len(result.converted)} initializer(s) stored as float16, read through Cast to float32"
    if result.kept:
        reasons = sorted(set(result.kept.values()))
        line += f"; {len(result.kept)} large one(s) kept float32 ({'; '.join(reasons)})"
    return line
