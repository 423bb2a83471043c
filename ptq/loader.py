"""Read, validate and prepare a float32 ONNX model.

onnx and onnxruntime do the work: onnx parses and checks the file and converts old opsets;
onnxruntime's *basic* graph optimizations fold constants, fuse BatchNormalization into Conv and
drop no-op nodes (they only emit standard ONNX ops, so the result is still a portable model);
onnx infers shapes and element types. This module adds what they leave to the caller:
confining external data to the model's folder and reading exactly the bytes each tensor declares,
refusing hostile or unsupported models with one clear line before anything large is allocated,
and moving initializers out of the graph inputs (old IR) so they can be folded.

Hostile input is refused early and cheaply: a file over protobuf's 2 GB limit is not read, deeply
nested subgraphs stop at protobuf's depth limit, external data must lie inside the model's folder
and hold the bytes its shape needs, and constants that onnxruntime's folding would materialize
(``ConstantOfShape`` of a huge shape, dense copies of sparse tensors) are summed from the shapes
onnx infers, before onnxruntime allocates them.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.errors import InvalidModelError, OutputError, UnsupportedModelError
from ptq.external_data import (  # noqa: F401  (read, load and size are part of the loader's API)
    check_external_data,
    element_count,
    external_tensors,
    itemsize,
    load_external_data,
    stored_size_bytes,
    tensor_nbytes,
)
from ptq.graph import byte_size, has_subgraph, iter_graphs, serialized_within

log = logging.getLogger(__name__)

# QuantizeLinear with per-channel scales (axis attribute) needs opset 13.
MIN_QDQ_OPSET = 13
OLDEST_OPSET = 7  # older models predate the version converter's adapters; ask for a re-export

# protobuf cannot parse (or write) one message of 2 GiB or more: bigger models keep their weights
# in external data files.
PROTOBUF_LIMIT = 2**31 - 1
# Above this in-memory size the prepared model is saved with external data for onnxruntime, and
# onnx's tools (shape inference, version converter) run with the weight payloads set aside.
LARGE_MODEL_BYTES = 1_800_000_000
# Constants that onnxruntime's constant folding may create (outputs of nodes whose inputs are all
# constant, dense copies of sparse initializers), in bytes: this much plus twice the stored model.
# A few hundred bytes can declare a terabyte (ConstantOfShape of [2**20, 2**20]); the architecture
# models of onnx's wheel materialize up to ~550 MB of generated weights this way.
MAX_FOLDED_BYTES = 2**30
# Tensors whose payload is at least this large are left out of the copies given to onnx's tools.
PAYLOAD_MIN_BYTES = 1 << 16

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
_QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "QGemm",
    "QLinearAdd",
    "QLinearMul",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM",
    "MatMulIntegerToFloat",
    "MatMulNBits",
}
# onnxruntime does not fold these (their value changes from run to run).
_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
# Packed sub-byte element types: bits per element.


@dataclass(frozen=True)
class SourceNode:
    """A node of the model as the user saved it (named by ptq if it had no name)."""

    name: str
    op_type: str
    outputs: tuple[str, ...]


@dataclass
class LoadedModel:
    """A validated, prepared float32 model and what was done to it on the way."""

    model: onnx.ModelProto  # prepared: opset >= 13, constants folded, BN fused, shapes inferred
    source: Path
    size_bytes: int  # the .onnx plus its external data files, as stored on disk
    source_opset: int
    notes: list[str] = field(default_factory=list)
    source_nodes: list[SourceNode] = field(default_factory=list)  # the nodes of the file, in order


def load(path: Path) -> LoadedModel:
    """Read ``path``, validate it and prepare it for quantization.

    Raises:
        InvalidModelError: missing, unreadable, corrupt or invalid file; unsafe external data.
        UnsupportedModelError: valid ONNX that is not a float32 model ptq can quantize.
    """
    path = Path(path)
    model = read(path)
    size_bytes = stored_size_bytes(path, model)
    require_float32(model)
    require_not_quantized(model)
    load_external_data(model, path.parent)
    check(model, path)
    notes: list[str] = []
    require_finite_weights(model, notes)
    source_opset = default_opset(model)
    model = name_nodes(model)
    original = [SourceNode(n.name, n.op_type, tuple(n.output)) for n in model.graph.node]
    model = move_initializers_out_of_inputs(model)
    model = upgrade_opset(model, notes)
    check_folded_size(model, size_bytes)
    model = optimize_basic(model)
    model = name_nodes(model)  # the version converter and onnxruntime add unnamed nodes
    model = infer_shapes(model)
    return LoadedModel(model, path, size_bytes, source_opset, notes, original)


# ----------------------------------------------------------------------------------------- reading


def read(path: Path) -> onnx.ModelProto:
    """Parse the protobuf without its external data; check that the external data is safe."""
    if not path.exists():
        raise InvalidModelError(f"{path}: no such file")
    if not path.is_file():
        raise InvalidModelError(f"{path}: not a file")
    try:
        size = path.stat().st_size
        if size > PROTOBUF_LIMIT:
            raise InvalidModelError(
                f"{path}: {size / 1e9:.1f} GB in one protobuf, over its 2 GB limit; an ONNX model this"
                " large must keep its weights in external data files"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidModelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data:
        raise InvalidModelError(f"{path}: empty file, not an ONNX model")
    if data[4:8] == b"ORTM":
        raise InvalidModelError(f"{path}: an onnxruntime ORT-format file, not an ONNX model; give ptq the .onnx it came from")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, or RuntimeWarning-derived errors in upb
        if "depth" in str(exc).lower():
            raise InvalidModelError(
                f"{path}: subgraphs (If/Loop/Scan bodies) nested deeper than protobuf's limit of"
                " 100 messages; refused"
            ) from None
        raise InvalidModelError(f"{path}: not an ONNX model (the protobuf does not parse; truncated or corrupt?)") from None
    del data
    if not model.HasField("graph") or not model.opset_import:
        raise InvalidModelError(f"{path}: not an ONNX model (no graph or no opset; truncated or corrupt?)")
    bad_text = _first_invalid_string(model)
    if bad_text:
        raise InvalidModelError(f"{path}: {bad_text} is not valid UTF-8 text (corrupt?)")
    if not model.graph.output:
        raise InvalidModelError(f"{path}: the graph has no outputs; nothing to compute")
    check_external_data(model, path.parent)
    return model


def _first_invalid_string(message) -> str | None:
    """The path of the first string field that is not valid UTF-8, or None.

    protobuf parses any bytes into a string field; Python then gets ``bytes`` instead of ``str``
    (or a UnicodeDecodeError), which breaks a later stage far from the cause. Every string is read
    here once, up front; bytes fields (tensor payloads) are not touched.
    """
    from google.protobuf.descriptor import FieldDescriptor

    stack = [(message, message.DESCRIPTOR.name)]
    while stack:
        msg, where = stack.pop()
        for fd in msg.DESCRIPTOR.fields:
            repeated = fd.is_repeated
            if fd.type == FieldDescriptor.TYPE_STRING:
                try:
                    values = list(getattr(msg, fd.name)) if repeated else [getattr(msg, fd.name)]
                except UnicodeDecodeError:
                    return f"{where}.{fd.name}"
                if any(isinstance(v, bytes) for v in values):  # proto2 hands back undecodable text as bytes
                    return f"{where}.{fd.name}"
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                if repeated:
                    stack.extend((m, f"{where}.{fd.name}[{i}]") for i, m in enumerate(getattr(msg, fd.name)))
                elif msg.HasField(fd.name):
                    stack.append((getattr(msg, fd.name), f"{where}.{fd.name}"))
    return None


# -------------------------------------------------------------------------------------- validating


def check(model: onnx.ModelProto, path: Path | None = None) -> None:
    """onnx's checker (full model check without shape inference, which comes later).

    A model over 2 GB once its external data is loaded cannot be serialized for the in-memory
    checker: onnx checks it from its file instead.
    """
    try:
        data = serialized_within(model, PROTOBUF_LIMIT - 1)
        if data is None:
            if path is None:
                raise InvalidModelError("model over 2 GB must store its weights as external data")
            onnx.checker.check_model(str(path))
        else:
            onnx.checker.check_model(data)
    except onnx.checker.ValidationError as exc:
        reason = " ".join(str(exc).split())[:400] or "invalid model"
        raise InvalidModelError(f"invalid ONNX model: {reason}") from None
    except ValueError as exc:  # e.g. "model too large" from the serializer
        raise InvalidModelError(f"invalid ONNX model: {exc}") from None


def require_float32(model: onnx.ModelProto) -> None:
    """Refuse models whose float tensors are float16/bfloat16/float64: ptq converts float32."""
    other: dict[str, str] = {}
    graph = model.graph
    for vi in list(graph.input) + list(graph.output):
        t = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else TensorProto.UNDEFINED
        if t in _FLOAT_TYPES and t != TensorProto.FLOAT:
            other[vi.name] = TensorProto.DataType.Name(t).lower()
    for init in graph.initializer:
        if init.data_type in _FLOAT_TYPES and init.data_type != TensorProto.FLOAT and element_count(init) > 1:
            other[init.name] = TensorProto.DataType.Name(init.data_type).lower()
    if other:
        name, dtype = next(iter(other.items()))
        raise UnsupportedModelError(
            f"not a float32 model: {dtype} tensor {name!r} ({len(other)} non-float32 float tensors);"
            " ptq converts float32 models (convert float16/float64 models to float32 first)"
        )


# Ops whose constant inputs are weights ptq quantizes (or would, were they larger): kernels.WEIGHTED
# and the recurrent ops (kept here, not imported: the loader comes before every stage).
_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN"})


def require_finite_weights(model: onnx.ModelProto, notes: list[str]) -> None:
    """Refuse NaN/Inf in the weights and biases of Conv/MatMul/Gemm/recurrent nodes, whatever
    their size (a layer too small to quantize too): the float model already computes NaN or Inf
    through them, so every figure measured on it would be NaN. Other constants holding NaN are
    named in a note; Inf there is often meant (an additive -inf attention mask, kept float)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    weights: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        if node.op_type in _WEIGHT_OPS:
            for name in node.input[1:]:
                if name in inits:
                    weights.setdefault(name, node)
    nan_constants = []
    for name, tensor in inits.items():
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        try:
            values = numpy_helper.to_array(tensor)
        except Exception:  # noqa: S112  data that does not match its dims: the stages that read it say so, as before
            continue
        finite = np.isfinite(values)
        if finite.all():
            continue
        node = weights.get(name)
        if node is not None:
            nans = int(np.isnan(values).sum())
            infs = int(values.size - finite.sum()) - nans
            what = " and ".join(f"{n} {kind}" for n, kind in ((nans, "NaN"), (infs, "Inf")) if n)
            raise UnsupportedModelError(
                f"weight {name!r} contains {nans + infs} NaN/Inf values ({what}, read by {node.op_type}"
                f" {node.name or node.output[0]!r}): the float model already computes non-finite outputs through it;"
                " fix or retrain the model"
            )
        if np.isnan(values).any():
            nan_constants.append(name)
    if nan_constants:
        shown = ", ".join(repr(n) for n in nan_constants[:3]) + (" ..." if len(nan_constants) > 3 else "")
        notes.append(f"{len(nan_constants)} constant(s) hold NaN ({shown}): kept float; outputs they reach may be NaN")


