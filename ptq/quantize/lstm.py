"""Hybrid LSTM: onnxruntime's ``com.microsoft.DynamicQuantizeLSTM`` kernel.

The kernel takes the LSTM's weights as int8 and quantizes its activations at run time (the
input sequence once, the hidden state at every step), so the two matrix products of each step
run as u8 x s8 integer GEMMs with float accumulators rescaled. Everything else (gates,
activations, the cell state) stays float. Weight layout, from the operator's schema in
onnxruntime 1.32 (``DynamicQuantizeLSTM``, domain ``com.microsoft``):

    W  int8 [num_directions, input_size, 4*hidden_size]   (the ONNX W [D, 4H, I], transposed)
    R  int8 [num_directions, hidden_size, 4*hidden_size]  (the ONNX R [D, 4H, H], transposed)
    W_scale, W_zero_point, R_scale, R_zero_point:
        [num_directions, 4*hidden_size] per channel (one per gate row), or [num_directions]

and the other inputs (B, sequence_lens, initial_h, initial_c, P) and attributes as ONNX LSTM,
except ``layout``: the kernel only has the sequence-major layout (``layout=0``).

ptq quantizes each gate row symmetrically (zero point 0, whatever ``--weights`` says: the
kernel's u8 x s8 GEMM is the one that saturates on AVX2 with full 8-bit weights, so the 7-bit
default applies here too). The node keeps the source LSTM's name, so the op list finds it in the
graph onnxruntime optimizes and says ``hybrid`` only when the DynamicQuantizeLSTM is really there.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ptq import qmath
from ptq.config import Config
from ptq.graph import attr, to_array
from ptq.quantize.rewrite import GraphBuilder
from ptq.quantize.weights import require_finite

OP_TYPE = "LSTM"
HYBRID_OP = "DynamicQuantizeLSTM"
DOMAIN = "com.microsoft"

# Index of each LSTM input.
X, W, R, B, SEQUENCE_LENS, INITIAL_H, INITIAL_C, P = range(8)

# Whether an LSTM runs hybrid unless the user says otherwise (``--exclude LSTM`` keeps it float,
# ``--hybrid LSTM`` or ``--hybrid NAME`` asks for it when this is off). See the README for the
# measurements that set it.
DEFAULT_ON = True
HYBRID_REASON = "hybrid DynamicQuantizeLSTM: int8 W and R, input and hidden state quantized at run time"


def float_reason(node: onnx.NodeProto, hybrid: tuple[str, ...], inits: dict[str, onnx.TensorProto],
                 min_elements: int = 0) -> str | None:  # fmt: skip
    """Why the LSTM ``node`` stays float (not asked for in ``hybrid``, or not possible), or None."""
    asked = node.name in hybrid or node.op_type in hybrid
    if not (DEFAULT_ON or asked):
        return "hybrid LSTM is off by default (ask for it with --hybrid LSTM)"
    return why_float(node, inits, min_elements)


def why_float(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], min_elements: int = 0) -> str | None:
    """Why the LSTM ``node`` cannot run as DynamicQuantizeLSTM, or None when it can."""
    if node.op_type != OP_TYPE or node.domain not in ("", "ai.onnx"):
        return f"{node.op_type} is not an ONNX LSTM"
    if attr(node, "layout", 0) != 0:
        return "LSTM with layout=1 (batch first): onnxruntime's DynamicQuantizeLSTM is sequence-major only"
    weights = []
    for index, what in ((W, "input weight W"), (R, "recurrent weight R")):
        name = node.input[index] if len(node.input) > index else ""
        tensor = inits.get(name)
        if tensor is None or tensor.data_type != TensorProto.FLOAT:
            return f"its {what} is computed at run time, not a constant float"
        if len(tensor.dims) != 3:
            return f"its {what} is not 3-D"
        weights.append(tensor)
    count = sum(int(np.prod(t.dims)) for t in weights)
    if count < min_elements:
        return f"weights have {count} elements: too small to pay for quantizing"
    return None


def _quantize(values: np.ndarray, per_channel: bool, reduce_range: bool, mse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """ONNX-layout ``[D, 4H, K]`` float -> (int8 ``[D, K, 4H]``, scale ``[D, 4H]`` or ``[D]``)."""
    qs, scales = [], []
    for direction in values:  # [4H, K]
        q, scale, _ = qmath.quantize_weight(
            direction, np.int8, symmetric=True, axis=0 if per_channel else None, reduce_range=reduce_range, mse=mse
        )
        qs.append(q.T)
        scales.append(scale)
    return np.ascontiguousarray(np.stack(qs)).astype(np.int8), np.stack(scales).astype(np.float32)


def hybrid_lstm(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], builder: GraphBuilder,
                config: Config, mse: bool) -> list[onnx.NodeProto]:  # fmt: skip
    """``node`` (an ONNX LSTM that ``why_float`` accepts) as one DynamicQuantizeLSTM node."""
    names = []
    for index, tag in ((W, "W"), (R, "R")):
        source = node.input[index]
        values = require_finite(source, to_array(inits[source]).astype(np.float32))
        q, scale = _quantize(values, config.per_channel, config.reduce_range, mse)
        names.append((
            builder.constant(f"{source}/int8_{tag}", q),
            builder.constant(f"{source}/scale_{tag}", scale),
            builder.constant(f"{source}/zero_point_{tag}", np.zeros(scale.shape, np.int8)),
        ))  # fmt: skip
    (w_q, w_scale, w_zp), (r_q, r_scale, r_zp) = names
    optional = [node.input[i] if len(node.input) > i else "" for i in (B, SEQUENCE_LENS, INITIAL_H, INITIAL_C, P)]
    inputs = [node.input[X], w_q, r_q, *optional, w_scale, w_zp, r_scale, r_zp]
    hybrid = helper.make_node(HYBRID_OP, inputs, list(node.output), name=node.name, domain=DOMAIN)
    hybrid.attribute.extend(a for a in node.attribute if a.name != "layout")
    _import_domain(builder.model)
    return [hybrid]


def _import_domain(model: onnx.ModelProto) -> None:
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
