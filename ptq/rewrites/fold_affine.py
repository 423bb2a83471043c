"""Fold constant per-channel affine ops (Mul, Add, Sub, Div, BatchNormalization) into the
neighbouring Conv's weight and bias, whatever the operand order.

onnxruntime's ConvMulFusion/ConvAddFusion skip a Mul whose constant is the first input or has
shape [1], which is how PP-LCNetV3 (PP-OCRv4 det) exports its learnable affine blocks
``Conv -> Mul(a) -> Add(b) -> HardSwish -> Mul(c) -> Add(d) -> Conv``: each left-over
elementwise op is a full pass over the tensor and breaks onnxruntime's NCHWc chain with a
reorder on each side.

Algebra, with ``a``, ``b`` constants broadcast along the channel axis (a scalar or one value per
channel; ``W``: Conv weight, ``B``: bias, ``o``: output channel, ``i``: input channel):

* after a Conv (forward): ``a * conv(x) + b = conv'(x)`` with ``W'[o] = a[o] W[o]``,
  ``B'[o] = a[o] B[o] + b[o]``. Sub and Div are Add/Mul by ``-b`` and ``1/a``; ``b - conv(x)``
  is ``-1 * conv(x) + b``; BatchNormalization is ``a = scale / sqrt(var + eps)``,
  ``b = bias - mean a``. ConvTranspose likewise, its output channels on weight axis 1.
* before a Conv (backward): ``conv(a x) = conv'(x)`` with ``W'[:, i] = a[i] W[:, i]`` (exact also
  at padded borders: ``a 0 = 0``); ``conv(x + b) = conv'(x)`` with
  ``B'[o] = B[o] + sum_{i,k} W[o, i, k] b[i]``, only without padding (a padded border would see
  ``b`` where the original saw 0). Before a padded Conv, ``a x + b = a (x + b / a)`` still moves
  ``a`` into the weight and leaves one Add (``a`` nonzero).

Every fold is exact in float up to rounding. Weights shared with other nodes are copied.
"""

from __future__ import annotations

from collections.abc import Collection

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ptq.config import Config
from ptq.graph import attr, has_subgraph, initializers, outer_names_used, producers, to_array, unique_name
from ptq.progress import Progress
from ptq.rewrites import Declined, RewriteResult

NAME = "fold_affine"
OPTION = None  # always on: exact in float, and onnxruntime runs the result faster
# What the op list says of the nodes the pass removed (its ``applied`` sites).
DESCRIPTION = "constant affine op folded by ptq into the weights and bias of the neighbouring Conv"
CONVS = ("Conv", "ConvTranspose")
AFFINE = ("Mul", "Add", "Sub", "Div", "BatchNormalization")


@dataclass(frozen=True)
class _Affine:
    """``node`` computes ``scale * x + shift`` of its activation input ``x``; ``scale``/``shift``
    are per channel (shape [C]) or scalars (shape [1]). ``data_rank``: the rank of ``x`` its
    constant is written for (a [C,1,1] constant broadcasts along axis 1 of 4-D data only);
    ``max_rank``: its constant's rank, which broadcasting adds to a lower-rank ``x``."""

    node: onnx.NodeProto
    x: str
    scale: np.ndarray
    shift: np.ndarray
    data_rank: int | None = None  # None: any rank (a scalar, or BatchNormalization's axis 1)
    max_rank: int = 0

    def fits(self, rank: int, channels: int) -> str | None:
        """Why the constant does not broadcast along axis 1 of rank-``rank`` data with
        ``channels`` channels, or None."""
        if self.max_rank > rank or (self.data_rank is not None and self.data_rank != rank):
            return "its constant does not broadcast along the Conv's channel axis"
        if self.scale.size not in (1, channels) or self.shift.size not in (1, channels):
            return f"its constant has {max(self.scale.size, self.shift.size)} values for {channels} channels"
        return None


def enabled(config: Config) -> bool:
    return True


def settings(config: Config) -> tuple[tuple[str, float], ...]:
    return ()


def run(model: onnx.ModelProto, config: Config, progress: Progress, fit: Collection[int] | None = None) -> RewriteResult:
    """The pass as ``ptq.rewrites.passes`` runs it (data-free, static and dynamic mode)."""
    return apply(model)


def apply(model: onnx.ModelProto) -> RewriteResult:
    """Fold every affine op next to a Conv into it, in place, to a fixed point."""
    applied: list[str] = []
    declined: dict[str, Declined] = {}
    while True:
        folded = _sweep(model, declined)
        if not folded:
            break
        applied += folded
        for name in folded:
            declined.pop(name, None)
    _drop_unused_initializers(model)
    notes = (f"folded {len(applied)} constant Mul/Add/Sub/Div/BatchNormalization op(s) into Conv weights",) if applied else ()
    return RewriteResult(NAME, tuple(applied), tuple(declined.values()), notes=notes)


