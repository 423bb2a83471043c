"""Rewrite HardSwish and HardSigmoid exported as elementwise chains into ``HardSigmoid`` (and
``Mul``), the form onnxruntime fuses into the Conv before it.

Exporters without a HardSwish op (opset < 14, Paddle's and PyTorch's older exporters) write

    hardsigmoid(x) = relu6(x + 3) / 6        Add(x, 3) -> Clip(0, 6) -> Div(6) | Mul(1/6)
    hardswish(x)   = x * relu6(x + 3) / 6    ... and Mul(x, .) before or after the Div

Four to five elementwise passes over the tensor, and each breaks onnxruntime's NCHWc chain
with a reorder on both sides. ``HardSigmoid(alpha=1/6, beta=1/2)`` computes
``clip(x / 6 + 1/2, 0, 1) = relu6(x + 3) / 6``, and ``Mul(x, HardSigmoid(x))`` is exactly how
onnx defines HardSwish (its function body) and how onnxruntime's preparation inlines a
HardSwish node: at the default level onnxruntime fuses ``Conv -> HardSigmoid`` and
``Conv -> HardSigmoid -> Mul`` into the Conv's activation (NCHWc ``Conv`` with activation
``HardSigmoid`` / ``HardSwish``), and the int8 planner finds a table kernel for HardSigmoid.
That form exists at every opset ptq prepares (HardSigmoid since opset 6), so no opset is
declined and no HardSwish node is emitted (ptq's preparation would inline it again).

Exact in float up to rounding: ``x / 6 + 1/2`` against ``(x + 3) / 6``.
"""

from __future__ import annotations

from collections.abc import Collection

from dataclasses import dataclass

import onnx
from onnx import helper

from ptq.config import Config
from ptq.graph import attr, has_subgraph, initializers, outer_names_used, producers, to_array, unique_name
from ptq.progress import Progress
from ptq.rewrites import Declined, RewriteResult

NAME = "fuse_hardswish"
OPTION = None  # always on: exact in float, and onnxruntime runs the result faster
# What the op list says of the nodes the pass removed (its ``applied`` sites).
DESCRIPTION = "rewritten by ptq with its HardSwish/HardSigmoid chain into HardSigmoid (and Mul), which onnxruntime fuses"
ALPHA = 1.0 / 6.0
BETA = 0.5
# Constants written as 3, 6 and 1/6 by exporters; 1/6 in float32 may be rounded either way.
_REL_TOL = 1e-6


@dataclass(frozen=True)
class _Site:
    """One match: ``nodes`` (graph order) compute HardSigmoid(x), times x when ``swish``;
    ``output`` is the last node's output."""

    x: str
    nodes: tuple[onnx.NodeProto, ...]
    output: str
    swish: bool


def enabled(config: Config) -> bool:
    return True


def settings(config: Config) -> tuple[tuple[str, float], ...]:
    return ()


def run(model: onnx.ModelProto, config: Config, progress: Progress, fit: Collection[int] | None = None) -> RewriteResult:
    """The pass as ``ptq.rewrites.passes`` runs it (data-free, static and dynamic mode)."""
    return apply(model)


def apply(model: onnx.ModelProto) -> RewriteResult:
    """Rewrite every HardSigmoid/HardSwish chain of ``model`` in place."""
    graph = model.graph
    inits = initializers(graph)
    made_by = producers(graph)
    read_by: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for t in dict.fromkeys(node.input):
            if t:
                read_by.setdefault(t, []).append(node)
    pinned = {o.name for o in graph.output}
    for node in graph.node:
        if has_subgraph(node):
            pinned |= outer_names_used(node)

    sites: list[_Site] = []
    declined: list[Declined] = []
    for node in graph.node:
        if node.op_type != "Clip":
            continue
        site, reason = _match(node, inits, made_by, read_by, pinned)
        if site is not None:
            sites.append(site)
        elif reason:
            declined.append(Declined(node.name, reason))

    taken = set(inits) | set(made_by) | {i.name for i in graph.input} | {n.name for n in graph.node}
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id of a site's last node -> its replacement
    dropped: set[int] = set()
    for site in sites:
        first = site.nodes[0].name
        if site.swish:
            gate = unique_name(f"{site.output}/hardsigmoid", taken)
            taken.add(gate)
            new = [
                helper.make_node("HardSigmoid", [site.x], [gate], name=unique_name(f"{first}/HardSigmoid", taken), alpha=ALPHA, beta=BETA),
                helper.make_node("Mul", [site.x, gate], [site.output], name=unique_name(f"{site.nodes[-1].name}/HardSwish", taken)),
            ]
        else:
            new = [helper.make_node("HardSigmoid", [site.x], [site.output], name=unique_name(f"{first}/HardSigmoid", taken), alpha=ALPHA, beta=BETA)]
        taken |= {n.name for n in new}
        replaced[id(site.nodes[-1])] = new
        dropped |= {id(n) for n in site.nodes}
        for n in site.nodes[:-1]:
            _drop_value_info(graph, n.output[0])

    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in replaced:
            kept.extend(replaced[id(node)])
        elif id(node) not in dropped:
            kept.append(node)
    if sites:
        new_nodes = [onnx.NodeProto() for _ in kept]
        for dst, src in zip(new_nodes, kept):
            dst.CopyFrom(src)
        del graph.node[:]
        graph.node.extend(new_nodes)
        _drop_unused_initializers(graph)
    swish = sum(s.swish for s in sites)
    notes = (
        f"rewrote {swish} HardSwish and {len(sites) - swish} HardSigmoid pattern(s) of elementwise ops into HardSigmoid",
    ) if sites else ()
    # applied: every node of each rewritten chain (all are gone; the op list names them)
    return RewriteResult(NAME, tuple(n.name for s in sites for n in s.nodes), tuple(declined), notes=notes)


