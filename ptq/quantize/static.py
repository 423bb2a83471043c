"""Static int8: insert QuantizeLinear/DequantizeLinear (QDQ form) around the planned nodes.

Layout of one quantized weighted node (what onnxruntime fuses into QLinearConv/QGemm/...):

    x_q --DQ--> x'   W_int8 --DQ(axis)--> W'   b_int32 --DQ--> b'
                x', W', b' --Conv--> y --Q--> y_q

* every int8 consumer gets its own DequantizeLinear (onnxruntime fuses a DQ into one node only);
* the producer's Q is shared; float consumers and graph outputs read one shared DQ that takes
  the tensor's original name, so the graph's interface is unchanged;
* data-movement nodes keep their input's scale and zero point on the output, the condition for
  onnxruntime to drop the pair and move int8 data;
* bias is int32 with ``scale = input_scale * weight_scale`` and zero point 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ptq import qmath
from ptq.config import Config, Scheme
from ptq.errors import UnsupportedModelError
from ptq.graph import attr, consumers, initializers, producers, to_array
from ptq.quantize import hardsigmoid, kernels, lstm
from ptq.quantize.dynamic import hybrid_matmul, int8_gather
from ptq.quantize.plan import ABSORBED, HYBRID, MOVEMENT, TABLE, WEIGHT_ONLY, WEIGHTED, Plan
from ptq.quantize.rewrite import GraphBuilder, finish
from ptq.quantize.bias import apply_shifts
from ptq.quantize.weights import WeightMemo, WeightStore, require_finite


@dataclass(frozen=True)
class QParams:
    scale: np.ndarray  # float32, 0-d
    zero_point: np.ndarray  # activation dtype, 0-d
    table: hardsigmoid.TableParams | None = None  # a HardSigmoid gate run as a table (its scale nudged)


def activation_dtype(config: Config) -> type:
    return np.uint8 if config.activations == Scheme.ASYMMETRIC else np.int8


def range_sources(model: onnx.ModelProto, plan: Plan) -> dict[str, str]:
    """Quantized activation tensor -> the tensor whose range sets its scale and zero point:
    itself, or through int8 data-movement nodes (Reshape, MaxPool, Split, Resize, ..., which
    onnxruntime runs on int8 values only with equal input and output parameters) the tensor they
    move. A source made by an int8 Softmax has a fixed range (``fixed_range``)."""
    produced_by = producers(model.graph)
    result: dict[str, str] = {}

    def resolve(tensor: str, depth: int = 0) -> str:
        if tensor in result:
            return result[tensor]
        producer = produced_by.get(tensor)
        role = plan.role(producer.name) if producer is not None else None
        if role == MOVEMENT and depth < 10_000:
            source = resolve(producer.input[kernels.data_inputs(producer.op_type, len(producer.input))[0]], depth + 1)
        else:
            source = tensor
        result[tensor] = source
        return source

    for tensor in plan.activations:
        resolve(tensor)
    return result


def fixed_range(model_producers: dict, plan: Plan, tensor: str) -> tuple[float, float] | None:
    """The range an int8 op fixes for its output (Softmax: [0, 1]), else None."""
    producer = model_producers.get(tensor)
    if producer is not None and plan.role(producer.name) is not None and producer.op_type == "Softmax":
        return kernels.FIXED_OUTPUT_RANGE[producer.op_type]
    return None


def calibrated_tensors(model: onnx.ModelProto, plan: Plan) -> list[str]:
    """The tensors calibration must give a range, in the plan's order: every ``range_sources``
    source without a fixed range (outputs of data-movement nodes and of Softmax need none)."""
    produced_by = producers(model.graph)
    sources = dict.fromkeys(range_sources(model, plan).values())
    return [s for s in sources if fixed_range(produced_by, plan, s) is None]


def activation_qparams(
    model: onnx.ModelProto, plan: Plan, ranges: dict[str, tuple[float, float]], config: Config
) -> dict[str, QParams]:
    """Scale and zero point of every quantized activation tensor."""
    dtype = activation_dtype(config)
    symmetric = config.activations == Scheme.SYMMETRIC
    produced_by = producers(model.graph)
    by_source: dict[str, QParams] = {}
    sources = range_sources(model, plan)

    def params(source: str, depth: int = 0) -> QParams:
        if source not in by_source:
            fixed = fixed_range(produced_by, plan, source)
            if fixed is not None:
                lo, hi = fixed
            elif source in ranges:
                lo, hi = ranges[source]
            else:
                raise UnsupportedModelError(f"no calibrated range for tensor {source!r}")
            by_source[source] = QParams(*qmath.scale_zero_point(lo, hi, dtype, symmetric=symmetric))
            producer = produced_by.get(source)
            if producer is not None and plan.role(producer.name) == TABLE and depth < 10_000:
                # a HardSigmoid gate: its scale nudged so that a table computes it exactly
                x = producer.input[0]
                by_source[source] = _table_qparams(producer, params(sources.get(x, x), depth + 1), by_source[source])
        return by_source[source]

    result = {tensor: params(source) for tensor, source in sources.items()}
    return result


def _table_qparams(node: onnx.NodeProto, x: QParams, gate: QParams) -> QParams:
    """The gate's parameters with the table that computes them, or the calibrated ones unchanged
    if no exact table was found (the node then runs DQ -> HardSigmoid -> Q, float in onnxruntime)."""
    if int(gate.zero_point) != 0:
        return gate
    table = hardsigmoid.table_params(float(x.scale), int(x.zero_point), *hardsigmoid.alpha_beta(node), float(gate.scale))
    if table is None:
        return gate
    return QParams(np.array(table.gate_scale, np.float32), gate.zero_point, table)


def quantize_static(
    model: onnx.ModelProto,
    plan: Plan,
    ranges: dict[str, tuple[float, float]],
    config: Config,
    weight_memo: WeightMemo | None = None,
) -> onnx.ModelProto:
    """Return a QDQ model: ``model`` with the plan's tensors and weights quantized.

    ``weight_memo``: shared by the candidates built from one float model (see ``WeightMemo``)."""
    if plan.bias_shifts:  # bias correction, on the layers given int8 weights (the plan holds only those)
        apply_shifts(model, {name: shift for name, shift in plan.bias_shifts.items() if name in plan.weights})
    qparams = activation_qparams(model, plan, ranges, config)
    builder = GraphBuilder(model)
    graph = model.graph
    inits = initializers(graph)
    read_by = consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    act_dtype = activation_dtype(config)
    store = WeightStore(
        builder, inits, symmetric=config.weights == Scheme.SYMMETRIC, reduce_range=config.reduce_range,
        mse=plan.mse_weights, memo=weight_memo,
    )

    quantized_name: dict[str, str] = {}  # activation tensor -> its int8 tensor
    qparam_names: dict[str, tuple[str, str]] = {}  # activation tensor -> (scale, zero point) initializers
    nodes: list[onnx.NodeProto] = []

    def params_of(tensor: str) -> tuple[str, str]:
        if tensor not in qparam_names:
            qp = qparams[tensor]
            qparam_names[tensor] = (
                builder.constant(f"{tensor}/scale", qp.scale),
                builder.constant(f"{tensor}/zero_point", qp.zero_point),
            )
        return qparam_names[tensor]

    def emit_quantize(tensor: str, source: str) -> None:
        scale, zero_point = params_of(tensor)
        q_name = builder.unique(f"{tensor}/quantized")
        nodes.append(builder.quantize_node(source, scale, zero_point, q_name))
        quantized_name[tensor] = q_name

    def dequantized_for(tensor: str, reader: str) -> str:
        scale, zero_point = params_of(tensor)
        out = builder.unique(f"{tensor}/dq")
        nodes.append(builder.dequantize_node(quantized_name[tensor], scale, zero_point, out))
        return out

    activation_set = set(plan.activations)
    for inp in graph.input:
        if inp.name in activation_set:
            emit_quantize(inp.name, inp.name)

    for node in graph.node:
        role = plan.role(node.name)
        if role == TABLE and qparams[node.output[0]].table is not None:
            _emit_table(node, qparams[node.output[0]].table, builder, nodes, params_of, quantized_name, act_dtype)
            gate = node.output[0]
            if gate in graph_outputs or any(not _reads_quantized(r, gate, plan) for r in read_by.get(gate, [])):
                scale, zero_point = params_of(gate)
                nodes.append(builder.dequantize_node(quantized_name[gate], scale, zero_point, gate))
            continue
        new_node = onnx.NodeProto()
        new_node.CopyFrom(node)
        if role == HYBRID and node.op_type in kernels.HYBRID_RECURRENT:
            nodes.extend(lstm.hybrid_lstm(node, inits, builder, config, plan.mse_weights))
        elif role == HYBRID:
            nodes.extend(hybrid_matmul(node, store, builder, config))
        elif role == WEIGHT_ONLY and node.op_type == "Gather":
            nodes.extend(int8_gather(node, store, builder))
        elif role == WEIGHT_ONLY:  # Conv/ConvTranspose with no fused int8 form
            weight_index, axis = plan.weights[node.name]
            new_node.input[weight_index] = store.folded_at_load(node.input[weight_index], axis, nodes)
        elif role is not None and role != ABSORBED:
            data = set(kernels.data_inputs(node.op_type, len(node.input)))
            for index, tensor in enumerate(node.input):
                if index in data and tensor in activation_set:
                    new_node.input[index] = dequantized_for(tensor, node.name)
            if role == WEIGHTED:
                _quantize_weights(node, new_node, plan, inits, store, builder, nodes, qparams)
            else:
                for index in sorted(data):
                    tensor = node.input[index]
                    if tensor in inits and tensor:
                        new_node.input[index] = _constant_operand(tensor, inits[tensor], node, builder, nodes, act_dtype, config)
        renamed: dict[str, str] = {}
        if role not in (None, WEIGHT_ONLY, HYBRID):
            for index, tensor in enumerate(node.output):
                if tensor in activation_set:
                    renamed[tensor] = builder.unique(f"{tensor}/float")
                    new_node.output[index] = renamed[tensor]
        if role not in (HYBRID, WEIGHT_ONLY) or (role == WEIGHT_ONLY and node.op_type != "Gather"):
            nodes.append(new_node)
        for tensor in node.output:
            if tensor not in activation_set:
                continue
            if tensor in renamed:
                emit_quantize(tensor, renamed[tensor])
                readers = read_by.get(tensor, [])
                if tensor in graph_outputs or any(not _reads_quantized(r, tensor, plan) for r in readers):
                    channels = _float_weighted_channels(tensor, readers, plan, inits)
                    if channels is None:
                        scale, zero_point = params_of(tensor)
                        nodes.append(builder.dequantize_node(quantized_name[tensor], scale, zero_point, tensor))
                    else:
                        qp = qparams[tensor]
                        scale = builder.constant(f"{tensor}/scale_per_axis", np.full(channels, qp.scale, np.float32))
                        zero_point = builder.constant(f"{tensor}/zero_point_per_axis", np.full(channels, qp.zero_point))
                        nodes.append(builder.dequantize_node(quantized_name[tensor], scale, zero_point, tensor, axis=1))
            else:
                emit_quantize(tensor, tensor)
    return finish(model, nodes, builder)


def _emit_table(node, table: hardsigmoid.TableParams, builder, nodes, params_of, quantized_name, act_dtype) -> None:
    """HardSigmoid as ``DQ(x_q; s_x, z') -> LeakyRelu(1) -> Q(s_y, z_y)`` (QLinearLeakyRelu once
    fused); its readers dequantize the gate with ``(s_o, 0)`` (``ptq.quantize.hardsigmoid``)."""
    x, gate = node.input[0], node.output[0]
    x_scale, _ = params_of(x)
    zero_point = builder.constant(f"{x}/table_zero_point", np.array(table.input_zero_point, act_dtype))
    table_scale = builder.constant(f"{gate}/table_scale", np.array(table.table_scale, np.float32))
    table_zero_point = builder.constant(f"{gate}/table_zero_point", np.array(table.table_zero_point, act_dtype))
    # Not "<gate>/float": per-layer probes read such a tensor's Q with its parameters, and this
    # Q's (s_y, z_y) are the table's, not the gate's (s_o, 0).
    float_out, q_out = builder.unique(f"{gate}/table"), builder.unique(f"{gate}/quantized")
    nodes.extend(
        hardsigmoid.table_nodes(
            quantized_name[x], x_scale, zero_point, table_scale, table_zero_point, float_out, q_out, node.name,
            builder.unique(f"{gate}/table_input"),
        )
    )  # fmt: skip
    quantized_name[gate] = q_out


def _float_weighted_channels(tensor: str, readers, plan: Plan, inits) -> int | None:
    """The channel count of ``tensor`` when a float Conv/ConvTranspose/Gemm with a constant weight
    reads it (its first input), else None.

    onnxruntime (1.32, ``WeightBiasQuantization``) quantizes the float weight of such a node to
    8-bit per-tensor int8 when its input comes from a DequantizeLinear with a scalar scale, and
    then fuses it into QLinearConv: a conv the plan keeps float would silently run int8 with
    coarser weights. The same dequantization written per axis (one equal scale per channel) is
    exact and leaves the node float."""
    for reader in readers:
        if plan.role(reader.name) is not None or reader.op_type not in ("Conv", "ConvTranspose", "Gemm"):
            continue
        if not reader.input or reader.input[0] != tensor or len(reader.input) < 2 or reader.input[1] not in inits:
            continue
        dims = list(inits[reader.input[1]].dims)
        if reader.op_type == "Conv" and len(dims) >= 2:
            return dims[1] * int(attr(reader, "group", 1))
        if reader.op_type == "ConvTranspose" and dims:
            return dims[0]
        if reader.op_type == "Gemm" and len(dims) == 2 and not attr(reader, "transA", 0):
            return dims[1] if attr(reader, "transB", 0) else dims[0]
    return None


def _reads_quantized(reader: onnx.NodeProto, tensor: str, plan: Plan) -> bool:
    """True if ``reader`` takes ``tensor`` through its own DequantizeLinear."""
    role = plan.role(reader.name)
    if role in (None, ABSORBED, WEIGHT_ONLY, HYBRID):
        return False
    data = kernels.data_inputs(reader.op_type, len(reader.input))
    return any(reader.input[i] == tensor for i in data)


def _quantize_weights(node, new_node, plan, inits, store: WeightStore, builder, nodes, qparams) -> None:
    """Weight to int8 (per-channel when planned), bias to int32, each behind a DequantizeLinear."""
    weight_index, axis = plan.weights[node.name]
    weight_name = node.input[weight_index]
    if weight_name not in inits:  # activation x activation MatMul: both sides are activations
        return
    new_node.input[weight_index], weight = store.dequantized(weight_name, axis, node.name, nodes)

    bias_index = 2
    if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(node.input) > bias_index and node.input[bias_index]:
        bias_name = node.input[bias_index]
        input_tensor = node.input[0]
        if bias_name in inits and input_tensor in qparams:
            bias = require_finite(bias_name, to_array(inits[bias_name]).astype(np.float32))
            if bias.ndim == 1:
                # The bias scale depends on the input's scale, so each reader gets its own copy.
                qb, bscale = qmath.quantize_bias(bias, float(qparams[input_tensor].scale), weight.scale_values)
                qb_name = builder.constant(f"{bias_name}/int32", qb)
                bs_name = builder.constant(f"{bias_name}/scale", bscale)
                bout = builder.unique(f"{bias_name}/dq")
                nodes.append(builder.dequantize_node(qb_name, bs_name, None, bout, axis=0 if bscale.ndim else None))
                new_node.input[bias_index] = bout


def _constant_operand(name, tensor, node, builder, nodes, act_dtype, config) -> str:
    """A constant input of an int8 elementwise op (Add(x, 3), Mul(x, 1/6), Concat(x, c)):
    quantized per tensor in the activation type so the int8 kernel takes it."""
    value = to_array(tensor).astype(np.float32)
    require_finite(name, value)
    q, scale, zero_point = qmath.quantize_constant(value, act_dtype, symmetric=config.activations == Scheme.SYMMETRIC)
    q_name = builder.constant(f"{name}/quantized", q)
    s_name = builder.constant(f"{name}/scale", scale)
    z_name = builder.constant(f"{name}/zero_point", zero_point)
    out = builder.unique(f"{name}/dq")
    nodes.append(builder.dequantize_node(q_name, s_name, z_name, out))
    return out