class _Graph:
    """Lookups over one graph, valid for the nodes a sweep has not touched yet."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.model = model
        self.inits = initializers(graph)
        self.made_by = producers(graph)
        self.read_by = _readers(graph)
        # Graph outputs and names a subgraph reads keep their values and names.
        self.pinned = {o.name for o in graph.output}
        for node in graph.node:
            if has_subgraph(node):
                self.pinned |= outer_names_used(node)
        self.taken = set(self.inits) | set(self.made_by) | {i.name for i in graph.input}
        self.touched: set[str] = set()  # nodes changed or removed in this sweep
        self.removed: list[onnx.NodeProto] = []

    def name(self, base: str) -> str:
        name = unique_name(base, self.taken)
        self.taken.add(name)
        return name

    def clean(self, *nodes) -> bool:
        return not any(n is not None and n.name in self.touched for n in nodes)


def _sweep(model: onnx.ModelProto, declined: dict[str, Declined]) -> list[str]:
    """Fold every site whose nodes no earlier fold of this sweep touched; the rest wait for the
    next sweep (one fold can enable another: a Mul folded, the Add after it meets the Conv)."""
    g = _Graph(model)
    folded: list[str] = []
    for node in list(model.graph.node):
        if node.op_type not in AFFINE:
            continue
        affine = _as_affine(node, g.inits)
        if affine is None:
            continue
        readers = g.read_by.get(node.output[0], [])
        after = [r for t in (readers[0].output if len(readers) == 1 else []) for r in g.read_by.get(t, [])]
        if not g.clean(node, g.made_by.get(affine.x), *readers, *after):
            continue
        forward = _forward_reason(affine, g)
        if forward is None:
            _fold_forward(affine, g.made_by[affine.x], g)
        else:
            backward = _backward_reason(affine, g)
            if backward is None:
                _fold_backward(affine, readers, g)
            elif _swap_reason(affine, g) is None:
                _fold_through_add(affine, g)
            else:
                declined[node.name] = Declined(node.name, f"{forward}; {backward}")
                continue
        folded.append(node.name)
    removed = {id(n) for n in g.removed}
    for i in reversed(range(len(model.graph.node))):
        if id(model.graph.node[i]) in removed:
            del model.graph.node[i]
    return folded


def _as_affine(node: onnx.NodeProto, inits) -> _Affine | None:
    """``node`` as scale * x + shift with constant per-channel scale/shift, or None."""
    op = node.op_type
    if op == "BatchNormalization":
        if len(node.output) > 1 and any(node.output[1:]) or not all(t in inits for t in node.input[1:5]):
            return None
        gamma, beta, mean, var = (to_array(inits[t]).astype(np.float64) for t in node.input[1:5])
        scale = gamma / np.sqrt(var + float(attr(node, "epsilon", 1e-5)))
        return _Affine(node, node.input[0], scale, beta - mean * scale)
    if len(node.input) != 2:
        return None
    constant = [i for i, t in enumerate(node.input) if t in inits]
    if len(constant) != 1:
        return None
    k = constant[0]
    if inits[node.input[k]].data_type != onnx.TensorProto.FLOAT:
        return None
    value = to_array(inits[node.input[k]])
    found = _channel_vector(value)
    if found is None:
        return None
    c, data_rank = found[0].astype(np.float64), found[1]
    x = node.input[1 - k]
    one, zero = np.ones_like(c), np.zeros_like(c)
    if op == "Mul":
        scale, shift = c, zero
    elif op == "Add":
        scale, shift = one, c
    elif op == "Sub":
        scale, shift = (one, -c) if k == 1 else (-one, c)
    elif op == "Div" and k == 1 and np.all(c != 0):
        scale, shift = 1.0 / c, zero
    else:
        return None
    return _Affine(node, x, scale, shift, data_rank, value.ndim)


def _channel_vector(value: np.ndarray) -> tuple[np.ndarray, int | None] | None:
    """A constant that broadcasts along the channel axis (axis 1) of the data, as a vector
    ([C] or [1]) and the data rank it needs (None: any). Scalars of any shape of ones qualify;
    a vector is written [C,1,...,1] or [1,C,1,...,1], its trailing ones saying the data rank."""
    if value.size == 1:
        return value.reshape(1), None
    non_unit = [i for i, d in enumerate(value.shape) if d != 1]
    if len(non_unit) != 1:
        return None
    trailing = value.ndim - 1 - non_unit[0]
    if trailing == 0:  # [C] or [1,C] broadcast along the last axis, not the channels
        return None
    return value.reshape(-1), trailing + 2


def _constant_conv_reason(conv: onnx.NodeProto, inits) -> str | None:
    if len(conv.input) < 2 or conv.input[1] not in inits:
        return f"{conv.op_type} {conv.name!r} has a weight computed at run time"
    if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
        return f"{conv.op_type} {conv.name!r} has a bias computed at run time"
    if inits[conv.input[1]].data_type != onnx.TensorProto.FLOAT:
        return f"{conv.op_type} {conv.name!r} has a weight that is not float32"
    return None


def _forward_reason(affine: _Affine, g: _Graph) -> str | None:
    conv = g.made_by.get(affine.x)
    if conv is None or conv.op_type not in CONVS:
        return "its input is not a Conv output"
    why = _constant_conv_reason(conv, g.inits)
    if why:
        return why
    if affine.x in g.pinned or len(g.read_by.get(affine.x, [])) != 1:
        return f"the output of {conv.name!r} is read elsewhere too"
    weight = g.inits[conv.input[1]]
    group = int(attr(conv, "group", 1))
    out_channels = weight.dims[0] if conv.op_type == "Conv" else weight.dims[1] * group
    why = affine.fits(len(weight.dims), out_channels)
    if why:
        return why
    if conv.op_type == "ConvTranspose" and group != 1 and affine.scale.size != 1:
        return "per-channel scale after a grouped ConvTranspose"
    return None


def _backward_reason(affine: _Affine, g: _Graph) -> str | None:
    out = affine.node.output[0]
    readers = g.read_by.get(out, [])
    if out in g.pinned or not readers:
        return "its output is a graph output or read by a subgraph"
    for conv in readers:
        if conv.op_type != "Conv" or conv.input[0] != out or out in conv.input[1:]:
            return "its output is read by something other than a Conv's data input"
        why = _constant_conv_reason(conv, g.inits)
        if why:
            return why
        weight = g.inits[conv.input[1]]
        in_channels = weight.dims[1] * int(attr(conv, "group", 1))
        why = affine.fits(len(weight.dims), in_channels)
        if why:
            return why
        if np.any(affine.shift != 0) and _padded(conv):
            return f"Conv {conv.name!r} pads with zeros, where an offset input would differ at the borders"
    return None


def _swap_reason(affine: _Affine, g: _Graph) -> str | None:
    """``affine`` is a Mul (scale only) whose sole reader is an Add (shift only) that only
    padded Convs read: ``a x + b = a (x + b / a)`` moves ``a`` into the Convs."""
    if np.any(affine.shift != 0) or np.any(affine.scale == 0):
        return "not a nonzero scale"
    out = affine.node.output[0]
    readers = g.read_by.get(out, [])
    if out in g.pinned or len(readers) != 1 or readers[0].op_type not in ("Add", "Sub"):
        return "not followed by an offset alone"
    shift = _as_affine(readers[0], g.inits)
    if shift is None or np.any(shift.scale != 1) or shift.x != out:
        return "not followed by a constant offset"
    if None not in (affine.data_rank, shift.data_rank) and affine.data_rank != shift.data_rank:
        return "its constant and the offset's are written for different ranks"
    data_rank = affine.data_rank if affine.data_rank is not None else shift.data_rank
    both = np.broadcast_to(affine.scale, np.broadcast_shapes(affine.scale.shape, shift.shift.shape))
    scaled = _Affine(shift.node, shift.x, both, np.zeros_like(both), data_rank, max(affine.max_rank, shift.max_rank))
    return _backward_reason(scaled, g)


# ------------------------------------------------------------------------------------------ apply


def _store(g: _Graph, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
    """Make ``value`` the constant ``node.input[index]`` (a new initializer: the old one may be
    shared with other nodes; unused ones are dropped at the end)."""
    tensor = numpy_helper.from_array(value.astype(np.float32), g.name(f"{node.name}/{'weight' if index == 1 else 'bias'}"))
    g.model.graph.initializer.append(tensor)
    g.inits[tensor.name] = tensor
    while len(node.input) <= index:
        node.input.append("")
    node.input[index] = tensor.name
    g.touched.add(node.name)


def _weight_bias(conv: onnx.NodeProto, inits, out_channels: int) -> tuple[np.ndarray, np.ndarray]:
    weight = to_array(inits[conv.input[1]]).astype(np.float64)
    if len(conv.input) > 2 and conv.input[2]:
        bias = to_array(inits[conv.input[2]]).astype(np.float64)
    else:
        bias = np.zeros(out_channels, np.float64)
    return weight, bias


def _fold_forward(affine: _Affine, conv: onnx.NodeProto, g: _Graph) -> None:
    group = int(attr(conv, "group", 1))
    dims = g.inits[conv.input[1]].dims
    out_channels = dims[0] if conv.op_type == "Conv" else dims[1] * group
    weight, bias = _weight_bias(conv, g.inits, out_channels)
    scale = np.broadcast_to(affine.scale, (out_channels,))
    shift = np.broadcast_to(affine.shift, (out_channels,))
    if conv.op_type == "Conv":
        weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    else:  # ConvTranspose W [C_in, M/group, k...]; group 1 here unless the scale is a scalar
        weight = weight * scale[: weight.shape[1]].reshape((1, -1) + (1,) * (weight.ndim - 2))
    _store(g, conv, 1, weight)
    _store(g, conv, 2, bias * scale + shift)
    # The Conv now writes the affine op's output (same values, same name).
    conv.output[0] = affine.node.output[0]
    _remove(g, affine.node)


def _input_scaled(conv: onnx.NodeProto, weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``weight`` with input channel i (over all groups) multiplied by ``scale[i]``."""
    group = int(attr(conv, "group", 1))
    per_group_in = weight.shape[1]
    out_channels = weight.shape[0]
    full = np.broadcast_to(scale, (per_group_in * group,))
    # output channel o belongs to group o // (M / group) and reads inputs of that group
    group_of = np.arange(out_channels) // (out_channels // group)
    index = group_of[:, None] * per_group_in + np.arange(per_group_in)[None, :]
    return weight * full[index].reshape(weight.shape[:2] + (1,) * (weight.ndim - 2))


