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

from ptq.config import Config, Scheme
from ptq.graph import attr, initializers
from ptq.quantize import kernels, lstm
from ptq.quantize.plan import HYBRID, WEIGHT_ONLY, Decision, placed_float_reason, weight_axis
from ptq.quantize.rewrite import GraphBuilder, finish
from ptq.quantize.weights import WeightStore
from ptq.recipe import Recipe

# Small tensors are not worth an extra node: LayerNorm gammas, tiny heads.
MIN_WEIGHT_ELEMENTS = 256


@dataclass
class DynamicResult:
    model: onnx.ModelProto
    decisions: dict[str, Decision]


def quantize_dynamic(model: onnx.ModelProto, config: Config, recipe: Recipe | None = None) -> DynamicResult:
    """Weight-only int8 and hybrid kernels; ``recipe`` holds the nodes kept float or asked hybrid
    and the weight range (what the user asked when None)."""
    recipe = recipe if recipe is not None else Recipe.asked(config)
    graph = model.graph
    inits = initializers(graph)
    builder = GraphBuilder(model)
    store = WeightStore(
        builder, inits, symmetric=config.weights == Scheme.SYMMETRIC, reduce_range=config.reduce_range, mse=recipe.mse_weights
    )
    decisions: dict[str, Decision] = {}
    nodes: list[onnx.NodeProto] = []

    for node in graph.node:
        reason = _why_float(node, recipe, inits)
        if reason is not None:
            decisions[node.name] = Decision(False, reason=reason)
            nodes.append(node)
            continue
        if node.op_type in kernels.HYBRID:
            nodes.extend(hybrid_matmul(node, store, builder, config))
            decisions[node.name] = Decision(True, HYBRID)
        elif node.op_type in kernels.HYBRID_RECURRENT:
            nodes.extend(lstm.hybrid_lstm(node, inits, builder, config, recipe.mse_weights))
            decisions[node.name] = Decision(True, HYBRID)
        elif node.op_type == "Gather":
            nodes.extend(int8_gather(node, store, builder))
            decisions[node.name] = Decision(True, WEIGHT_ONLY)
        else:
            nodes.extend(_weight_only(node, inits, store, config))
            decisions[node.name] = Decision(True, WEIGHT_ONLY)
    return DynamicResult(finish(model, nodes, builder), decisions)


def _why_float(node: onnx.NodeProto, recipe: Recipe, inits) -> str | None:
    op = node.op_type
    reason = placed_float_reason(node, recipe)
    if reason is not None:
        return reason
    if op in kernels.HYBRID_RECURRENT:
        return lstm.float_reason(node, recipe.hybrid_targets, inits, MIN_WEIGHT_ELEMENTS)
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


def hybrid_matmul(node, store: WeightStore, builder: GraphBuilder, config: Config) -> list[onnx.NodeProto]:
    transpose = node.op_type == "Gemm" and bool(attr(node, "transB", 0))  # MatMulInteger takes B as [K, N]
    w = store.int8(node.input[1], 1 if config.per_channel else None, transpose=transpose)
    x, out, name = node.input[0], node.output[0], node.name
    x_q, x_scale, x_zp = (builder.unique(f"{x}/{s}") for s in ("quantized", "scale", "zero_point"))
    acc, acc_f, scale_ab = (builder.unique(f"{out}/{s}") for s in ("int32", "float", "scale"))
    has_bias = node.op_type == "Gemm" and len(node.input) > 2 and bool(node.input[2])
    product = builder.unique(f"{out}/product") if has_bias else out
    result = [
        helper.make_node("DynamicQuantizeLinear", [x], [x_q, x_scale, x_zp], name=builder.unique(f"{name}/DynamicQuantizeLinear")),
        # The source node's name goes to the node onnxruntime fuses the pattern into, so the
        # op list can find it (its fusions keep the MatMulInteger's name).
        helper.make_node("MatMulInteger", [x_q, w.q, x_zp, w.zero_point], [acc], name=name),
        helper.make_node("Cast", [acc], [acc_f], to=TensorProto.FLOAT, name=builder.unique(f"{name}/Cast")),
        helper.make_node("Mul", [x_scale, w.scale], [scale_ab], name=builder.unique(f"{name}/ScaleMul")),
        helper.make_node("Mul", [acc_f, scale_ab], [product], name=builder.unique(f"{name}/Rescale")),
    ]
    if has_bias:
        result.append(helper.make_node("Add", [product, node.input[2]], [out], name=builder.unique(f"{name}/Bias")))
    return result


def _weight_only(node, inits, store: WeightStore, config: Config) -> list[onnx.NodeProto]:
    nodes: list[onnx.NodeProto] = []
    axis = weight_axis(node, inits[node.input[1]], config.per_channel)
    new_node = onnx.NodeProto()
    new_node.CopyFrom(node)
    new_node.input[1] = store.folded_at_load(node.input[1], axis, nodes)
    return nodes + [new_node]


def int8_gather(node, store: WeightStore, builder: GraphBuilder) -> list[onnx.NodeProto]:
    """Gather int8 rows, then dequantize the gathered rows only.

    A 2-D table gathered along axis 0 (an embedding) gets one scale per row, gathered with the
    same indices: rows differ in magnitude (position embeddings by 10x in MiniLM), and one
    per-tensor scale cost them 10 dB. Rows are full 8-bit: no u8 x s8 kernel reads them, so
    ``reduce_range`` has no reason to apply. Other tables keep a per-tensor scale.
    """
    table = node.input[0]
    dims = list(store.inits[table].dims)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if len(dims) != 2 or axis not in (0, -2):
        w = store.int8(table, None)
        gathered = builder.unique(f"{node.output[0]}/int8")
        new_node = onnx.NodeProto()
        new_node.CopyFrom(node)
        new_node.input[0] = w.q
        new_node.output[0] = gathered
        return [new_node, builder.dequantize_node(gathered, w.scale, w.zero_point, node.output[0])]
    # Rows keep their own extremes: a clipped embedding row would lose the token it stands for.
    q, scale, _ = store.quantized_arrays(table, 0, symmetric=True, reduce_range=False, mse=False)
    rows_q = builder.constant(f"{table}/int8_rows", q)
    row_scales = builder.constant(f"{table}/row_scale", scale.astype(np.float32).reshape(-1, 1))
    name = node.name or node.output[0]
    gathered, as_float, scales = (builder.unique(f"{node.output[0]}/{part}") for part in ("int8", "float_int8", "row_scale"))
    return [
        helper.make_node("Gather", [rows_q, node.input[1]], [gathered], name=node.name, axis=0),
        helper.make_node("Cast", [gathered], [as_float], name=builder.unique(f"{name}/Cast"), to=onnx.TensorProto.FLOAT),
        helper.make_node("Gather", [row_scales, node.input[1]], [scales], name=builder.unique(f"{name}/scale"), axis=0),
        helper.make_node("Mul", [as_float, scales], [node.output[0]], name=builder.unique(f"{name}/Mul")),
    ]
