"""Per-layer error: how far each int8 tensor of a quantized model is from its float value.

For every QuantizeLinear of the quantized model we read its int8 output (adding it as a graph
output does not stop onnxruntime from fusing the producer into QLinearConv & co., since the
fused kernel writes exactly that tensor), dequantize it with the Q's own scale and zero point,
and compare it with the same tensor of the float model run on the same input. Errors
accumulate through the network, so the table shows where accuracy is lost, worst first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.graph import initializers, producers


@dataclass(frozen=True)
class LayerError:
    tensor: str  # the float model's tensor that is quantized
    node: str  # the node of the float model that produces it ("" for a model input)
    op_type: str
    sqnr_db: float
    max_abs_error: float


def _quantize_points(quantized: onnx.ModelProto) -> dict[str, tuple[str, float, float, int]]:
    """Float tensor name -> (int8 tensor, scale, zero point, element type) for each per-tensor
    QuantizeLinear.

    ptq names a Q's input ``<tensor>/float`` when it renamed the producer's output; the float
    model's tensor is then ``<tensor>``.
    """
    inits = initializers(quantized.graph)
    points = {}
    for node in quantized.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        zero_point = numpy_helper.to_array(inits[node.input[2]]) if node.input[2] in inits else None
        if scale is None or zero_point is None or scale.size != 1:
            continue
        source = node.input[0]
        if source.endswith("/float"):
            source = source[: -len("/float")]
        points[source] = (node.output[0], float(scale), float(zero_point), inits[node.input[2]].data_type)
    return points


def per_layer_errors(
    float_model: onnx.ModelProto, quantized: onnx.ModelProto, feeds: Iterable[dict[str, np.ndarray]]
) -> list[LayerError]:
    """SQNR of every quantized tensor against its float value over ``feeds``, worst first."""
    import onnxruntime as ort

    points = _quantize_points(quantized)
    float_names = {o for n in float_model.graph.node for o in n.output} | {i.name for i in float_model.graph.input}
    points = {t: p for t, p in points.items() if t in float_names}
    reference = _with_outputs(float_model, {t: TensorProto.FLOAT for t in points})
    probed = _with_outputs(quantized, {q: elem for q, _, _, elem in points.values()})
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ref_session = ort.InferenceSession(reference.SerializeToString(), options, providers=["CPUExecutionProvider"])
    q_session = ort.InferenceSession(probed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ref_names = [o.name for o in ref_session.get_outputs()]
    q_names = [o.name for o in q_session.get_outputs()]
    signal = dict.fromkeys(points, 0.0)
    noise = dict.fromkeys(points, 0.0)
    worst = dict.fromkeys(points, 0.0)
    for feed in feeds:
        ref_values = dict(zip(ref_names, ref_session.run(None, feed)))
        ref_values.update(feed)
        q_values = dict(zip(q_names, q_session.run(None, feed)))
        for tensor, (q_name, scale, zero_point, _) in points.items():
            x = np.asarray(ref_values[tensor], dtype=np.float64)
            y = (q_values[q_name].astype(np.float64) - zero_point) * scale
            if x.shape != y.shape:
                continue
            signal[tensor] += float(np.sum(x * x))
            noise[tensor] += float(np.sum((x - y) ** 2))
            worst[tensor] = max(worst[tensor], float(np.max(np.abs(x - y))) if x.size else 0.0)
    produced_by = producers(float_model.graph)
    rows = []
    for tensor in points:
        node = produced_by.get(tensor)
        sqnr = float("inf") if noise[tensor] == 0 else 10 * np.log10(max(signal[tensor], 1e-30) / noise[tensor])
        rows.append(LayerError(tensor, node.name if node else "", node.op_type if node else "input", sqnr, worst[tensor]))
    return sorted(rows, key=lambda r: r.sqnr_db)


def _with_outputs(model: onnx.ModelProto, outputs: dict[str, int]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output} | {i.name for i in copy.graph.input}
    for name, elem_type in outputs.items():
        if name not in present:
            copy.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
            present.add(name)
    return copy
