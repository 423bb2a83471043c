"""Corrected biases: a layer's float bias minus the mean output shift of its int8 weights.

The shifts are measured and chosen in ``ptq.tuning.bias_correction``; the quantizer applies them
(``quantize_static``) to the layers the plan gives int8 weights, and only to those, so a layer
a later step keeps float keeps its own bias.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ptq.graph import initializers


def apply_shifts(model: onnx.ModelProto, shifts: Mapping[str, Sequence[float]]) -> tuple[str, ...]:
    """Subtract each named layer's shift from its bias, in place (a new initializer
    ``<bias>/corrected``; a layer without a bias gets one). Returns the layers corrected, in graph
    order."""
    graph = model.graph
    inits = initializers(graph)
    corrected = []
    for node in graph.node:
        shift = shifts.get(node.name)
        if shift is None:
            continue
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        shift = np.asarray(shift, np.float64)
        if bias_name is None:
            bias = -shift
        else:
            bias = numpy_helper.to_array(inits[bias_name]).astype(np.float64) - shift
        name = f"{bias_name or node.input[1]}/corrected"
        while name in inits:
            name += "_"
        graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), name))
        inits[name] = graph.initializer[-1]
        if len(node.input) > 2:
            node.input[2] = name
        else:
            node.input.append(name)
        corrected.append(node.name)
    return tuple(corrected)
