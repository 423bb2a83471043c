"""Small helpers over onnx graphs shared by the stages: walking subgraphs, producers/consumers,
element types, initializer lookups, and turning onnxruntime's exceptions into one line."""

from __future__ import annotations

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


def ort_error_line(exc: BaseException) -> str:
    """The informative line of an onnxruntime exception (they carry C++ file/line prefixes)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    # "[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model from x failed:<reason>"
    if "failed:" in line:
        line = line.split("failed:", 1)[1].strip() or line
    return line[:400]
