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

A mask computed outside the model arrives as a float graph input instead (``extended_attention_mask``
of 0 and a fill, added to the scores): no constant holds the fill, and the samples may not show
one (unpadded calibration batches hold only zeros). Such an input seeds the path too when its
structure says it is an additive attention bias: reshaped or scaled by constants only, it is
added to attention scores (a MatMul of two activations, scaled) that a Softmax then normalizes.
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
    inputs: tuple[str, ...]  # float graph inputs added to attention scores (a mask computed outside)
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
    read_by = consumers(graph)
    mask_inputs = _mask_inputs(graph, read_by)
    if not fills and not mask_inputs:
        return MaskPath({}, (), frozenset(), {})
    carrying: set[str] = set()
    nodes: dict[str, str] = {}
    frontier = list(fills) + list(mask_inputs)
    while frontier:  # forward from each fill, in the order found: deterministic
        tensor = frontier.pop(0)
        for node in read_by.get(tensor, []):
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type in _PASS_VALUES:
                if tensor not in _value_inputs(node):
                    continue  # a shape, axis or condition input
                nodes.setdefault(node.name, _reason(tensor, fills, mask_inputs))
                for out in node.output:
                    if out and out not in carrying:
                        carrying.add(out)
                        frontier.append(out)
            elif tensor in carrying:
                nodes.setdefault(node.name, f"{REASON}: reads the additive mask (scores + fill) and turns it into zeros")
    nodes.update(_factor_nodes(graph, nodes, read_by))
    return MaskPath(fills, mask_inputs, frozenset(carrying), nodes)


def _reason(tensor: str, fills: dict[str, float], mask_inputs: tuple[str, ...]) -> str:
    if tensor in fills:
        return f"{REASON}: applies the mask fill {fills[tensor]:.3g}, which no int8 range holds beside the scores"
    if tensor in mask_inputs:
        return f"{REASON}: applies the additive mask input {tensor} (0 or a large negative fill), which no int8 range holds beside the scores"
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


# Ops a mask input may pass through on its way to the scores: reshaping, and arithmetic with constants.
_RESHAPE_OPS = frozenset({"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Expand", "Tile", "Slice", "Gather", "Concat"})
_SCALE_OPS = frozenset({"Add", "Sub", "Mul", "Div"})
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
# Attention scores reach the mask Add from Q.K^T through at most a scale and a position bias.
_SCORE_DEPTH = 4


def _mask_inputs(graph: onnx.GraphProto, read_by) -> tuple[str, ...]:
    """Float graph inputs that are additive attention masks (see the module docstring), in input order."""
    inits = initializers(graph)
    constants = set(inits) | {o for n in graph.node if n.op_type in ("Constant", "ConstantOfShape") for o in n.output}
    made_by = producers(graph)
    found = []
    for value in graph.input:
        if value.name in inits or value.type.tensor_type.elem_type not in _FLOAT_TYPES:
            continue
        derived = _derived_from(value.name, constants, read_by)
        sites = [
            node
            for tensor in derived
            for node in read_by.get(tensor, [])
            if node.op_type == "Add" and node.domain in ("", "ai.onnx")
            and any(other not in derived and _is_scores(other, made_by, constants, _SCORE_DEPTH) for other in node.input)
        ]
        if any(_reaches_softmax(site.output[0], read_by) for site in sites):
            found.append(value.name)
    return tuple(found)


def _derived_from(name: str, constants: set[str], read_by) -> set[str]:
    """Tensors computed from ``name`` and constants alone by reshaping ops and arithmetic."""
    derived = {name}
    frontier = [name]
    while frontier:
        tensor = frontier.pop()
        for node in read_by.get(tensor, []):
            if node.domain not in ("", "ai.onnx") or node.op_type not in _RESHAPE_OPS | _SCALE_OPS:
                continue
            values = _value_inputs(node)
            if tensor in values and all(t in derived or t in constants for t in values):
                for out in node.output:
                    if out and out not in derived:
                        derived.add(out)
                        frontier.append(out)
    return derived


def _is_scores(tensor: str, made_by, constants: set[str], depth: int) -> bool:
    """Whether ``tensor`` is attention scores: a MatMul (or Einsum) of two activations, maybe scaled or biased."""
    node = made_by.get(tensor)
    if node is None or depth < 0 or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in ("MatMul", "Einsum"):
        operands = [t for t in node.input if t]
        return len(operands) == 2 and not any(t in constants for t in operands)
    if node.op_type in _SCALE_OPS or node.op_type in _RESHAPE_OPS:
        return any(_is_scores(t, made_by, constants, depth - 1) for t in _value_inputs(node) if t not in constants)
    return False


def _reaches_softmax(tensor: str, read_by) -> bool:
    """Whether ``tensor`` feeds a Softmax, directly or through reshaping ops and further additions."""
    seen, frontier = {tensor}, [tensor]
    while frontier:
        for node in read_by.get(frontier.pop(), []):
            if node.op_type in ("Softmax", "LogSoftmax"):
                return True
            if node.op_type in _RESHAPE_OPS or node.op_type in ("Add", "Sub"):
                for out in node.output:
                    if out and out not in seen:
                        seen.add(out)
                        frontier.append(out)
    return False
