"""Decide which nodes of a prepared model run int8 (static mode), and why the others stay float.

The weighted ops (Conv, MatMul, Gemm, ConvTranspose) are where int8 pays, so they are always
quantized when they can be. Every other int8-capable op joins them only where that does not add
a conversion: each tensor that crosses between the int8 region R and float code costs one pass
over it (a QuantizeLinear into R, or a DequantizeLinear out of R). A candidate joins R when

    cost(R + node) <= cost(R),   cost(R) = sum over tensors t of
        [t enters R from float code] + [t leaves R into float code or a graph output]

so an Add between two quantized convolutions is quantized (its inputs and output are int8
anyway), while an Add between two LayerNorms stays float (quantizing it would add three passes).
Relu/Clip right after an int8 node are absorbed: the QuantizeLinear goes after them and
onnxruntime folds them into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto

from ptq.config import Config, Scheme
from ptq.graph import attr, consumers, elem_types, has_subgraph, initializers, producers, to_array
from ptq.quantize import hardsigmoid, kernels, lstm, masks
from ptq.recipe import ACCURACY, FLOAT, USER, Recipe

# Roles of quantized nodes.
WEIGHTED = "weighted"  # Conv/MatMul/Gemm/ConvTranspose with int8 weights
ELEMENTWISE = "elementwise"  # QLinearAdd/Mul/Concat/... kernels
MOVEMENT = "movement"  # runs on the int8 tensor, keeps its scale
ABSORBED = "absorbed"  # Relu/Clip folded into the following QuantizeLinear
WEIGHT_ONLY = "weight-only"  # int8 weight dequantized for a float kernel (no int8 kernel to fuse)
HYBRID = "hybrid"  # int8 weight, activation quantized at run time (DynamicQuantizeMatMul)
TABLE = "table"  # int8 through a lookup-table kernel (HardSigmoid: ptq.quantize.hardsigmoid)


@dataclass(frozen=True)
class Decision:
    """What the plan does with one node; ``reason`` says why a node stays float."""

    quantize: bool
    role: str | None = None
    reason: str | None = None


@dataclass
class Plan:
    """Nodes to quantize and the activation tensors that get QuantizeLinear/DequantizeLinear."""

    decisions: dict[str, Decision]
    activations: list[str] = field(default_factory=list)  # tensors that get a Q (in graph order)
    # weighted node name -> index of its weight input and its per-channel axis (None = per tensor)
    weights: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    mse_weights: bool = False  # MSE-clipped weight ranges (the recipe's weight range), else min/max
    # weighted node name -> the mean output shift of its int8 weights its bias absorbs (the
    # recipe's bias correction, for the nodes this plan gives int8 weights; ``quantize.bias``)
    bias_shifts: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def quantized(self, name: str) -> bool:
        d = self.decisions.get(name)
        return bool(d and d.quantize)

    def role(self, name: str) -> str | None:
        d = self.decisions.get(name)
        return d.role if d and d.quantize else None


def is_excluded(node: onnx.NodeProto, exclude: tuple[str, ...]) -> bool:
    return node.name in exclude or node.op_type in exclude


def weight_axis(node: onnx.NodeProto, weight: onnx.TensorProto, per_channel: bool) -> int | None:
    """Per-channel axis of a weighted node's weight, or None for per-tensor."""
    if not per_channel or len(weight.dims) < 2:
        return None
    if node.op_type in kernels.CONV_WEIGHT_AXIS:
        return kernels.CONV_WEIGHT_AXIS[node.op_type]
    if node.op_type == "Gemm":
        return 0 if attr(node, "transB", 0) else 1
    return len(weight.dims) - 1  # MatMul: output columns


