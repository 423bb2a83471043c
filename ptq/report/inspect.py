"""What a model file holds: format versions, inputs/outputs, op histogram, parameters and bytes by
op type, whether it is quantized, and which of its ops onnxruntime can run int8 (and, after
onnxruntime's own optimizations, which nodes really do).

Weights are never loaded: sizes come from each initializer's declared shape and element type.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import helper

from ptq.quantize import kernels
from ptq.write.oplist import HYBRID_KERNELS, INT8_KERNELS

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
QUANTIZED_OPS = QDQ_OPS | INT8_KERNELS | HYBRID_KERNELS | {"MatMulNBits"}
OTHER = "(graph and metadata)"
MAX_OPTIMIZE_BYTES = 1_800_000_000


def int8_support(op_type: str) -> str:
    """How onnxruntime's CPU provider can run ``op_type`` in int8 (from ``ptq.quantize.kernels``)."""
    if op_type in kernels.WEIGHTED:
        fused = {"Conv": "QLinearConv", "MatMul": "QLinearMatMul", "Gemm": "QGemm"}[op_type]
        hybrid = ", or hybrid DynamicQuantizeMatMul" if op_type in kernels.HYBRID else ""
        return f"int8 kernel ({fused}{hybrid})"
    if op_type in kernels.ELEMENTWISE:
        return f"int8 kernel (QLinear{op_type})"
    if op_type in kernels.HYBRID_RECURRENT:
        return f"hybrid kernel (DynamicQuantize{op_type})"
    if op_type in kernels.DATA_MOVEMENT:
        return "runs on int8 tensors"
    if op_type in kernels.CLIPPING_ACTIVATIONS:
        return "folded into the QuantizeLinear after an int8 op"
    if op_type in kernels.WEIGHT_ONLY_STATIC or op_type in kernels.WEIGHT_ONLY:
        return "int8 weights stored, float kernel"
    if op_type in QDQ_OPS:
        return "quantization op"
    if op_type == "Constant":
        return "constant (no kernel)"
    if op_type in INT8_KERNELS:
        return "int8 kernel"
    if op_type in HYBRID_KERNELS:
        return "hybrid kernel"
    return "float only"


def runs_int8(op_type: str) -> bool:
    """True when onnxruntime has an int8 (or hybrid) path for ``op_type``."""
    support = int8_support(op_type)
    return support not in ("float only", "int8 weights stored, float kernel", "quantization op", "constant (no kernel)")


@dataclass(frozen=True)
class ValueDesc:
    name: str
    dtype: str
    shape: list[int | str] | None

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name}  {self.dtype}"
        return f"{self.name}  {self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": self.shape}


@dataclass(frozen=True)
class OpTypeStats:
    op_type: str
    count: int
    parameters: int  # elements of the initializers it reads (through DequantizeLinear too)
    bytes: int  # bytes of those initializers
    int8_support: str

    def to_json(self) -> dict:
        return {
            "op_type": self.op_type,
            "count": self.count,
            "parameters": self.parameters,
            "bytes": self.bytes,
            "int8_support": self.int8_support,
        }


@dataclass(frozen=True)
class ModelInfo:
    """Facts about one model file."""

    path: str
    size_bytes: int  # the file plus its external data files
    ir_version: int
    opsets: dict[str, int]
    producer: str
    inputs: list[ValueDesc]
    outputs: list[ValueDesc]
    nodes: int
    parameters: int  # elements of every initializer and Constant tensor
    weight_bytes: int  # their bytes
    op_types: list[OpTypeStats]  # most nodes first
    quantized: bool
    quantization_ops: dict[str, int]
    executed: dict[str, int] | None = None  # int8/hybrid/float compute nodes onnxruntime runs
    executed_note: str = ""
    extra: dict = field(default_factory=dict)
    node_kernels: dict[str, str] | None = field(default=None, repr=False)  # node -> kernel onnxruntime runs

    @property
    def opset(self) -> int:
        return self.opsets.get("ai.onnx", 0)

    def bytes_by_op_type(self) -> dict[str, int]:
        sizes = {s.op_type: s.bytes for s in self.op_types if s.bytes}
        rest = self.size_bytes - sum(sizes.values())
        if rest > 0:
            sizes[OTHER] = rest
        return sizes

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "ir_version": self.ir_version,
            "opset": self.opset,
            "opsets": self.opsets,
            "producer": self.producer,
            "inputs": [v.to_json() for v in self.inputs],
            "outputs": [v.to_json() for v in self.outputs],
            "nodes": self.nodes,
            "parameters": self.parameters,
            "weight_bytes": self.weight_bytes,
            "quantized": self.quantized,
            "quantization_ops": self.quantization_ops,
            "op_types": [s.to_json() for s in self.op_types],
            "executed": self.executed,
            "executed_note": self.executed_note,
        }