def require_not_quantized(model: onnx.ModelProto) -> None:
    for graph in iter_graphs(model.graph):
        for node in graph.node:
            if node.op_type in _QUANTIZED_OPS:
                raise UnsupportedModelError(
                    f"the model is already quantized (node {node.name or node.output[0]!r} is {node.op_type});"
                    " ptq takes float32 models"
                )


def default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 1


# -------------------------------------------------------------------------------------- preparing


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give unnamed nodes stable unique names so every stage and the op list can refer to them.
    Named nodes keep their names; only duplicates and blanks change."""
    seen: set[str] = set()
    taken = {n.name for n in model.graph.node if n.name}
    for index, node in enumerate(model.graph.node):
        name = node.name
        if not name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name = f"{name}_"
        elif name in seen:
            name = f"{name}_{index}"
        while name in seen:
            name = f"{name}_{index}"
        node.name = name
        seen.add(name)
    return model


def move_initializers_out_of_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Old IR lists every weight as a graph input too; onnxruntime then treats weights as
    overridable and will not fold them. Weights are not inputs a caller feeds: drop them."""
    init_names = {t.name for t in model.graph.initializer}
    if not any(i.name in init_names for i in model.graph.input):
        return model
    kept = [i for i in model.graph.input if i.name not in init_names]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.ir_version = max(model.ir_version, 4)
    return model