def make_plan(model: onnx.ModelProto, config: Config, recipe: Recipe | None = None, mask_path: masks.MaskPath | None = None) -> Plan:
    """The plan for ``model``: ``config`` says how (schemes, per-channel), ``recipe`` where
    (nodes kept float or run hybrid, the weight range; what the user asked when None).
    ``mask_path``: ``masks.find_mask_path(model)`` when the caller has it (it reads every float
    weight: 0.08 s a plan on MiniLM, which the accuracy search makes a plan for ~180 times)."""
    recipe = recipe if recipe is not None else Recipe.asked(config)
    graph = model.graph
    inits = initializers(graph)
    types = _known_types(model)
    produced_by = producers(graph)
    read_by = consumers(graph)
    graph_outputs = {o.name for o in graph.output}

    def is_float_activation(name: str) -> bool:
        return bool(name) and name not in inits and types.get(name) == TensorProto.FLOAT

    decisions: dict[str, Decision] = {}
    weights: dict[str, tuple[int, int | None]] = {}
    candidates: list[onnx.NodeProto] = []
    mask_path = (mask_path or masks.find_mask_path(model)).nodes  # float: no int8 range holds a mask fill
    for node in graph.node:
        if node.name in mask_path:
            decisions[node.name] = Decision(False, reason=mask_path[node.name])
            continue
        decision = _first_look(node, config, recipe, inits, is_float_activation, weights, graph_outputs)
        if decision is None:
            candidates.append(node)
        else:
            decisions[node.name] = decision

    # Folding Relu/Clip into a Q needs the Q's zero point at the clip's lower bound, which an
    # asymmetric (uint8) range gives; symmetric int8 (zero point 0) keeps negative codes.
    absorb = config.activations == Scheme.ASYMMETRIC
    region = {n for n, d in decisions.items() if d.quantize and d.role not in (WEIGHT_ONLY, HYBRID)}
    roles = {n: d.role for n, d in decisions.items() if d.quantize}

    def cost_of(tensor: str, region: set[str]) -> int:
        producer = produced_by.get(tensor)
        from_r = producer is not None and producer.name in region
        readers = read_by.get(tensor, [])
        into_r = any(c.name in region for c in readers)
        to_float = tensor in graph_outputs or any(c.name not in region for c in readers)
        return int(into_r and not from_r) + int(from_r and to_float)

    def leaves(tensor: str, region: set[str]) -> bool:
        readers = read_by.get(tensor, [])
        return tensor in graph_outputs or any(c.name not in region for c in readers)

    def touched(node: onnx.NodeProto) -> set[str]:
        data = [node.input[i] for i in kernels.data_inputs(node.op_type, len(node.input))]
        return {t for t in list(data) + list(node.output) if is_float_activation(t)}

    def try_add(group: list[onnx.NodeProto]) -> bool:
        """Add ``group`` to R if its ready members do not raise the cost."""
        while group:
            trial = region | {n.name for n in group}
            trial_roles = {**roles, **{n.name: _role_of(n) for n in group}}
            ready = [
                n for n in group
                if _candidate_ready(n, is_float_activation, produced_by, read_by, trial, trial_roles, absorb)
            ]
            if len(ready) == len(group):
                break
            group = ready
        if not group:
            return False
        tensors = set().union(*(touched(n) for n in group))
        after = sum(cost_of(t, trial) for t in tensors)
        before = sum(cost_of(t, region) for t in tensors)
        if after > before:
            return False
        if after == before and any(leaves(t, trial) for n in group for t in n.output if is_float_activation(t)):
            # A tie that only moves an exit of R past a nonlinear op (Softmax before a model
            # output, say) adds a rounding step and saves nothing: keep the node float.
            return False
        region.update(trial)
        roles.update(trial_roles)
        return True

    # Grow R to a fixed point, one node at a time, then whole connected groups of candidates
    # (a chain such as Add -> Clip -> Mul only pays as a whole). Candidates are visited in graph
    # order, so the result is deterministic; every round adds nodes, so it terminates.
    changed = True
    while changed:
        changed = False
        for node in candidates:
            if node.name not in region and try_add([node]):
                changed = True
        for group in _connected_groups([n for n in candidates if n.name not in region], is_float_activation):
            if try_add(group):
                changed = True

    for node in candidates:
        if node.name in region:
            decisions[node.name] = Decision(True, roles[node.name])
        elif node.op_type in kernels.CLIPPING_ACTIVATIONS:
            decisions[node.name] = Decision(False, reason="its input is not an int8 output it could fold into")
        else:
            decisions[node.name] = Decision(
                False, reason="neighbours run float: quantizing it alone would add QuantizeLinear/DequantizeLinear passes"
            )

    activations = _quantized_tensors(graph, region, roles, is_float_activation, read_by)
    shifts = {name: shift for name, shift in recipe.bias_shifts if name in weights}
    return Plan(decisions, activations, weights, recipe.mse_weights, shifts)


