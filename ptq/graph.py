"""Small helpers over onnx graphs shared by the stages: walking subgraphs, producers/consumers,
element types, initializer lookups, and turning onnxruntime's exceptions into one line."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph (If/Loop/Scan bodies) below it, depth first, iteratively
    (deeply nested graphs must not hit Python's recursion limit)."""
    stack = [graph]
    while stack:
        g = stack.pop()
        yield g
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def byte_size(message) -> int:
    """Serialized size of a protobuf message; at least 2**31 for one too large to serialize
    (protobuf's ``ByteSize`` raises instead of counting past 2 GB)."""
    try:
        return message.ByteSize()
    except Exception:  # EncodeError: "Failed to serialize proto"
        return 2**31


def serialized_within(message, limit: int) -> bytes | None:
    """``message`` serialized, or None when that is over ``limit`` bytes or impossible (2 GB).

    For a decision on size that is followed by a serialization anyway: one serialization instead
    of ``byte_size``'s plus the caller's (each 0.2 s on MiniLM's 90 MB)."""
    try:
        data = message.SerializeToString()
    except Exception:  # EncodeError: "Failed to serialize proto"
        return None
    return data if len(data) <= limit else None


def unique_name(base: str, taken) -> str:
    """``base``, or ``base_1``, ``base_2``, ... : the first not in ``taken`` (names a graph rewrite adds)."""
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> nodes that read it (subgraph reads of outer names count for the owner)."""
    result: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        names = set(i for i in node.input if i)
        if has_subgraph(node):
            names |= outer_names_used(node)
        for name in names:
            result[name].append(node)
    return result


def outer_names_used(node: onnx.NodeProto) -> set[str]:
    """Names a control-flow node's bodies read from the enclosing scope."""
    used: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for sub in iter_graphs(g):
                defined = {i.name for i in sub.input} | {t.name for t in sub.initializer}
                for n in sub.node:
                    defined |= set(n.output)
                for n in sub.node:
                    used |= {i for i in n.input if i and i not in defined}
    return used


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer}


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> onnx element type, from inputs, outputs, value_info and initializers."""
    graph = model.graph
    types: dict[str, int] = {}
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in graph.initializer:
        types[t.name] = t.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def to_array(tensor: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(tensor)


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


_ORT_PREFIX = re.compile(r"\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_CXX_LOCATION = re.compile(r"(?:^|\s)\S+\.(?:cc|cpp|c|h|hpp):\d+\s+")


def ort_error_line(exc: BaseException) -> str:
    """The informative part of an onnxruntime exception, on one line.

    onnxruntime's messages carry ``[ONNXRuntimeError] : 1 : FAIL :`` prefixes (nested when one
    status wraps another), ``Load model from x failed:`` and C++ ``file.cc:123 Class::fn(args...)``
    locations; the user needs only the reason at the end.
    """
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    parts = [p.strip() for p in _ORT_PREFIX.split(text) if p.strip()]
    line = parts[-1] if parts else text
    if "failed:" in line:  # "Load model from x failed:<reason>"
        line = line.split("failed:", 1)[1].strip() or line
    match = _CXX_LOCATION.search(line)
    if match:
        line = _skip_function(line[match.end():]) or line
    line = line.replace("status.IsOK() was false.", "").strip()
    return line[:400] or type(exc).__name__


def _skip_function(text: str) -> str:
    """Drop the C++ function signature that follows a source location: ``ns::fn(a, b<c>) const rest``."""
    i, depth = 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                i += 1
                break
        elif ch == " " and depth == 0:
            break
        i += 1
    rest = text[i:].lstrip()
    if rest.startswith("const "):
        rest = rest[len("const "):]
    return rest.strip()