def upgrade_opset(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    """Bring the opset into the range ptq's int8 graph can use: at least 13 (per-channel
    QuantizeLinear), at most the newest opset whose QuantizeLinear/DequantizeLinear the installed
    onnxruntime can run (onnx may define newer versions than onnxruntime implements)."""
    opset = default_opset(model)
    if opset < OLDEST_OPSET:
        raise UnsupportedModelError(f"opset {opset} is too old (ptq converts opset {OLDEST_OPSET} and newer); re-export the model")
    if opset < MIN_QDQ_OPSET:
        target, why = MIN_QDQ_OPSET, f"QDQ per-channel needs {MIN_QDQ_OPSET}"
    else:
        newest = newest_qdq_opset(opset)
        if newest >= opset:
            return model
        if newest < MIN_QDQ_OPSET:
            raise UnsupportedModelError(f"onnxruntime cannot run QuantizeLinear at any opset from {MIN_QDQ_OPSET} to {opset}")
        target, why = newest, f"onnxruntime has no QuantizeLinear kernel for opset {opset}"
    try:
        with _payloads_set_aside(model):
            converted = onnx.version_converter.convert_version(model, target)
        _restore_payloads_into(converted, model)
    except Exception as exc:  # the converter raises RuntimeError/ValidationError with long C++ text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"opset {opset} model could not be converted to opset {target} ({why}): {first}"
        ) from None
    converted.ir_version = max(converted.ir_version, 7)
    notes.append(f"converted opset {opset} -> {target} with onnx's version converter ({why})")
    return converted


