"""Small graph-building helpers shared by the static and dynamic passes: unique names, new
initializers, Q/DQ nodes, and removing what a rewrite left unused."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ptq.graph import iter_graphs


class GraphBuilder:
    """Collects new nodes and initializers for one graph, with names unique in the model."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.taken: set[str] = set()
        for graph in iter_graphs(model.graph):
            self.taken |= {t.name for t in graph.initializer}
            self.taken |= {i.name for i in graph.input} | {o.name for o in graph.output}
            for node in graph.node:
                self.taken.add(node.name)
                self.taken |= set(node.output)
        self.new_initializers: dict[str, onnx.TensorProto] = {}

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def constant(self, base: str, value: np.ndarray) -> str:
        """Add an initializer holding ``value`` and return its (unique) name."""
        name = self.unique(base)
        # np.ascontiguousarray would turn a 0-d scale into shape [1], which blocks onnxruntime's fusions
        self.new_initializers[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    # Q/DQ nodes are named after their output tensor: unique, short, and readable in Netron.
    def quantize_node(self, x: str, scale: str, zero_point: str, out: str, axis: int | None = None) -> onnx.NodeProto:
        kwargs = {} if axis is None else {"axis": axis}
        return helper.make_node("QuantizeLinear", [x, scale, zero_point], [out], name=self.unique(out), **kwargs)

    def dequantize_node(
        self, q: str, scale: str, zero_point: str | None, out: str, axis: int | None = None
    ) -> onnx.NodeProto:
        """DequantizeLinear; ``zero_point`` None omits it (the spec's default 0, as for int32 bias)."""
        kwargs = {} if axis is None else {"axis": axis}
        inputs = [q, scale] if zero_point is None else [q, scale, zero_point]
        return helper.make_node("DequantizeLinear", inputs, [out], name=self.unique(out), **kwargs)


def finish(model: onnx.ModelProto, nodes: list[onnx.NodeProto], builder: GraphBuilder) -> onnx.ModelProto:
    """Replace the main graph's nodes, add the new initializers, drop unused initializers and
    stale value_info (onnxruntime infers shapes itself; stale entries would contradict it)."""
    graph = model.graph
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(builder.new_initializers.values())
    used: set[str] = {o.name for o in graph.output}
    for sub in iter_graphs(graph):
        for node in sub.node:
            used |= set(node.input)
    for index in reversed(range(len(graph.initializer))):  # in place: re-adding would copy every weight
        if graph.initializer[index].name not in used:
            del graph.initializer[index]
    del graph.value_info[:]
    _prune_opsets(model)
    return model


def _prune_opsets(model: onnx.ModelProto) -> None:
    """Keep only the opset imports the graph uses (onnxruntime's optimizer adds many)."""
    used = {""}
    for sub in iter_graphs(model.graph):
        used |= {n.domain for n in sub.node}
    kept = [o for o in model.opset_import if o.domain in used or (o.domain == "ai.onnx" and "" in used)]
    del model.opset_import[:]
    model.opset_import.extend(kept)
