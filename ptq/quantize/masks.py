"""Find the tensors that carry an additive attention mask, so they stay float.

Transformer exports mask padded (or future) positions by adding a huge negative fill to the
attention scores before Softmax: ``(1 - mask) * finfo(float32).min`` (transformers' eager BERT),
``Where(mask, 0, -inf)``, ``(1 - mask) * -10000`` (older exports). Softmax turns the fill into
exact zeros. No 8-bit range can hold both the fill and the scores: a range set by the fill
(-3.4e38) rounds every score to the same code, a range set by the scores clamps the fill to a
few units below them. Measured on all-MiniLM-L6-v2 in padded batches of 4 (``bench.padding``):
with the fill in the range of the Add into Softmax, sentence-embedding cosine 0.41.

The search is structural, so it needs no samples and holds for inputs the calibration set did
not show (padded batches calibrated on unpadded ones): a float constant holding a fill (a value
at or below ``-MASK_FILL``, or -inf) seeds it, and the fill is followed forward through the ops
that pass values on (arithmetic, Where's branches, reshaping, casts) up to the op that consumes
it (Softmax, typically). Nodes that produce or read a fill-carrying tensor are the mask path;
the nodes computing only the 0/1 factor the fill is multiplied by (``1 - Cast(attention_mask)``)
join it. Clip bounds, Where conditions and shape inputs are not values and never seed it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ptq.graph import attr, consumers, initializers, producers, to_array

# Fills in use are -10000 (BERT's original code), -1e9, finfo(float32).min and -inf; no scalar
# constant this large in magnitude appears among the real models' elementwise constants otherwise.
MASK_FILL = 1e4
REASON = "attention-mask"

# Ops through which a fill reaches the output unchanged or scaled by a mask factor, with the
# inputs that carry values (others are shapes, axes, conditions).
_PASS_VALUES: dict[str, tuple[int, ...] | None] = {
    "Add": None,
    "Sub": None,
    "Mul": None,
    "Div": (0,),
    "Where": (1, 2),
    "Cast": (0,),
    "Identity": (0,),
    "Reshape": (0,),
    "Unsqueeze": (0,),
    "Squeeze": (0,),
    "Flatten": (0,),
    "Transpose": (0,),
    "Expand": (0,),
    "Tile": (0,),
    "Slice": (0,),
    "Gather": (0,),
    "Concat": None,
}
# Ops that build the 0/1 factor from the mask input (followed backwards from the mask path).
_MASK_FACTOR_OPS = frozenset(_PASS_VALUES) | {"Not", "Equal", "Less", "Greater", "And", "Or"}
# Constants a mask factor is built with are scalars and axes; an embedding table is not one.
_SMALL_CONSTANT = 64


@dataclass(frozen=True)
class MaskPath:
    """The mask path of a graph: fill constants, fill-carrying tensors, and the nodes to keep float."""

    fills: dict[str, float]  # constant tensor -> its most negative value
    tensors: frozenset[str]  # activations carrying a fill
    nodes: dict[str, str]  # node name -> why it is on the path

    def __bool__(self) -> bool:
        return bool(self.nodes)


def is_fill(values: np.ndarray) -> bool:
    """Whether a float constant holds an additive-mask fill (a value <= -MASK_FILL or -inf)."""
    values = np.asarray(values)
    return values.dtype.kind == "f" and values.size > 0 and bool(np.nanmin(values) <= -MASK_FILL)


def _value_inputs(node: onnx.NodeProto) -> list[str]:
    picks = _PASS_VALUES.get(node.op_type, ())
    indices = range(len(node.input)) if picks is None else [i for i in picks if i < len(node.input)]
    return [node.input[i] for i in indices if node.input[i]]


def _fill_constants(graph: onnx.GraphProto) -> dict[str, float]:
    """Float constants (initializers, Constant and ConstantOfShape outputs) that hold a fill."""
    fills = {}
    for name, tensor in initializers(graph).items():
        if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            values = to_array(tensor)
            if is_fill(values):
                fills[name] = float(np.nanmin(values))
    for node in graph.node:
        if node.op_type in ("Constant", "ConstantOfShape") and node.domain in ("", "ai.onnx"):
            value = attr(node, "value")
            if isinstance(value, onnx.TensorProto) and is_fill(to_array(value)):
                fills[node.output[0]] = float(np.nanmin(to_array(value)))
    return fills


def find_mask_path(model: onnx.ModelProto) -> MaskPath:
    """The mask path of ``model``'s main graph (empty when it has no fill constant)."""
    graph = model.graph
    fills = _fill_constants(graph)
    if not fills:
        return MaskPath({}, frozenset(), {})
    read_by = consumers(graph)
    carrying: set[str] = set()
    nodes: dict[str, str] = {}
    frontier = list(fills)
    while frontier:  # forward from each fill, in the order found: deterministic
        tensor = frontier.pop(0)
        for node in read_by.get(tensor, []):
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type in _PASS_VALUES:
                if tensor not in _value_inputs(node):
                    continue  # a shape, axis or condition input
                nodes.setdefault(node.name, _reason(node, tensor in fills, fills.get(tensor)))
                for out in node.output:
                    if out and out not in carrying:
                        carrying.add(out)
                        frontier.append(out)
            elif tensor in carrying:
                nodes.setdefault(node.name, f"{REASON}: reads the additive mask (scores + fill) and turns it into zeros")
    nodes.update(_factor_nodes(graph, nodes, read_by))
    return MaskPath(fills, frozenset(carrying), nodes)


def _reason(node: onnx.NodeProto, seeded: bool, fill: float | None) -> str:
    if seeded:
        return f"{REASON}: applies the mask fill {fill:.3g}, which no int8 range holds beside the scores"
    return f"{REASON}: carries the additive mask fill, which no int8 range holds beside the scores"


def _factor_tensors(graph) -> set[str]:
    """Tensors computed from graph inputs and small constants by mask-factor ops alone."""
    inits = initializers(graph)
    small = {n for n, t in inits.items() if int(np.prod(t.dims, dtype=np.int64)) <= _SMALL_CONSTANT}
    factor = {i.name for i in graph.input if i.name not in inits}
    for node in graph.node:  # topological order
        if node.op_type in _MASK_FACTOR_OPS and node.domain in ("", "ai.onnx"):
            inputs = [t for t in node.input if t]
            if any(t in factor for t in inputs) and all(t in factor or t in small for t in inputs):
                factor.update(node.output)
    return factor


def _factor_nodes(graph, path: dict[str, str], read_by) -> dict[str, str]:
    """Nodes computing only the mask factor and feeding only the mask path, back from it."""
    made_by = producers(graph)
    factor = _factor_tensors(graph)
    found: dict[str, str] = {}
    on_path = set(path)
    stack = [t for node in graph.node if node.name in on_path for t in node.input]
    while stack:
        tensor = stack.pop()
        node = made_by.get(tensor)
        if node is None or node.name in on_path or tensor not in factor:
            continue
        readers = [r for out in node.output for r in read_by.get(out, [])]
        if not readers or any(r.name not in on_path for r in readers):
            continue  # shared with the rest of the model (e.g. the mask cast mean pooling reads)
        on_path.add(node.name)
        found[node.name] = f"{REASON}: builds the mask factor the fill is multiplied by"
        stack.extend(node.input)
    return found
