"""Pure quantization math, checked with numpy alone."""

import numpy as np
import pytest

from ptq import qmath


def test_qrange_symmetric_drops_lowest_code():
    assert qmath.qrange(np.int8) == (-128, 127)
    assert qmath.qrange(np.int8, symmetric=True) == (-127, 127)
    assert qmath.qrange(np.uint8) == (0, 255)
    assert qmath.qrange(np.int8, reduce_range=True, symmetric=True) == (-63, 63)
    assert qmath.qrange(np.uint8, reduce_range=True) == (0, 127)


def test_asymmetric_uint8_maps_range_ends_exactly():
    scale, zp = qmath.scale_zero_point(-1.0, 3.0, np.uint8, symmetric=False)
    assert scale.shape == () and zp.shape == ()  # 0-d: onnxruntime only fuses scalar scales
    assert scale == pytest.approx(4.0 / 255)
    assert zp.dtype == np.uint8
    q = qmath.quantize(np.array([-1.0, 0.0, 3.0], np.float32), scale, zp, np.uint8)
    assert q[0] == 0 and q[2] == 255
    assert qmath.dequantize(q, scale, zp)[1] == 0.0  # zero is exact


def test_range_is_widened_to_contain_zero():
    scale, zp = qmath.scale_zero_point(2.0, 6.0, np.uint8, symmetric=False)
    assert zp == 0 and scale == pytest.approx(6.0 / 255)


def test_symmetric_int8_has_zero_point_zero():
    scale, zp = qmath.scale_zero_point(-0.5, 2.54, np.int8, symmetric=True)
    assert zp == 0 and scale == pytest.approx(2.54 / 127)


def test_empty_range_gets_safe_scale():
    scale, zp = qmath.scale_zero_point(0.0, 0.0, np.uint8, symmetric=False)
    assert scale > 0 and np.isfinite(scale)
    q = qmath.quantize(np.zeros(4, np.float32), scale, zp, np.uint8)
    assert np.all(qmath.dequantize(q, scale, zp) == 0.0)


def test_round_half_to_even_like_the_spec():
    q = qmath.quantize(np.array([0.5, 1.5, 2.5, -0.5], np.float32), 1.0, 0, np.int8)
    assert q.tolist() == [0, 2, 2, 0]


@pytest.mark.parametrize("seed", range(5))
def test_in_range_roundtrip_error_is_at_most_half_a_step(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=1000).astype(np.float32) * rng.uniform(0.01, 100)
    scale, zp = qmath.scale_zero_point(x.min(), x.max(), np.uint8, symmetric=False)
    err = np.abs(qmath.dequantize(qmath.quantize(x, scale, zp, np.uint8), scale, zp) - x)
    assert err.max() <= scale / 2 * 1.0001 + 1e-7


def test_per_channel_weight_uses_each_channels_absmax():
    w = np.stack([np.linspace(-1, 1, 12), np.linspace(-100, 50, 12)]).reshape(2, 3, 2, 2).astype(np.float32)
    q, scale, zp = qmath.quantize_weight(w, np.int8, symmetric=True, axis=0)
    assert scale.shape == (2,) and zp.shape == (2,)
    assert scale.tolist() == pytest.approx([1 / 127, 100 / 127])
    assert q.dtype == np.int8 and q.min() >= -127
    recon = qmath.dequantize(q, scale.reshape(2, 1, 1, 1), zp.reshape(2, 1, 1, 1))
    assert np.abs(recon - w).max(axis=(1, 2, 3)).tolist() <= (scale / 2 + 1e-6).tolist()


def test_per_channel_all_zero_channel_is_safe():
    w = np.zeros((3, 4), np.float32)
    w[1] = 1.0
    q, scale, zp = qmath.quantize_weight(w, np.int8, symmetric=True, axis=0)
    assert np.all(np.isfinite(scale)) and np.all(scale > 0)
    assert q[0].tolist() == [0, 0, 0, 0] and q[1].tolist() == [127] * 4


def test_bias_scale_is_input_times_weight_scale():
    bias = np.array([0.3, -2.0], np.float32)
    qb, scale = qmath.quantize_bias(bias, 0.02, np.array([0.01, 0.5], np.float32))
    assert qb.dtype == np.int32
    assert scale.tolist() == pytest.approx([0.0002, 0.01])
    assert (qb * scale).tolist() == pytest.approx(bias.tolist(), abs=1e-4)


def test_metrics():
    a = np.array([1.0, 2.0, 3.0])
    assert qmath.cosine(a, 2 * a) == pytest.approx(1.0)
    assert qmath.cosine(a, -a) == pytest.approx(-1.0)
    assert qmath.sqnr_db(a, a) == float("inf")
    assert qmath.sqnr_db(np.array([10.0]), np.array([9.0])) == pytest.approx(20.0)


def test_mse_weight_ranges_clip_heavy_tails_and_never_raise_the_error():
    from ptq import qmath

    rng = np.random.default_rng(7)
    rows = rng.laplace(size=(6, 4096)).astype(np.float32)  # heavy tails: clipping buys a finer step
    rows[1] = np.linspace(-1, 1, 4096)  # uniform: nothing to gain by clipping
    lo, hi = qmath.mse_weight_ranges(rows, np.int8, symmetric=True, reduce_range=True)
    absmax = np.abs(rows).max(axis=1)
    assert np.all(np.maximum(-lo, hi)[[0, 2, 3, 4, 5]] < 0.97 * absmax[[0, 2, 3, 4, 5]])
    assert hi[1] == rows[1].max() and lo[1] == rows[1].min()

    def error(r_lo, r_hi):
        scale, zp = qmath.scale_zero_point(r_lo, r_hi, np.int8, symmetric=True, reduce_range=True)
        qmin, qmax = qmath.qrange(np.int8, symmetric=True, reduce_range=True)
        q = qmath.quantize(rows, scale[:, None], zp[:, None], np.int8, qmin=qmin, qmax=qmax)
        return np.square(qmath.dequantize(q, scale[:, None], zp[:, None]) - rows).sum(axis=1)

    minmax, clipped = error(rows.min(axis=1), rows.max(axis=1)), error(lo, hi)
    assert np.all(clipped <= minmax) and np.all(clipped[[0, 2, 3, 4, 5]] < minmax[[0, 2, 3, 4, 5]])


def test_quantize_weight_mse_per_channel_and_per_tensor():
    from ptq import qmath

    rng = np.random.default_rng(8)
    w = rng.laplace(size=(16, 64, 3, 3)).astype(np.float32)
    for axis in (0, None):
        q0, s0, z0 = qmath.quantize_weight(w, np.int8, symmetric=True, axis=axis, reduce_range=True)
        q1, s1, z1 = qmath.quantize_weight(w, np.int8, symmetric=True, axis=axis, reduce_range=True, mse=True)
        assert s1.shape == s0.shape and np.all(s1 <= s0) and np.any(s1 < s0)
        shape = qmath.broadcast_shape(w.ndim, axis, w.shape[axis]) if axis is not None else ()
        err0 = np.square(qmath.dequantize(q0, s0.reshape(shape), z0.reshape(shape)) - w).sum()
        err1 = np.square(qmath.dequantize(q1, s1.reshape(shape), z1.reshape(shape)) - w).sum()
        assert err1 < err0