def _fold_backward(affine: _Affine, convs: list[onnx.NodeProto], g: _Graph) -> None:
    for conv in convs:
        weight, bias = _weight_bias(conv, g.inits, g.inits[conv.input[1]].dims[0])
        # conv(a x + b): W' = W a[i]; B' = B + sum_{i,k} W[o,i,k] b[i]
        _store(g, conv, 1, _input_scaled(conv, weight, affine.scale))
        if np.any(affine.shift != 0):
            shifted = _input_scaled(conv, weight, affine.shift).reshape(weight.shape[0], -1).sum(axis=1)
            _store(g, conv, 2, bias + shifted)
        conv.input[0] = affine.x
    _remove(g, affine.node)


def _fold_through_add(affine: _Affine, g: _Graph) -> None:
    """``Add(Mul(x, a), b) -> padded Convs`` becomes ``Add(x, b / a) -> Convs'`` (W' = W a[i])."""
    add = g.read_by[affine.node.output[0]][0]
    shift = _as_affine(add, g.inits).shift
    convs = g.read_by[add.output[0]]
    for conv in convs:
        weight, _ = _weight_bias(conv, g.inits, g.inits[conv.input[1]].dims[0])
        _store(g, conv, 1, _input_scaled(conv, weight, affine.scale))
    channels = max(affine.scale.size, shift.size)
    offset = np.broadcast_to(shift, (channels,)) / np.broadcast_to(affine.scale, (channels,))
    rank = len(g.inits[convs[0].input[1]].dims)
    shape = (1,) if channels == 1 else (channels,) + (1,) * (rank - 2)
    offset_name = g.name(f"{add.name}/offset")
    g.model.graph.initializer.append(numpy_helper.from_array(offset.reshape(shape).astype(np.float32), offset_name))
    # The Add's output now holds (a x + b) / a: a new name, so nothing compares it with the original.
    new_out = g.name(f"{add.output[0]}/unscaled")
    for conv in convs:
        conv.input[0] = new_out
    del add.input[:]
    add.op_type = "Add"
    add.input.extend([affine.x, offset_name])
    _drop_value_info(g.model, add.output[0])
    add.output[0] = new_out
    g.touched.add(add.name)
    _remove(g, affine.node)


def _remove(g: _Graph, node: onnx.NodeProto) -> None:
    _drop_value_info(g.model, node.output[0])
    g.touched.add(node.name)
    g.removed.append(node)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    graph = model.graph
    used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    for node in graph.node:
        if has_subgraph(node):
            used |= outer_names_used(node)
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name not in used:
            del graph.initializer[i]


def _drop_value_info(model: onnx.ModelProto, name: str) -> None:
    for i, vi in enumerate(model.graph.value_info):
        if vi.name == name:
            del model.graph.value_info[i]
            break


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor -> the main-graph nodes reading it as an input (subgraph reads: ``pinned``)."""
    result: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for t in dict.fromkeys(node.input):
            if t:
                result.setdefault(t, []).append(node)
    return result


def _padded(conv: onnx.NodeProto) -> bool:
    auto_pad = attr(conv, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        return True
    return any(int(p) != 0 for p in attr(conv, "pads", []) or [])
