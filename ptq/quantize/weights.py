"""int8 weight initializers, made once per (weight, layout) and shared by every node that uses
the weight, each node behind its own DequantizeLinear (onnxruntime fuses a DQ into one node)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ptq import qmath
from ptq.errors import UnsupportedModelError
from ptq.graph import to_array
from ptq.quantize.rewrite import GraphBuilder


@dataclass(frozen=True)
class QuantizedWeight:
    """Names of the initializers of one quantized weight, and its scale for bias math."""

    q: str
    scale: str
    zero_point: str
    axis: int | None
    scale_values: np.ndarray


def require_finite(name: str, value: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(value)):
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise UnsupportedModelError(f"weight {name!r} contains {bad} NaN/Inf values; cannot quantize it")
    return value


class WeightStore:
    """Quantizes float initializers into ``builder``, caching by (name, transpose, axis, dtype)."""

    def __init__(self, builder: GraphBuilder, inits: dict[str, onnx.TensorProto], *, symmetric: bool, reduce_range: bool):
        self.builder = builder
        self.inits = inits
        self.symmetric = symmetric
        self.reduce_range = reduce_range
        self._cache: dict[tuple, QuantizedWeight] = {}

    def int8(self, name: str, axis: int | None, *, transpose: bool = False) -> QuantizedWeight:
        """``name`` as int8 (per-channel along ``axis``, or per tensor); ``transpose`` for 2-D."""
        key = (name, axis, transpose, "int8")
        if key not in self._cache:
            w = require_finite(name, to_array(self.inits[name]).astype(np.float32))
            if transpose:
                w = np.ascontiguousarray(w.T)
            q, scale, zero_point = qmath.quantize_weight(
                w, np.int8, symmetric=self.symmetric, axis=axis, reduce_range=self.reduce_range
            )
            b = self.builder
            self._cache[key] = QuantizedWeight(
                b.constant(f"{name}/int8", q),
                b.constant(f"{name}/scale", scale),
                b.constant(f"{name}/zero_point", zero_point),
                axis if scale.ndim else None,
                scale,
            )
        return self._cache[key]

    def dequantized(self, name: str, axis: int | None, reader: str, nodes: list[onnx.NodeProto]) -> tuple[str, QuantizedWeight]:
        """Append a DequantizeLinear of the int8 ``name`` for ``reader``; return its output."""
        w = self.int8(name, axis)
        out = self.builder.unique(f"{name}/dq")
        nodes.append(self.builder.dequantize_node(w.q, w.scale, w.zero_point, out, axis=w.axis))
        return out, w
