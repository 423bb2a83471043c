"""Dynamic (no calibration data) int8, as TFLite's dynamic-range mode: int8 weights everywhere
they matter, activations quantized at run time where onnxruntime has a hybrid kernel.

* MatMul / Gemm with a constant weight become the standard-ops pattern onnxruntime fuses into its
  hybrid ``DynamicQuantizeMatMul`` kernel::

      x --DynamicQuantizeLinear--> (x_u8, x_scale, x_zp)
      MatMulInteger(x_u8, W_s8, x_zp, W_zp) --Cast(float)--> Mul(x_scale * W_scale) [--Add(bias)]

* Conv / ConvTranspose keep their float kernel with an int8 weight behind a DequantizeLinear:
  ConvInteger with signed weights has no onnxruntime CPU kernel, so the file shrinks and the
  model stays as fast as float.
* Gather on a constant table (embeddings) gathers int8 rows and dequantizes only those rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from ptq import qmath
from ptq.config import Config, Scheme
from ptq.errors import UnsupportedModelError
from ptq.graph import attr, has_subgraph, initializers, to_array
from ptq.quantize import kernels
from ptq.quantize.plan import Decision, is_excluded, weight_axis
from ptq.quantize.rewrite import GraphBuilder, finish

# Small tensors are not worth an extra node: LayerNorm gammas, tiny heads.
MIN_WEIGHT_ELEMENTS = 256
HYBRID = "hybrid"
WEIGHT_ONLY = "weight-only"


@dataclass
class DynamicResult:
    model: onnx.ModelProto
    decisions: dict[str, Decision]


def quantize_dynamic(model: onnx.ModelProto, config: Config) -> DynamicResult:
    graph = model.graph
    inits = initializers(graph)
    builder = GraphBuilder(model)
    symmetric = config.weights == Scheme.SYMMETRIC
    decisions: dict[str, Decision] = {}
    nodes: list[onnx.NodeProto] = []

    for node in graph.node:
        reason = _why_float(node, config, inits)
        if reason is not None:
            decisions[node.name] = Decision(False, reason=reason)
            nodes.append(node)
            continue
        if node.op_type in kernels.HYBRID:
            nodes.extend(_hybrid_matmul(node, inits, builder, config, symmetric))
            decisions[node.name] = Decision(True, HYBRID)
        elif node.op_type == "Gather":
            nodes.extend(_int8_gather(node, inits, builder, symmetric))
            decisions[node.name] = Decision(True, WEIGHT_ONLY)
        else:
            nodes.extend(_weight_only(node, inits, builder, config, symmetric))
            decisions[node.name] = Decision(True, WEIGHT_ONLY)
    return DynamicResult(finish(model, nodes, builder), decisions)


def _why_float(node: onnx.NodeProto, config: Config, inits) -> str | None:
    op = node.op_type
    if is_excluded(node, config.exclude):
        return "excluded by the user (--exclude)"
    if has_subgraph(node):
        return f"control flow ({op}): its body is kept float"
    if node.domain not in ("", "ai.onnx"):
        return f"custom-domain op {node.domain}.{op}: no int8 kernel"
    if op not in kernels.HYBRID | kernels.WEIGHT_ONLY:
        return f"no int8 weights: {op} has no hybrid kernel in onnxruntime" if op in kernels.WEIGHTED else (
            f"no int8 or hybrid kernel in onnxruntime for {op}"
        )
    weight_index = 0 if op == "Gather" else 1
    weight = inits.get(node.input[weight_index]) if len(node.input) > weight_index else None
    if weight is None or weight.data_type != TensorProto.FLOAT:
        return "no constant float weight (activations only: needs calibration data for int8)"
    count = int(np.prod(weight.dims)) if weight.dims else 1
    if count < MIN_WEIGHT_ELEMENTS:
        return f"weight has {count} elements: too small to pay for quantizing"
    if op == "MatMul" and len(weight.dims) != 2:
        return "MatMul weight is not 2-D"
    if op == "Gemm" and (attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0):
        return "Gemm with transA/alpha/beta has no hybrid form"
    if op == "Gemm" and len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return "Gemm bias is computed at run time"
    return None


def _finite(name: str, value: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(value)):
        raise UnsupportedModelError(f"weight {name!r} contains NaN/Inf values; cannot quantize it")
    return value


def _hybrid_matmul(node, inits, builder: GraphBuilder, config: Config, symmetric: bool) -> list[onnx.NodeProto]:
    w = _finite(node.input[1], to_array(inits[node.input[1]]).astype(np.float32))
    if node.op_type == "Gemm" and attr(node, "transB", 0):
        w = np.ascontiguousarray(w.T)  # MatMulInteger takes B as [K, N]
    axis = 1 if config.per_channel else None
    q, scale, zero_point = qmath.quantize_weight(w, np.int8, symmetric=symmetric, axis=axis, reduce_range=config.reduce_range)
    base = node.input[1]
    q_name = builder.constant(f"{base}/int8", q)
    s_name = builder.constant(f"{base}/scale", scale)
    z_name = builder.constant(f"{base}/zero_point", zero_point)
    x = node.input[0]
    out = node.output[0]
    x_q, x_scale, x_zp = (builder.unique(f"{x}/{s}") for s in ("quantized", "scale", "zero_point"))
    acc, acc_f, scale_ab = (builder.unique(f"{out}/{s}") for s in ("int32", "float", "scale"))
    has_bias = node.op_type == "Gemm" and len(node.input) > 2 and bool(node.input[2])
    product = builder.unique(f"{out}/product") if has_bias else out
    name = node.name
    result = [
        helper.make_node("DynamicQuantizeLinear", [x], [x_q, x_scale, x_zp], name=builder.unique(f"{name}/DynamicQuantizeLinear")),
        helper.make_node("MatMulInteger", [x_q, q_name, x_zp, z_name], [acc], name=builder.unique(f"{name}/MatMulInteger")),
        helper.make_node("Cast", [acc], [acc_f], to=TensorProto.FLOAT, name=builder.unique(f"{name}/Cast")),
        helper.make_node("Mul", [x_scale, s_name], [scale_ab], name=builder.unique(f"{name}/ScaleMul")),
        helper.make_node("Mul", [acc_f, scale_ab], [product], name=builder.unique(f"{name}/Rescale")),
    ]
    if has_bias:
        result.append(helper.make_node("Add", [product, node.input[2]], [out], name=builder.unique(f"{name}/Bias")))
    return result


def _weight_only(node, inits, builder: GraphBuilder, config: Config, symmetric: bool) -> list[onnx.NodeProto]:
    name = node.input[1]
    w = _finite(name, to_array(inits[name]).astype(np.float32))
    axis = weight_axis(node, inits[name], config.per_channel)
    q, scale, zero_point = qmath.quantize_weight(w, np.int8, symmetric=symmetric, axis=axis, reduce_range=config.reduce_range)
    q_name = builder.constant(f"{name}/int8", q)
    s_name = builder.constant(f"{name}/scale", scale)
    z_name = builder.constant(f"{name}/zero_point", zero_point)
    out = builder.unique(f"{name}/dq/{node.name}")
    dq = builder.dequantize_node(q_name, s_name, z_name, out, axis=axis if scale.ndim else None)
    new_node = onnx.NodeProto()
    new_node.CopyFrom(node)
    new_node.input[1] = out
    return [dq, new_node]


def _int8_gather(node, inits, builder: GraphBuilder, symmetric: bool) -> list[onnx.NodeProto]:
    """Gather int8 rows, then dequantize the gathered rows only (per-tensor scale)."""
    name = node.input[0]
    table = _finite(name, to_array(inits[name]).astype(np.float32))
    q, scale, zero_point = qmath.quantize_weight(table, np.int8, symmetric=symmetric, axis=None)
    q_name = builder.constant(f"{name}/int8", q)
    s_name = builder.constant(f"{name}/scale", scale)
    z_name = builder.constant(f"{name}/zero_point", zero_point)
    gathered = builder.unique(f"{node.output[0]}/int8")
    new_node = onnx.NodeProto()
    new_node.CopyFrom(node)
    new_node.input[0] = q_name
    new_node.output[0] = gathered
    return [new_node, builder.dequantize_node(gathered, s_name, z_name, node.output[0])]
