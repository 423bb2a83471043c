"""int8 weight initializers, made once per (weight, layout) and shared by every node that uses
the weight, each node behind its own DequantizeLinear (onnxruntime fuses a DQ into one node)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

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


class WeightMemo(dict):
    """Quantized weight arrays kept across the int8 models built from one float model (the
    candidates an accuracy-aware choice scores), keyed by weight name and quantization settings:
    the weights are quantized once per conversion instead of once per candidate (MiniLM: its
    30 MB embedding table alone took 60 ms a candidate). Valid only while the float model's
    weights do not change: one memo per model."""


class WeightStore:
    """Quantizes float initializers into ``builder``, caching by (name, transpose, axis, dtype).

    ``memo``: a ``WeightMemo`` shared with the other int8 models built from the same float model."""

    def __init__(
        self,
        builder: GraphBuilder,
        inits: dict[str, onnx.TensorProto],
        *,
        symmetric: bool,
        reduce_range: bool,
        mse: bool = False,
        memo: WeightMemo | None = None,
    ):
        self.builder = builder
        self.inits = inits
        self.symmetric = symmetric
        self.reduce_range = reduce_range
        self.mse = mse
        self.memo = memo if memo is not None else WeightMemo()
        self._cache: dict[tuple, QuantizedWeight] = {}
        self._folded: dict[tuple, str] = {}

    def quantized_arrays(
        self,
        name: str,
        axis: int | None,
        *,
        transpose: bool = False,
        symmetric: bool | None = None,
        reduce_range: bool | None = None,
        mse: bool | None = None,
    ):
        """``(q, scale, zero_point)`` of the float initializer ``name`` (memoized)."""
        symmetric = self.symmetric if symmetric is None else symmetric
        reduce_range = self.reduce_range if reduce_range is None else reduce_range
        mse = self.mse if mse is None else mse
        key = (name, axis, transpose, symmetric, reduce_range, mse)
        if key not in self.memo:
            w = require_finite(name, to_array(self.inits[name]).astype(np.float32))
            if transpose:
                w = np.ascontiguousarray(w.T)
            self.memo[key] = qmath.quantize_weight(w, np.int8, symmetric=symmetric, axis=axis, reduce_range=reduce_range, mse=mse)
        return self.memo[key]

    def int8(self, name: str, axis: int | None, *, transpose: bool = False) -> QuantizedWeight:
        """``name`` as int8 (per-channel along ``axis``, or per tensor); ``transpose`` for 2-D."""
        key = (name, axis, transpose, "int8")
        if key not in self._cache:
            q, scale, zero_point = self.quantized_arrays(name, axis, transpose=transpose)
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

    def folded_at_load(self, name: str, axis: int | None, nodes: list[onnx.NodeProto]) -> str:
        """The int8 ``name`` turned back to float by ``Cast`` and ``Mul`` (and ``Sub`` of the
        zero point), which onnxruntime's constant folding computes once when it loads the model.

        For a weight with no int8 kernel to fuse into (Conv in dynamic mode, ConvTranspose):
        a DequantizeLinear would run at every inference (onnxruntime never folds it, to keep QDQ
        groups intact) and would keep the kernel from prepacking its weight; folded at load, the
        float kernel runs exactly as fast as in the float model and the file still holds int8.
        """
        key = (name, axis, "folded")
        if key in self._folded:
            return self._folded[key]
        w = self.int8(name, axis)
        rank = len(self.inits[name].dims)
        b = self.builder
        shape = [1] * rank
        if axis is not None:
            shape[axis] = -1
        as_float = b.unique(f"{name}/float_int8")
        nodes.append(helper.make_node("Cast", [w.q], [as_float], to=onnx.TensorProto.FLOAT, name=b.unique(f"{name}/Cast")))
        if w.zero_point is not None and np.any(to_array_named(b, w.zero_point)):
            zp = b.constant(f"{name}/zero_point_float", to_array_named(b, w.zero_point).astype(np.float32).reshape(shape))
            centered = b.unique(f"{name}/centered")
            nodes.append(helper.make_node("Sub", [as_float, zp], [centered], name=b.unique(f"{name}/Sub")))
            as_float = centered
        scale = b.constant(f"{name}/scale_b", w.scale_values.astype(np.float32).reshape(shape) if w.scale_values.ndim else w.scale_values)
        out = b.unique(f"{name}/dequantized")
        nodes.append(helper.make_node("Mul", [as_float, scale], [out], name=b.unique(f"{name}/Mul")))
        self._folded[key] = out
        return out


def to_array_named(builder: GraphBuilder, name: str) -> np.ndarray:
    return numpy_helper.to_array(builder.new_initializers[name])