def accuracy_reason(node: onnx.NodeProto, recipe: Recipe, runs: str) -> str | None:
    """The op-list reason of a node the accuracy search placed (``ptq.tuning.targets``), with the
    gain it measured alone (``score_db``), or None for any other placement."""
    for p in recipe.placements:
        if p.reason == ACCURACY and p.runs == runs and p.target == node.name and p.group == ACCURACY_GROUP:
            how = "float" if runs == "float" else "hybrid (int8 weight, activation quantized at run time)"
            return f"accuracy: kept {how}, {p.score_db:+.1f} dB alone on the validation samples"
    return None


# ``Placement.group`` of the accuracy search's placements (``ptq.tuning.sensitivity``)
ACCURACY_GROUP = "accuracy search"


def _float_placement_reason(node: onnx.NodeProto, recipe: Recipe) -> str:
    """The op-list reason of a node placed float by name or op type: who placed it and, for a
    scored choice, what it measured (the user's own placement wins when there are several)."""
    placements = [p for p in recipe.placements if p.runs == FLOAT and p.target in (node.name, node.op_type)]
    if not placements or any(p.reason == USER for p in placements):
        return "excluded by the user (--exclude)"
    p = placements[0]
    if p.reason == ACCURACY:
        group = f" with {p.group}" if p.group else ""
        score = f": output SQNR {p.score_db:.1f} dB on the scoring samples" if p.score_db is not None else ""
        return f"accuracy: kept float{group}{score}"
    return f"kept float for the {p.reason} rewrite"


def placed_float_reason(node: onnx.NodeProto, recipe: Recipe) -> str | None:
    """Why ``node`` stays float whatever the mode (static or dynamic): placed float by the
    recipe, control flow, or a custom domain; None otherwise."""
    if is_excluded(node, recipe.float_targets):
        measured = accuracy_reason(node, recipe, "float")
        if measured:
            return measured
        own = next((p.describe() for p in recipe.placements if p.runs == FLOAT and p.target == node.name), None)
        return own or _float_placement_reason(node, recipe)
    if has_subgraph(node):
        return f"control flow ({node.op_type}): its body is kept float"
    if node.domain not in ("", "ai.onnx"):
        return f"custom-domain op {node.domain}.{node.op_type}: no int8 kernel"
    return None


