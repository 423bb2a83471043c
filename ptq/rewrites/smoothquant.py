"""SmoothQuant: move per-channel activation outliers into the weights of the MatMul that reads them.

A MatMul ``Y = X W`` gives the same ``Y`` for ``X' = X / s`` (per input channel ``j``) and
``W' = diag(s) W``. With ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` the few channels that
dominate ``X``'s per-tensor int8 range shrink, and ``W``'s per-output-channel int8 scales absorb
them (Xiao et al., SmoothQuant, 2023).

``X / s`` must cost nothing at run time, so it is folded into the constant of the ``Mul`` that
produces ``X`` (in BERT-style models, the last ``* 0.5`` of the GELU before each feed-forward
down-projection, exactly where per-tensor activation ranges fail). That is only exact when every
reader of ``X`` is such a MatMul; other producers (a LayerNormalization whose output also feeds
a residual Add, say) are left alone. The folded ``Mul`` now holds a per-channel vector, which an
int8 elementwise kernel would quantize away, so it is returned to be kept float.

Where no such Mul exists or another op reads ``X`` too (the LayerNormalization before BERT's
feed-forward up-projection, whose output also feeds the residual Add), ``X / s`` is a ``Mul``
inserted on the MatMuls' branch only, kept float: one elementwise op over ``X`` per smoothed
activation, a few percent of the MatMul it feeds (MiniLM: 384 multiplies against 384 x 1536
multiply-adds a token). The other readers still read ``X`` unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ptq.calibrate.runner import sample_values
from ptq.config import Config, ImageFormat
from ptq.graph import consumers, initializers, producers, unique_name
from ptq.progress import Progress
from ptq.rewrites import Declined, RewriteResult

NAME = "smoothquant"
OPTION = "--smoothquant"


@dataclass(frozen=True)
class SmoothGroup:
    """One activation tensor, the Mul whose constant produces it, and the MatMuls reading it.

    An inserted group (``producer`` empty) gets a Mul of its own in front of ``readers``."""

    activation: str
    producer: str  # name of the Mul node ("" for an inserted group)
    constant: str  # the Mul's constant operand (an initializer; "" for an inserted group)
    weights: tuple[str, ...]  # the [K, N] weight initializers of the reading MatMuls
    readers: tuple[str, ...] = ()  # the MatMul nodes reading the activation

    @property
    def inserted(self) -> bool:
        return not self.producer


def find_groups(model: onnx.ModelProto, insert: bool = False) -> list[SmoothGroup]:
    """Activations SmoothQuant can rescale for free (see the module docstring); graph order.
    ``insert``: and, after them, the MatMul inputs it can rescale with a Mul of their own."""
    graph = model.graph
    inits = initializers(graph)
    made_by = producers(graph)
    read_by = consumers(graph)
    outputs = {o.name for o in graph.output}
    groups = []
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        activation = node.input[0]
        if activation in outputs or any(g.activation == activation for g in groups):
            continue
        readers = read_by.get(activation, [])
        if not readers or not all(_reads_as_matmul_input(r, activation, inits) for r in readers):
            continue
        producer = made_by.get(activation)
        constant = _mul_constant(producer, inits) if producer is not None else None
        if constant is None or len(read_by.get(producer.output[0], [])) != len(readers):
            continue
        weights = tuple(r.input[1] for r in readers)
        if any(read_by.get(w, []) and len(read_by[w]) != 1 for w in weights) or len(set(weights)) != len(weights):
            continue  # a weight shared with another node cannot be rescaled for this one alone
        channels = inits[readers[0].input[1]].dims[0]
        shape = tuple(inits[constant].dims)
        if any(inits[r.input[1]].dims[0] != channels for r in readers) or int(np.prod(shape or (1,))) not in (1, channels):
            continue
        groups.append(SmoothGroup(activation, producer.name, constant, weights, tuple(r.name for r in readers)))
    if insert:
        groups += _inserted_groups(graph, inits, read_by, outputs, {g.activation for g in groups})
    return groups


def _inserted_groups(graph, inits, read_by, outputs, taken: set[str]) -> list[SmoothGroup]:
    """MatMul inputs (activations) not rescaled by a foldable Mul: each with its constant-weight
    MatMul readers, whose weights are theirs alone and of one input width."""
    groups = []
    for node in graph.node:
        activation = node.input[0] if node.op_type == "MatMul" and len(node.input) == 2 else None
        if activation is None or activation in taken or activation in inits or not node.name:
            continue
        taken.add(activation)
        readers = [r for r in read_by.get(activation, []) if r.name and _reads_as_matmul_input(r, activation, inits)]
        weights = tuple(r.input[1] for r in readers)
        if not readers or len(set(weights)) != len(weights) or any(len(read_by.get(w, [])) != 1 for w in weights):
            continue
        if len({inits[w].dims[0] for w in weights}) != 1:
            continue
        groups.append(SmoothGroup(activation, "", "", weights, tuple(r.name for r in readers)))
    return groups


def enabled(config: Config) -> bool:
    """Static mode with samples (``Config`` refuses ``--smoothquant`` without them)."""
    return config.smoothquant is not None and config.calibration_data is not None


def settings(config: Config) -> tuple[tuple[str, float], ...]:
    return (("alpha", float(config.smoothquant)),)


def run(model: onnx.ModelProto, config: Config, progress: Progress, fit: Collection[int] | None = None,
        recorded: RewriteResult | None = None) -> RewriteResult:  # fmt: skip
    """The pass: find the groups, measure their activations' channel maxima on the calibration
    samples, move the outliers into the weights in place; the Muls that now hold per-channel
    constants are kept float (an int8 kernel would quantize the constant away). ``recorded``: a
    saved run's result, repeated from the channel maxima it recorded on the inputs it smoothed
    (``--load-ranges``, without samples; the scored choice's groups too)."""
    if recorded is not None and recorded.measured:
        absmax = {name: np.asarray(values, np.float64) for name, values in recorded.measured}
        alpha = dict(recorded.settings).get("alpha", config.smoothquant)
        return smooth(model, config, alpha, progress, only=set(absmax), absmax=absmax, recorded=recorded.settings)
    return smooth(model, config, config.smoothquant, progress, indices=fit)


def smooth(
    model: onnx.ModelProto, config: Config, alpha: float, progress: Progress | None = None,
    indices: Collection[int] | None = None, only: Collection[str] | None = None,
    absmax: dict[str, np.ndarray] | None = None, recorded: tuple[tuple[str, float], ...] | None = None,
) -> RewriteResult:  # fmt: skip
    """Smooth the groups of ``model`` (``find_groups(insert=True)``; those whose activation is in
    ``only`` when given) in place, with channel maxima ``absmax`` or else measured on the
    calibration samples (those at ``indices`` when given). ``recorded``: the settings to record
    (the alpha by default)."""
    recorded = recorded or (("alpha", float(alpha)),)
    groups = [g for g in find_groups(model, insert=True) if only is None or g.activation in only]
    if not groups:
        return RewriteResult(NAME, settings=recorded)
    if progress is not None:
        progress("smooth", 0, 0)
    if absmax is None:
        absmax = channel_absmax(
            model, [g.activation for g in groups], config.calibration_data, config.calibration_samples,
            config.image_format, indices=indices,
        )  # fmt: skip
    inserted: dict[str, str] = {}
    applied = apply(model, groups, absmax, alpha, inserted)
    keep_float = tuple(inserted.get(g.activation, g.producer) for g in groups if g.activation in applied)
    return RewriteResult(
        NAME,
        applied=keep_float,
        declined=tuple(
            Declined(g.producer or g.readers[0], "its activation was never observed") for g in groups if g.activation not in applied
        ),
        rescaled=tuple(sorted({a for a in applied if a not in inserted} | {f"{a}{SMOOTHED}" for a in inserted})),
        keep_float=keep_float,
        notes=(f"SmoothQuant (alpha {alpha:g}) moved activation outliers into the weights of {len(applied)} MatMul input(s)"
               f" ({len(inserted)} through a Mul of their own, kept float)",),  # fmt: skip
        settings=recorded,
        measured=tuple((name, tuple(float(v) for v in absmax[name])) for name in sorted(applied)),
        inserted=tuple(inserted[g.activation] for g in groups if g.activation in applied and g.activation in inserted),
    )


SMOOTHED = "/smoothed"  # suffix of the tensor an inserted Mul makes
INSERTED = "inserted by ptq's SmoothQuant: a per-channel Mul on the MatMul branch of an activation others read too"


def _reads_as_matmul_input(node: onnx.NodeProto, tensor: str, inits) -> bool:
    return (
        node.op_type == "MatMul"
        and node.input[0] == tensor
        and node.input[1] in inits
        and len(inits[node.input[1]].dims) == 2
        and inits[node.input[1]].data_type == onnx.TensorProto.FLOAT
    )


def _mul_constant(node: onnx.NodeProto, inits) -> str | None:
    """The float initializer operand of a two-input Mul whose other operand is not constant."""
    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    a, b = node.input
    for const, other in ((b, a), (a, b)):
        if const in inits and other not in inits and inits[const].data_type == onnx.TensorProto.FLOAT:
            return const
    return None


def smoothing_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """``s_j = act_j^alpha / w_j^(1-alpha)``, 1 where either side is zero or not finite."""
    act = np.asarray(act_absmax, dtype=np.float64)
    w = np.asarray(weight_absmax, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.power(act, alpha) / np.power(w, 1.0 - alpha)
    ok = np.isfinite(s) & (s > 0) & (act > 0) & (w > 0)
    return np.where(ok, s, 1.0).astype(np.float32)


def channel_absmax(
    model: onnx.ModelProto,
    tensors: list[str],
    data_dir: Path,
    limit: int | None,
    image_format: ImageFormat | None,
    axis: int = -1,
    indices: Collection[int] | None = None,
) -> dict[str, np.ndarray]:
    """max |x| per channel (along ``axis``; the last by default) of each tensor over the
    calibration samples (those at ``indices``: the fitting part of the split; fixed-size state)."""
    absmax: dict[str, np.ndarray] = {}
    for values in sample_values(model, tensors, data_dir, limit, image_format, indices):
        for name, value in values.items():
            value = np.moveaxis(value, axis, -1)
            flat = np.abs(np.nan_to_num(value.reshape(-1, value.shape[-1]), nan=0.0, posinf=0.0, neginf=0.0))
            seen = flat.max(axis=0) if flat.size else np.zeros(value.shape[-1], np.float32)
            absmax[name] = seen if name not in absmax else np.maximum(absmax[name], seen)
    return absmax


def apply(
    model: onnx.ModelProto, groups: Iterable[SmoothGroup], absmax: dict[str, np.ndarray], alpha: float,
    inserted: dict[str, str] | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Rescale each group in place; returns the scales applied, by activation tensor.
    ``inserted`` collects the Mul node inserted for each inserted group, by activation."""
    inits = initializers(model.graph)
    applied = {}
    for group in groups:
        if group.activation not in absmax:
            continue
        weights = [numpy_helper.to_array(inits[w]) for w in group.weights]
        w_absmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        s = smoothing_scales(absmax[group.activation], w_absmax, alpha)
        if group.inserted:
            mul = _insert_mul(model, group, (1.0 / s).astype(np.float32), inits)
            if inserted is not None:
                inserted[group.activation] = mul
            for name, w in zip(group.weights, weights):
                inits[name].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), name))
            applied[group.activation] = s
            continue
        constant = numpy_helper.to_array(inits[group.constant]).astype(np.float32)
        folded = (np.broadcast_to(constant.reshape(-1), s.shape) / s).astype(np.float32)
        # Keep the constant's rank so broadcasting against the activation is unchanged.
        shape = (1,) * max(len(constant.shape) - 1, 0) + (s.shape[0],)
        # The constant may be shared (onnxruntime's folding merges equal constants, e.g. every
        # GELU's 0.5): this Mul gets a constant of its own.
        own = unique_name(f"{group.constant}/smoothed", inits)
        tensor = numpy_helper.from_array(folded.reshape(shape), own)
        model.graph.initializer.append(tensor)
        inits[own] = model.graph.initializer[-1]
        mul = next(n for n in model.graph.node if n.name == group.producer)
        mul.input[list(mul.input).index(group.constant)] = own
        for name, w in zip(group.weights, weights):
            inits[name].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), name))
        applied[group.activation] = s
    return applied


def _insert_mul(model: onnx.ModelProto, group: SmoothGroup, inverse: np.ndarray, inits) -> str:
    """Insert ``activation * inverse`` in front of the group's MatMuls (right before the first
    of them, so the graph stays in topological order); returns the Mul's name."""
    graph = model.graph
    names = {n.name for n in graph.node}
    scale = unique_name(f"{group.activation}/smoothquant_scale", inits)
    graph.initializer.append(numpy_helper.from_array(inverse, scale))
    inits[scale] = graph.initializer[-1]
    out = f"{group.activation}{SMOOTHED}"
    name = unique_name(f"{group.activation}/SmoothQuantMul", names)
    mul = onnx.helper.make_node("Mul", [group.activation, scale], [out], name=name)
    readers = set(group.readers)
    nodes = list(graph.node)
    position = next(i for i, n in enumerate(nodes) if n.name in readers)
    for node in nodes:
        if node.name in readers:
            node.input[0] = out
    nodes.insert(position, mul)
    del graph.node[:]
    graph.node.extend(nodes)
    return name