@functools.cache
def newest_qdq_opset(opset: int) -> int:
    """The newest opset <= ``opset`` at which onnxruntime runs ptq's QuantizeLinear/DequantizeLinear
    nodes (a probe model per opset, newest first; a few milliseconds each)."""
    for version in range(opset, MIN_QDQ_OPSET - 1, -1):
        if _qdq_runs_at(version):
            return version
    return MIN_QDQ_OPSET - 1


def _qdq_runs_at(version: int) -> bool:
    import onnxruntime as ort
    from onnx import numpy_helper

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "bs"], ["bd"], axis=0),
        helper.make_node("Add", ["d", "wd"], ["y0"]),
        helper.make_node("Add", ["y0", "bd"], ["y"]),
    ]
    inits = {
        "s": np.float32(0.1), "z": np.uint8(128), "w": np.array([[1], [2]], np.int8),
        "ws": np.array([0.1, 0.2], np.float32), "wz": np.zeros(2, np.int8),
        "b": np.array([[3], [4]], np.int32), "bs": np.array([0.01, 0.02], np.float32),
    }  # fmt: skip
    graph = helper.make_graph(
        nodes, "qdq_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )  # fmt: skip
    opset = helper.make_opsetid("", version)
    probe = helper.make_model(graph, opset_imports=[opset])
    probe.ir_version = helper.find_min_ir_version_for([opset], ignore_unknown=True)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.ones((2, 1), np.float32)})
    except Exception:
        return False
    return True


def check_folded_size(model: onnx.ModelProto, stored_bytes: int) -> None:
    """Refuse a model whose constants, once onnxruntime folds them, would take more memory than
    ``MAX_FOLDED_BYTES`` plus twice the stored model.

    Constant tensors are the outputs of nodes whose inputs are all constant (and of Shape/Size on
    a tensor of fixed shape); their sizes come from onnx's shape inference, before onnxruntime
    allocates anything. Tensors whose shape inference cannot tell are not counted.
    """
    limit = MAX_FOLDED_BYTES + 2 * stored_bytes
    graph = model.graph
    sizes: list[tuple[int, str, tuple[int, ...]]] = []  # (bytes, tensor, dims)
    for sparse in graph.sparse_initializer:
        sizes.append((_dense_nbytes(sparse.dims, sparse.values.data_type), sparse.values.name, tuple(sparse.dims)))
    if _may_fold(graph):
        shapes = _inferred_shapes(model)
        for node in _constant_nodes(graph, shapes):
            for out in node.output:
                if out in shapes:
                    dims, elem = shapes[out]
                    sizes.append((_dense_nbytes(dims, elem), out, tuple(dims)))
    total = sum(n for n, _, _ in sizes)
    if total > limit:
        nbytes, name, dims = max(sizes)
        raise UnsupportedModelError(
            f"the model's constants would take {_gb(total)} once computed (tensor {name!r} of shape"
            f" {list(dims)} alone is {_gb(nbytes)}), more than the {_gb(limit)} ptq allows for this model; refused"
        )