def _first_look(node, config, recipe, inits, is_float_activation, weights, graph_outputs) -> Decision | None:
    """Decide nodes whose fate does not depend on their neighbours; None for candidates."""
    op = node.op_type
    reason = placed_float_reason(node, recipe)
    if reason is not None:
        return Decision(False, reason=reason)
    if op in kernels.HYBRID_RECURRENT:  # com.microsoft DynamicQuantizeLSTM (ptq.quantize.lstm)
        reason = lstm.float_reason(node, recipe.hybrid_targets, inits)
        return Decision(False, reason=reason) if reason else Decision(True, HYBRID, reason=lstm.HYBRID_REASON)
    if op in kernels.TABLE:
        reason = hardsigmoid.float_reason(node, config.activations == Scheme.ASYMMETRIC)
        if reason:
            return Decision(False, reason=reason)
    allowed = (
        kernels.WEIGHTED | kernels.WEIGHT_ONLY_STATIC | kernels.ELEMENTWISE | kernels.DATA_MOVEMENT | kernels.CLIPPING_ACTIVATIONS
        | kernels.TABLE
    )
    if op not in allowed:
        return Decision(False, reason=f"no int8 kernel in onnxruntime for {op}")
    if op == "Gather" and _is_constant_table(node, inits):
        # Embedding tables: gather int8 rows, dequantize only those (as in dynamic mode).
        weights[node.name] = (0, None)
        return Decision(True, WEIGHT_ONLY, reason="int8 table: rows gathered in int8, then dequantized")
    data = [node.input[i] for i in kernels.data_inputs(op, len(node.input))]
    if not data or not any(is_float_activation(t) for t in data) or not all(
        is_float_activation(t) or t in inits for t in data
    ):
        return Decision(False, reason="works on integer/bool or constant tensors (shape computation)")
    if not node.output or not is_float_activation(node.output[0]):
        return Decision(False, reason="its output is not a float tensor")
    if op not in kernels.WEIGHTED:
        infinite = [t for t in data if t in inits and not np.all(np.isfinite(to_array(inits[t])))]
        if infinite:  # an additive -inf mask, say: int8 cannot hold it, and the model means it
            return Decision(False, reason=f"constant input {infinite[0]!r} holds NaN/Inf, which int8 cannot represent")
    if op in kernels.WEIGHTED:
        return _weighted_decision(node, config, recipe, inits, is_float_activation, weights)
    if any(o in graph_outputs for o in node.output) and op not in kernels.WEIGHTED:
        # Rounding a model output to 8 bits gains nothing (nothing int8 reads it) and costs the
        # small values: a 1000-class Softmax's probabilities would mostly round to 0.
        return Decision(False, reason="produces a model output: kept float so the output is not rounded to 8 bits")
    if op in kernels.WEIGHT_ONLY_STATIC:
        weight = inits.get(node.input[1]) if len(node.input) > 1 else None
        if weight is None or weight.data_type != TensorProto.FLOAT:
            return Decision(False, reason="its weight is computed at run time, not a constant")
        weights[node.name] = (1, weight_axis(node, weight, config.per_channel))
        return Decision(True, WEIGHT_ONLY, reason=f"onnxruntime has no CPU int8 fusion for {op}: int8 weight, float kernel")
    return None


# Tables smaller than this are not worth a DequantizeLinear node.
MIN_TABLE_ELEMENTS = 4096


def _is_constant_table(node: onnx.NodeProto, inits) -> bool:
    table = inits.get(node.input[0])
    return (
        table is not None
        and table.data_type == TensorProto.FLOAT
        and len(table.dims) >= 2
        and int(np.prod(table.dims)) >= MIN_TABLE_ELEMENTS
    )


def _weighted_decision(node, config, recipe, inits, is_float_activation, weights) -> Decision:
    op = node.op_type
    if op == "Gemm" and (attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0):
        return Decision(False, reason="Gemm with transA/alpha/beta has no int8 form in onnxruntime")
    if op == "MatMul" and is_float_activation(node.input[1]):
        weights[node.name] = (1, None)  # both operands are activations (e.g. attention scores)
        return Decision(True, WEIGHTED)
    weight_name = node.input[1] if len(node.input) > 1 else ""
    weight = inits.get(weight_name)
    if weight is None or weight.data_type != TensorProto.FLOAT:
        return Decision(False, reason="its weight is computed at run time, not a constant")
    if op in kernels.HYBRID and (node.name in recipe.hybrid_targets or op in recipe.hybrid_targets):
        # The run-time range of each input adapts to that input: what an activation with rare
        # huge outliers (a transformer's FFN after GELU) needs, at a small cost in speed.
        return Decision(True, HYBRID, reason=accuracy_reason(node, recipe, "hybrid") or "run hybrid by request (--hybrid)")
    if op == "MatMul" and len(weight.dims) != 2:
        return Decision(False, reason="MatMul weight is not 2-D")
    weights[node.name] = (1, weight_axis(node, weight, config.per_channel))
    return Decision(True, WEIGHTED)


