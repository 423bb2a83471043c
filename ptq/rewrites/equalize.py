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

from collections.abc import Collection

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ptq.config import Config
from ptq.graph import attr, consumers, initializers, unique_name
from ptq.progress import Progress
from ptq.rewrites import Declined, RewriteResult

NAME = "equalize"
OPTION = "--equalize"

HOMOGENEOUS_OPS = frozenset({"Relu", "LeakyRelu"})
ROUNDS = 4


@dataclass(frozen=True)
class Pair:
    """Two Convs whose shared channels can be rescaled for free."""

    first: str  # node names
    second: str
    between: tuple[str, ...]  # homogeneous nodes from the first's output to the second's input


def is_conv_with_weight(node: onnx.NodeProto, inits) -> bool:
    return node.op_type == "Conv" and node.domain in ("", "ai.onnx") and len(node.input) >= 2 and node.input[1] in inits


@dataclass(frozen=True)
class ConvScan:
    """What the pattern searches read of a graph, gathered once."""

    inits: dict
    read_by: dict
    outputs: set

    @classmethod
    def of(cls, model: onnx.ModelProto) -> ConvScan:
        graph = model.graph
        return cls(initializers(graph), consumers(graph), {o.name for o in graph.output})

    def rescalable_convs(self, model: onnx.ModelProto):
        """Convs whose weight and bias (if any) are constants: their output channels can be rescaled."""
        for node in model.graph.node:
            if is_conv_with_weight(node, self.inits) and not (len(node.input) > 2 and node.input[2] and node.input[2] not in self.inits):
                yield node


def find_pairs(model: onnx.ModelProto) -> list[Pair]:
    """Conv pairs whose intermediate tensors are read by nothing else (graph order)."""
    g = ConvScan.of(model)
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
        if not is_conv_with_weight(second, inits) or second.input[0] != tensor or second.input[1] == node.input[1]:
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


def own_initializer(graph: onnx.GraphProto, node: onnx.NodeProto, index: int, inits, read_by) -> onnx.TensorProto:
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


def enabled(config: Config) -> bool:
    return config.equalize


def settings(config: Config) -> tuple[tuple[str, float], ...]:
    return ()


def run(model: onnx.ModelProto, config: Config, progress: Progress, fit: Collection[int] | None = None) -> RewriteResult:
    """The pass: find the pairs, equalize them in place (data-free: static and dynamic mode)."""
    pairs = find_pairs(model)
    changed = _equalize(model, pairs)
    touched = {p.first for p in pairs} | {b for p in pairs for b in p.between}
    return RewriteResult(
        NAME,
        applied=tuple(p.first for p in pairs if p in changed),
        declined=tuple(Declined(p.first, "channels balanced already (or weights not finite)") for p in pairs if p not in changed),
        rescaled=tuple(n.output[0] for n in model.graph.node if n.name in touched),
        notes=(f"cross-layer equalization: {len(changed)} of {len(pairs)} Conv pair(s) rescaled",),
    )


def apply(model: onnx.ModelProto, pairs: list[Pair], rounds: int = ROUNDS) -> int:
    """Equalize ``pairs`` in place, ``rounds`` times in turn; returns how many pairs changed."""
    return len(_equalize(model, pairs, rounds))


def _equalize(model: onnx.ModelProto, pairs: list[Pair], rounds: int = ROUNDS) -> set[Pair]:
    graph = model.graph
    inits = initializers(graph)
    read_by = consumers(graph)
    by_name = {n.name: n for n in graph.node}
    changed = set()
    for _ in range(rounds):
        for pair in pairs:
            first, second = by_name[pair.first], by_name[pair.second]
            w1_proto = own_initializer(graph, first, 1, inits, read_by)
            w2_proto = own_initializer(graph, second, 1, inits, read_by)
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
                b_proto = own_initializer(graph, first, 2, inits, read_by)
                b = numpy_helper.to_array(b_proto).astype(np.float64) / s
                b_proto.CopyFrom(numpy_helper.from_array(b.astype(np.float32), b_proto.name))
    return changed