def _dtype_name(elem_type: int) -> str:
    try:
        return helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, ValueError, TypeError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _value(vi: onnx.ValueInfoProto) -> ValueDesc:
    if not vi.type.HasField("tensor_type"):
        return ValueDesc(vi.name, vi.type.WhichOneof("value") or "unknown", None)
    tt = vi.type.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return ValueDesc(vi.name, _dtype_name(tt.elem_type), shape)


def _numel(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= int(d)
    return n


def _nbytes(tensor: onnx.TensorProto) -> int:
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        itemsize = 1
    if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (_numel(tensor) + 1) // 2
    return _numel(tensor) * itemsize


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    tensors[node.output[0]] = a.t
    return tensors


def attribute_weights(graph: onnx.GraphProto) -> dict[str, tuple[int, int]]:
    """Op type -> (parameters, bytes) of the constant tensors its nodes read.

    A weight that reaches its op through constant-only nodes (DequantizeLinear with its scale and
    zero point; Cast -> Mul of a weight-only int8 tensor; Reshape, Transpose) counts for the op
    that reads the result; each tensor counts once, for its first reader.
    """
    tensors = _constants(graph)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                consumers[name].append(node)
    constant_only: set[int] = set()  # ids of nodes computed from constants alone
    derived: set[str] = set(tensors)
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type != "Constant" and inputs and all(i in derived for i in inputs):
            constant_only.add(id(node))
            derived.update(o for o in node.output if o)

    def owner(node: onnx.NodeProto, depth: int = 0) -> str:
        if id(node) in constant_only and depth < 8:
            readers = consumers.get(node.output[0], []) if node.output else []
            if readers:
                return owner(readers[0], depth + 1)
        return node.op_type

    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, tensor in tensors.items():
        readers = [n for n in consumers.get(name, []) if n.op_type != "Constant"]
        if not readers:
            continue
        op = owner(readers[0])
        totals[op][0] += _numel(tensor)
        totals[op][1] += _nbytes(tensor)
    return {op: (p, b) for op, (p, b) in totals.items()}


def executed_summary(model_bytes: bytes) -> dict[str, int]:
    """Compute nodes onnxruntime runs at its extended level, by kernel (int8/hybrid/float), as
    ``ptq.write.oplist.executed_counts`` counts them for a conversion."""
    return executed_nodes(model_bytes)[0]


def executed_nodes(model_bytes: bytes) -> tuple[dict[str, int], dict[str, str]]:
    """``executed_summary`` and node name -> kernel of every node onnxruntime runs."""
    from ptq.write.oplist import executed_counts, executed_kernels, optimized_graph

    executed = executed_kernels(optimized_graph(model_bytes))
    return executed_counts(executed), {name: runs.kernel for name, runs in executed.items()}


def inspect_model(path: Path, *, run_onnxruntime: bool = True) -> ModelInfo:
    """Facts about the model at ``path``; with ``run_onnxruntime`` also what onnxruntime runs int8."""
    from ptq import loader

    path = Path(path)
    model = loader.read(path)  # parses without external data; refuses unsafe external data
    size = loader.stored_size_bytes(path, model)
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    histogram = Counter(n.op_type for n in graph.node)
    weights = attribute_weights(graph)
    constants = _constants(graph)
    op_types = [
        OpTypeStats(op, count, weights.get(op, (0, 0))[0], weights.get(op, (0, 0))[1], int8_support(op))
        for op, count in sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    for op, (p, b) in sorted(weights.items()):  # weights read only by ops counted elsewhere (rare)
        if op not in histogram:
            op_types.append(OpTypeStats(op, 0, p, b, int8_support(op)))
    quantization_ops = {op: histogram[op] for op in sorted(histogram) if op in QUANTIZED_OPS}
    executed, note, node_kernels = None, "", None
    if run_onnxruntime:
        if size > MAX_OPTIMIZE_BYTES:
            note = "model too large to hand to onnxruntime as bytes; not checked"
        else:
            try:
                full = onnx.load(str(path))
                executed, node_kernels = executed_nodes(full.SerializeToString())
                note = "compute nodes after onnxruntime's optimizations; Quantize/DequantizeLinear not counted"
            except Exception as exc:  # the op list raises PtqError; a broken model shows here, not as a crash
                note = f"onnxruntime could not load the model: {exc}"
    return ModelInfo(
        path=str(path),
        size_bytes=size,
        ir_version=int(model.ir_version),
        opsets={(op.domain or "ai.onnx"): int(op.version) for op in model.opset_import},
        producer=" ".join(x for x in (model.producer_name, model.producer_version) if x),
        inputs=[_value(vi) for vi in graph.input if vi.name not in initializer_names],
        outputs=[_value(vi) for vi in graph.output],
        nodes=len(graph.node),
        parameters=sum(_numel(t) for t in constants.values()),
        weight_bytes=sum(_nbytes(t) for t in constants.values()),
        op_types=op_types,
        quantized=bool(quantization_ops),
        quantization_ops=quantization_ops,
        executed=executed,
        executed_note=note,
        node_kernels=node_kernels,
    )