def _candidate_ready(node, is_float_activation, produced_by, read_by, region, roles, absorb: bool) -> bool:
    """Structural conditions, beyond cost, for a candidate to join R."""
    op = node.op_type
    data = [node.input[i] for i in kernels.data_inputs(op, len(node.input))]
    activation_inputs = [t for t in data if is_float_activation(t)]
    if op in kernels.CLIPPING_ACTIVATIONS:
        # Absorb only right after an int8 producer (not a data-movement node: those must keep
        # their input's scale, and a clip would change it).
        producer = produced_by.get(activation_inputs[0]) if activation_inputs else None
        return (
            absorb
            and producer is not None
            and producer.name in region
            and roles.get(producer.name) in (WEIGHTED, ELEMENTWISE)
            and len(read_by.get(activation_inputs[0], [])) == 1  # the fusion needs a single consumer
            and _clip_is_absorbable(node)
        )
    if op in kernels.DATA_MOVEMENT:
        # Worth it only on a tensor that is already int8 (its producer is in R).
        producer = produced_by.get(activation_inputs[0]) if activation_inputs else None
        return producer is not None and producer.name in region
    return True


def _connected_groups(nodes: list[onnx.NodeProto], is_float_activation) -> list[list[onnx.NodeProto]]:
    """Groups of ``nodes`` linked by float tensors one produces and another reads, in graph order."""
    index = {n.name: i for i, n in enumerate(nodes)}
    parent = list(range(len(nodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    producer_of = {t: index[n.name] for n in nodes for t in n.output if is_float_activation(t)}
    for n in nodes:
        for t in n.input:
            if t in producer_of:
                a, b = find(producer_of[t]), find(index[n.name])
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[onnx.NodeProto]] = {}
    for i, n in enumerate(nodes):
        groups.setdefault(find(i), []).append(n)
    return [g for _, g in sorted(groups.items()) if len(g) > 1]


def _clip_is_absorbable(node: onnx.NodeProto) -> bool:
    if node.op_type == "Relu":
        return True
    # Clip bounds are inputs (opset >= 11); folding needs them constant, checked by the
    # quantizer when it computes the range. Here: a Clip with a lower bound present.
    return len(node.input) >= 2 and bool(node.input[1])


def _role_of(node: onnx.NodeProto) -> str:
    if node.op_type in kernels.CLIPPING_ACTIVATIONS:
        return ABSORBED
    if node.op_type in kernels.DATA_MOVEMENT:
        return MOVEMENT
    if node.op_type in kernels.TABLE:
        return TABLE
    return ELEMENTWISE


def _quantized_tensors(graph, region, roles, is_float_activation, read_by) -> list[str]:
    """Activation tensors that get a QuantizeLinear: float data inputs and outputs of R nodes,
    except an output read only by an absorbed Relu/Clip (the Q goes after the activation)."""
    result: list[str] = []
    seen: set[str] = set()

    def add(t: str) -> None:
        if t not in seen and is_float_activation(t):
            seen.add(t)
            result.append(t)

    for inp in graph.input:
        if any(c.name in region and roles[c.name] != ABSORBED for c in read_by.get(inp.name, [])):
            add(inp.name)
    for node in graph.node:
        if node.name in region:
            for t in node.output:
                readers = read_by.get(t, [])
                absorbed_only = readers and all(c.name in region and roles[c.name] == ABSORBED for c in readers)
                if not absorbed_only or t in {o.name for o in graph.output}:
                    add(t)
        for t in node.input:
            if t and t not in seen and any(
                c.name in region and roles[c.name] != ABSORBED and t in _data_of(c) for c in read_by.get(t, [])
            ):
                add(t)
    return result


def _data_of(node: onnx.NodeProto) -> list[str]:
    return [node.input[i] for i in kernels.data_inputs(node.op_type, len(node.input))]


def _known_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types from shape inference, filled in for outputs it missed: most ops keep the
    type of their first input; the exceptions that matter here produce integers or bools."""
    types = elem_types(model)
    integer_outputs = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin", "TopK"}
    bool_outputs = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"}
    for node in model.graph.node:
        for index, out in enumerate(node.output):
            if not out or out in types:
                continue
            if node.op_type in integer_outputs or (node.op_type == "TopK" and index == 1):
                types[out] = TensorProto.INT64
            elif node.op_type in bool_outputs:
                types[out] = TensorProto.BOOL
            elif node.op_type == "Cast":
                types[out] = int(attr(node, "to", 0))
            elif node.input and node.input[0] in types and not has_subgraph(node):
                types[out] = types[node.input[0]]
    return types