def _may_fold(graph: onnx.GraphProto) -> bool:
    constant = {t.name for t in graph.initializer}
    return any(
        n.op_type in ("Shape", "Size") or (n.input and all(i in constant for i in n.input if i)) for n in graph.node
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _dense_nbytes(dims, elem_type: int) -> int:
    return math.prod(int(d) for d in dims) * (itemsize(elem_type) or 1)


def _constant_nodes(graph: onnx.GraphProto, shapes: dict[str, tuple[list[int], int]]) -> list[onnx.NodeProto]:
    """Nodes onnxruntime's constant folding may evaluate ahead of time: all inputs constant, or
    Shape/Size of a tensor whose shape is fixed."""
    constant = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    nodes = []
    for node in graph.node:
        if has_subgraph(node) or node.op_type in _NOT_FOLDED or node.domain not in ("", "ai.onnx"):
            continue
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (
            inputs
            and (all(i in constant for i in inputs) or (node.op_type in ("Shape", "Size") and inputs[0] in shapes))
        ):
            constant.update(o for o in node.output if o)
            if node.op_type != "Constant":
                nodes.append(node)
    return nodes


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[list[int], int]]:
    """Tensor name -> (fixed dims, element type) from onnx's shape inference with data propagation,
    for every graph input and inferred tensor whose shape is fully known."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_skeleton(model), check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # best effort: what cannot be inferred is not counted
        log.info("shape inference failed: %s", exc)
        return {}
    shapes = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = ([d.dim_value for d in tt.shape.dim], tt.elem_type)
    return shapes


@contextmanager
def _payloads_set_aside(model: onnx.ModelProto) -> Iterator[None]:
    """Temporarily replace the payload of every initializer of at least ``PAYLOAD_MIN_BYTES`` by an
    external data reference, so onnx's tools (which serialize the model) see a small model with
    the same names, types and shapes; on exit the payloads are back in ``model``.

    Done for models above ``LARGE_MODEL_BYTES`` (protobuf cannot serialize 2 GB). The tools
    never read external data, they only copy the references; their outputs
    get the payloads back with ``_restore_payloads_into``.
    """
    if byte_size(model) < LARGE_MODEL_BYTES:
        yield
        return
    saved: list[tuple[TensorProto, bytes]] = []
    try:
        for tensor in _large_payloads(model):
            saved.append((tensor, tensor.raw_data))
            _to_placeholder(tensor)
        yield
    finally:
        for tensor, payload in saved:
            _set_payload(tensor, payload)


_PLACEHOLDER = "ptq-payload-set-aside"


def _large_payloads(model: onnx.ModelProto) -> list[TensorProto]:
    """Initializers (all graphs) holding ``PAYLOAD_MIN_BYTES`` or more of raw data."""
    return [
        t for g in iter_graphs(model.graph) for t in g.initializer
        if t.data_location != TensorProto.EXTERNAL and len(t.raw_data) >= PAYLOAD_MIN_BYTES
    ]  # fmt: skip


def _to_placeholder(tensor: TensorProto) -> None:
    """Drop ``tensor``'s data for a reference to ``_PLACEHOLDER`` (same name, type and dims)."""
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", _PLACEHOLDER


def _set_payload(tensor: TensorProto, payload: bytes) -> None:
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT
    tensor.raw_data = payload


