"""Pure numpy quantization math: integer ranges, scales, zero points, (de)quantization.

Conventions follow the ONNX QuantizeLinear spec: ``q = saturate(round_half_to_even(x / scale) +
zero_point)`` and ``x' = (q - zero_point) * scale``. Every function takes arrays and returns
arrays; nothing here touches a graph or a file.
"""

from __future__ import annotations

import numpy as np

# The smallest scale we ever emit. A tensor whose observed range is empty (all zeros, a constant)
# would otherwise get scale 0, and QuantizeLinear divides by the scale. Any positive scale
# represents 0 exactly, so the tiny value changes nothing numerically.
MIN_SCALE = np.float32(1e-8)


def qrange(dtype: np.dtype | type, *, symmetric: bool = False, reduce_range: bool = False) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` used for ``dtype``.

    Symmetric signed ranges drop -128 so that +x and -x quantize to mirrored integers
    (zero point 0, scale = absmax / 127). ``reduce_range`` keeps 7 bits: onnxruntime's u8s8
    kernels on x86 without VNNI add two u8*s8 products into an int16 and can saturate; 7-bit
    weights cannot.
    """
    info = np.iinfo(np.dtype(dtype))
    qmin, qmax = int(info.min), int(info.max)
    if reduce_range:
        if qmin < 0:
            qmin, qmax = -64, 63
        else:
            qmin, qmax = 0, 127
    if symmetric and qmin < 0:
        qmin = -qmax
    return qmin, qmax


def scale_zero_point(
    lo: np.ndarray | float,
    hi: np.ndarray | float,
    dtype: np.dtype | type,
    *,
    symmetric: bool,
    reduce_range: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point that map ``[lo, hi]`` onto the integer range of ``dtype``.

    The range is first widened to contain 0 so that 0 (padding, ReLU output) is exact.
    Symmetric: ``scale = max(|lo|, |hi|) / ((qmax - qmin) / 2)`` and the zero point is the middle
    of the range (0 for int8, 128 for uint8). Asymmetric: ``scale = (hi - lo) / (qmax - qmin)``,
    ``zero_point = round(qmin - lo / scale)``.
    Works elementwise, so ``lo``/``hi`` may be per-channel vectors.

    Returns:
        ``(scale float32, zero_point of dtype)`` with the shape of ``lo``.
    """
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    qmin, qmax = qrange(dtype, symmetric=symmetric, reduce_range=reduce_range)
    if symmetric:
        absmax = np.maximum(-lo, hi)
        scale = absmax / ((qmax - qmin) / 2.0)
        zero_point = np.full(np.shape(lo), (qmin + qmax + 1) // 2 if qmin >= 0 else 0, dtype=np.float64)
    else:
        scale = (hi - lo) / float(qmax - qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zero_point = np.clip(np.rint(qmin - lo / safe), qmin, qmax)
    scale = np.maximum(scale, MIN_SCALE).astype(np.float32)
    return scale, zero_point.astype(np.dtype(dtype))


def quantize(
    x: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    dtype: np.dtype | type,
    *,
    qmin: int | None = None,
    qmax: int | None = None,
) -> np.ndarray:
    """``saturate(rint(x / scale) + zero_point)`` as ``dtype`` (round half to even, as the spec)."""
    info = np.iinfo(np.dtype(dtype))
    lo = info.min if qmin is None else qmin
    hi = info.max if qmax is None else qmax
    q = np.rint(np.asarray(x, dtype=np.float32) / np.asarray(scale, dtype=np.float32))
    q = q + np.asarray(zero_point, dtype=np.float32)
    return np.clip(q, lo, hi).astype(np.dtype(dtype))


def dequantize(q: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32."""
    return ((q.astype(np.float32) - np.asarray(zero_point, dtype=np.float32)) * np.asarray(scale, np.float32)).astype(
        np.float32
    )


def quantize_constant(value: np.ndarray, dtype: np.dtype | type, *, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A constant operand of an int8 elementwise op (Add(x, 3), Mul(x, s)) quantized per tensor
    over its own range in the activation type: ``(q, scale, zero_point)``. A rewrite that is
    free to choose a constant puts it on this grid first (``dequantize(*quantize_constant(c))``)
    so the int8 kernel reads it unrounded."""
    value = np.asarray(value, dtype=np.float32)
    lo, hi = (float(value.min()), float(value.max())) if value.size else (0.0, 0.0)
    scale, zero_point = scale_zero_point(lo, hi, dtype, symmetric=symmetric)
    return quantize(value, scale, zero_point, dtype), scale, zero_point


def channel_ranges(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(min, max)`` of ``w`` along ``axis`` (every other axis reduced)."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    if moved.shape[1] == 0:
        zeros = np.zeros(w.shape[axis], dtype=np.float32)
        return zeros, zeros
    return moved.min(axis=1), moved.max(axis=1)


def broadcast_shape(ndim: int, axis: int, channels: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector against a tensor of rank ``ndim`` on ``axis``."""
    shape = [1] * ndim
    shape[axis] = channels
    return tuple(shape)


# Fractions of a weight channel's min/max range that the MSE weight range tries (1.0 first: a
# channel keeps its full range unless clipping strictly lowers its error).
WEIGHT_CLIP_RATIOS = np.round(np.linspace(1.0, 0.6, 21), 4)
# Rows searched per step: bounds the float32 temporaries to about 4 MB.
_MSE_BLOCK_VALUES = 1 << 20


def mse_weight_ranges(
    rows: np.ndarray, dtype: np.dtype | type, *, symmetric: bool, reduce_range: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``rows`` (channels x values), the ``(lo, hi)`` among its min/max range scaled by
    each of ``WEIGHT_CLIP_RATIOS`` whose quantization (``quantize`` then ``dequantize``, the same
    arithmetic) has the least squared error: clipping a few outlying weights buys a finer step
    for all the others."""
    rows = np.asarray(rows, dtype=np.float32)
    lo, hi = rows.min(axis=1), rows.max(axis=1)
    qmin, qmax = qrange(dtype, symmetric=symmetric, reduce_range=reduce_range)
    best_ratio = np.ones(rows.shape[0])
    step = max(1, _MSE_BLOCK_VALUES // max(rows.shape[1], 1))
    for start in range(0, rows.shape[0], step):
        block = rows[start : start + step]
        b_lo, b_hi = lo[start : start + step], hi[start : start + step]
        best_error = np.full(block.shape[0], np.inf)
        work = np.empty_like(block)
        for ratio in WEIGHT_CLIP_RATIOS:
            scale, zero_point = scale_zero_point(b_lo * ratio, b_hi * ratio, dtype, symmetric=symmetric, reduce_range=reduce_range)
            scale, zero_point = scale[:, None], zero_point.astype(np.float32)[:, None]
            np.divide(block, scale, out=work)
            np.rint(work, out=work)
            work += zero_point
            np.clip(work, qmin, qmax, out=work)
            work -= zero_point
            work *= scale
            work -= block
            error = np.einsum("ij,ij->i", work, work, dtype=np.float64)
            better = error < best_error
            best_error = np.where(better, error, best_error)
            best_ratio[start : start + step] = np.where(better, ratio, best_ratio[start : start + step])
    return lo * best_ratio, hi * best_ratio


def quantize_weight(
    w: np.ndarray,
    dtype: np.dtype | type,
    *,
    symmetric: bool,
    axis: int | None,
    reduce_range: bool = False,
    mse: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize a weight tensor per-tensor (``axis=None``) or per-channel along ``axis``, over
    each channel's min/max range or, with ``mse``, the clipped range of ``mse_weight_ranges``.

    Returns:
        ``(q, scale, zero_point)``; scale/zero_point are scalars (0-d) or 1-D of length
        ``w.shape[axis]``, the shapes DequantizeLinear expects.
    """
    w = np.asarray(w, dtype=np.float32)
    qmin, qmax = qrange(dtype, symmetric=symmetric, reduce_range=reduce_range)
    if axis is None:
        if mse and w.size:
            lo, hi = (float(v[0]) for v in mse_weight_ranges(w.reshape(1, -1), dtype, symmetric=symmetric, reduce_range=reduce_range))
        else:
            lo, hi = (float(w.min()), float(w.max())) if w.size else (0.0, 0.0)
        scale, zero_point = scale_zero_point(lo, hi, dtype, symmetric=symmetric, reduce_range=reduce_range)
        q = quantize(w, scale, zero_point, dtype, qmin=qmin, qmax=qmax)
        return q, scale, zero_point
    if mse and w.size:
        rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        lo, hi = mse_weight_ranges(rows, dtype, symmetric=symmetric, reduce_range=reduce_range)
    else:
        lo, hi = channel_ranges(w, axis)
    scale, zero_point = scale_zero_point(lo, hi, dtype, symmetric=symmetric, reduce_range=reduce_range)
    shape = broadcast_shape(w.ndim, axis, w.shape[axis])
    q = quantize(w, scale.reshape(shape), zero_point.reshape(shape), dtype, qmin=qmin, qmax=qmax)
    return q, scale, zero_point


def quantize_bias(bias: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bias as int32 with ``scale = input_scale * weight_scale`` and zero point 0.

    This is the scale the integer accumulator of Conv/Gemm has, so the bias adds in directly.
    Values beyond int32 saturate (only possible with absurdly small scales).
    """
    scale = (np.float32(input_scale) * np.asarray(weight_scale, dtype=np.float32)).astype(np.float32)
    scale = np.maximum(scale, MIN_SCALE).astype(np.float32)
    scale = np.broadcast_to(scale, bias.shape).astype(np.float32) if scale.ndim else scale
    q = np.clip(np.rint(bias.astype(np.float64) / scale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
    return q, scale


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(|ref|^2 / |ref - approx|^2)`` in dB."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    err = ref - np.asarray(approx, dtype=np.float64).ravel()
    noise = float(np.dot(err, err))
    signal = float(np.dot(ref, ref))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays flattened; 1.0 when both are all zero."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0.0 and ny == 0.0:
        return 1.0
    if nx == 0.0 or ny == 0.0:
        return 0.0
    return float(np.dot(x, y) / (nx * ny))