def _match(clip: onnx.NodeProto, inits, made_by, read_by, pinned) -> tuple[_Site | None, str | None]:
    """The HardSigmoid/HardSwish chain around ``clip``, or why there is none (None: not even
    the shape of one, so nothing worth reporting)."""
    low, high = _clip_bounds(clip, inits)
    add = made_by.get(clip.input[0]) if clip.input else None
    if add is None or add.op_type != "Add":
        return None, None
    three = _scalar_operand(add, inits)
    if three is None or not _close(three[1], 3.0):
        return None, None
    x = add.input[1 - three[0]]
    if low is None or high is None or not (_close(low, 0.0) and _close(high, 6.0)):
        return None, "Clip after Add(x, 3) is not relu6 (bounds other than 0 and 6, or computed at run time)"

    def only_reader(tensor: str) -> onnx.NodeProto | None:
        readers = read_by.get(tensor, [])
        return readers[0] if len(readers) == 1 and tensor not in pinned else None

    if only_reader(add.output[0]) is not clip:
        return None, "the x + 3 tensor is read elsewhere too"
    nxt = only_reader(clip.output[0])
    if nxt is None:
        return None, "the relu6(x + 3) tensor is read elsewhere too (or is a graph output)"

    chain = [add, clip]
    swish = False
    divided = False
    # Up to two more nodes: a division by 6 and a multiplication by x, in either order.
    node = nxt
    for _ in range(2):
        if not divided and _is_sixth(node, chain[-1].output[0], inits):
            divided = True
        elif not swish and node.op_type == "Mul" and sorted(node.input) == sorted([chain[-1].output[0], x]) and x != chain[-1].output[0]:
            swish = True
        else:
            break
        chain.append(node)
        follower = only_reader(node.output[0])
        if follower is None:
            break
        node = follower
    if not divided:
        return None, "relu6(x + 3) is not divided by 6"
    return _Site(x, tuple(chain), chain[-1].output[0], swish), None


def _is_sixth(node: onnx.NodeProto, tensor: str, inits) -> bool:
    """``node`` computes tensor / 6 (Div by 6, or Mul by 1/6 in either order)."""
    if node.op_type == "Div" and len(node.input) == 2 and node.input[0] == tensor:
        value = _constant_scalar(node.input[1], inits)
        return value is not None and _close(value, 6.0)
    if node.op_type == "Mul":
        operand = _scalar_operand(node, inits)
        return operand is not None and node.input[1 - operand[0]] == tensor and _close(operand[1], 1.0 / 6.0)
    return False


def _scalar_operand(node: onnx.NodeProto, inits) -> tuple[int, float] | None:
    """(index, value) of the one constant scalar input of a binary node."""
    if len(node.input) != 2:
        return None
    found = [(i, _constant_scalar(t, inits)) for i, t in enumerate(node.input)]
    found = [(i, v) for i, v in found if v is not None]
    if len(found) != 1 or node.input[0] == node.input[1]:
        return None
    return found[0]


def _constant_scalar(name: str, inits) -> float | None:
    """A float32 initializer holding one value, of rank <= 1 (a higher rank would broadcast x up)."""
    tensor = inits.get(name)
    if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) > 1:
        return None
    value = to_array(tensor)
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _clip_bounds(clip: onnx.NodeProto, inits) -> tuple[float | None, float | None]:
    if len(clip.input) > 1:  # opset >= 11: bounds are inputs; a missing one is unbounded
        bounds = []
        for i in (1, 2):
            name = clip.input[i] if len(clip.input) > i else ""
            bounds.append(_constant_scalar(name, inits) if name else None)
        return bounds[0], bounds[1]
    return attr(clip, "min", None), attr(clip, "max", None)


def _close(value: float, target: float) -> bool:
    return abs(value - target) <= _REL_TOL * max(1.0, abs(target))


def _drop_value_info(graph: onnx.GraphProto, name: str) -> None:
    for i, vi in enumerate(graph.value_info):
        if vi.name == name:
            del graph.value_info[i]
            break


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    for node in graph.node:
        if has_subgraph(node):
            used |= outer_names_used(node)
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name not in used:
            del graph.initializer[i]