def _restore_payloads_into(converted: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Give the set-aside references in ``converted`` (an output of onnx's tools) their payloads
    back from ``original``, matched by initializer name."""
    placeholders = [
        t for g in iter_graphs(converted.graph) for t in g.initializer
        if t.data_location == TensorProto.EXTERNAL and any(e.value == _PLACEHOLDER for e in t.external_data)
    ]  # fmt: skip
    if not placeholders:
        return
    payloads = {t.name: t for g in iter_graphs(original.graph) for t in g.initializer}
    for tensor in placeholders:
        source = payloads.get(tensor.name)
        if source is None or not source.HasField("raw_data"):
            raise UnsupportedModelError(f"internal: lost the data of initializer {tensor.name!r} while converting the model")
        _set_payload(tensor, source.raw_data)


def optimize_basic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run onnxruntime's basic optimizations (constant folding, BN->Conv, no-op removal)."""
    import onnxruntime as ort

    from ptq.graph import ort_error_line

    data = serialized_within(model, LARGE_MODEL_BYTES)
    large = data is None
    try:
        tmp_dir = tempfile.TemporaryDirectory(prefix="ptq-prep-")
    except OSError as exc:
        raise OutputError(f"cannot create a temporary folder in {tempfile.gettempdir()}: {exc.strerror or exc}") from None
    with tmp_dir as tmp:
        src = Path(tmp) / "in.onnx"
        dst = Path(tmp) / "basic.onnx"
        try:
            if large:
                onnx.save_model(model, str(src), save_as_external_data=True, location=src.name + ".data")
            else:
                src.write_bytes(data)
        except OSError as exc:
            raise OutputError(f"cannot write a temporary copy of the model in {tmp}: {exc.strerror or exc}") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(dst)
        options.log_severity_level = 4  # failures come back as exceptions; no C++ log lines on stderr
        if large:
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "basic.data")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        try:
            ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            reason = ort_error_line(exc)
            if dst.exists():  # onnxruntime loaded the model but could not save it: disk full?
                raise OutputError(f"cannot write a temporary copy of the model in {tmp}: {reason}") from None
            raise UnsupportedModelError(f"onnxruntime cannot load the model: {reason}") from None
        try:
            prepared = onnx.load(str(dst))
        except Exception as exc:  # onnxruntime could not write all of it (out of space?)
            raise OutputError(f"cannot read back the prepared model from {tmp}: {exc}") from None
    return prepared


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx shape and type inference; on failure keep the model (types then come from running it).

    Strict first. When onnx finds the graph inconsistent (an exporter's wrong shapes, a declared
    output shape that is not what the graph computes), onnxruntime at its default level, which
    re-checks shapes after its layout transforms, decides: if it refuses the model too, so does
    ptq (its int8 graph would fail the same way); if not, the lenient pass still gives element
    types, which the planner needs, but its shapes are dropped: they can contradict what
    onnxruntime infers.
    """
    skeleton = _skeleton(model)
    for strict in (True, False):
        try:
            inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=False, strict_mode=strict, data_prop=True)
        except Exception as exc:  # inference is best-effort: exporters emit shapes it rejects
            log.info("shape inference (strict=%s) failed: %s", strict, exc)
            if strict:
                require_runs_at_default_level(model)
            continue
        if not strict:
            for vi in inferred.graph.value_info:
                if vi.type.HasField("tensor_type"):
                    vi.type.tensor_type.ClearField("shape")
        _take_types(model, inferred)
        return model
    return model


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers of ``PAYLOAD_MIN_BYTES`` or more hold no data (an
    external reference instead): what shape inference reads (names, types, shapes, the small
    constants data propagation uses) without the weights travelling through it twice: converting
    an onnx-wheel zfnet512, 350 MB of weights, went from 16.7 to 14.4 s."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    for tensor in _large_payloads(skeleton):
        _to_placeholder(tensor)
    return skeleton


def _take_types(model: onnx.ModelProto, inferred: onnx.ModelProto) -> None:
    """Give ``model`` the value_info and output types that shape inference found for its
    skeleton (the same graphs, visited in the same order)."""
    for graph, found in zip(iter_graphs(model.graph), iter_graphs(inferred.graph)):
        del graph.value_info[:]
        graph.value_info.extend(found.value_info)
        for output, typed in zip(graph.output, found.output):
            if typed.name == output.name and typed.HasField("type"):
                output.type.CopyFrom(typed.type)


def require_runs_at_default_level(model: onnx.ModelProto) -> None:
    import onnxruntime as ort

    from ptq.graph import ort_error_line
    from ptq.runtime import inference_session

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    try:
        inference_session(model, options)
    except Exception as exc:
        raise UnsupportedModelError(f"onnxruntime cannot load the model: {ort_error_line(exc)}") from None
