"""Read, validate and prepare a float32 ONNX model.

onnx and onnxruntime do the work: onnx parses and checks the file and converts old opsets;
onnxruntime's *basic* graph optimizations fold constants, fuse BatchNormalization into Conv and
drop no-op nodes (they only emit standard ONNX ops, so the result is still a portable model);
onnx infers shapes and element types. This module adds what they leave to the caller:
confining external data to the model's folder, refusing models ptq cannot quantize with one
clear line, and moving initializers out of the graph inputs (old IR) so they can be folded.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import TensorProto, external_data_helper

from ptq.errors import InvalidModelError, UnsupportedModelError
from ptq.graph import iter_graphs

log = logging.getLogger(__name__)

# QuantizeLinear with per-channel scales (axis attribute) needs opset 13.
MIN_QDQ_OPSET = 13
OLDEST_OPSET = 7  # older models predate the version converter's adapters; ask for a re-export

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
    "MatMulIntegerToFloat",
    "MatMulNBits",
}


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
    external_data_helper.load_external_data_for_model(model, str(path.parent))
    check(model)
    require_float32(model)
    require_not_quantized(model)
    notes: list[str] = []
    source_opset = default_opset(model)
    model = name_nodes(model)
    original = [SourceNode(n.name, n.op_type, tuple(n.output)) for n in model.graph.node]
    model = move_initializers_out_of_inputs(model)
    model = upgrade_opset(model, notes)
    model = optimize_basic(model)
    model = name_nodes(model)  # the version converter and onnxruntime add unnamed nodes
    model = infer_shapes(model)
    return LoadedModel(model, path, size_bytes, source_opset, notes, original)


def read(path: Path) -> onnx.ModelProto:
    """Parse the protobuf without its external data; check that the external data is safe."""
    if not path.exists():
        raise InvalidModelError(f"{path}: no such file")
    if not path.is_file():
        raise InvalidModelError(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidModelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data:
        raise InvalidModelError(f"{path}: empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError, or RuntimeWarning-derived errors in upb
        raise InvalidModelError(f"{path}: not an ONNX model (the protobuf does not parse; truncated or corrupt?)") from None
    if not model.HasField("graph") or not model.opset_import:
        raise InvalidModelError(f"{path}: not an ONNX model (no graph or no opset; truncated or corrupt?)")
    check_external_data(model, path.parent)
    return model


def check_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external-data locations that leave the model's folder or point past a file's end.

    ONNX tooling that follows ``location`` blindly can be made to read any file (absolute paths,
    ``..``, symlinks); we resolve each location and require it to stay under ``base_dir``.
    """
    root = base_dir.resolve()
    for tensor in _external_tensors(model):
        info = external_data_helper.ExternalDataInfo(tensor)
        location = info.location
        if not location or os.path.isabs(location) or Path(location).drive:
            raise InvalidModelError(f"tensor {tensor.name!r}: external data location {location!r} is not a relative path")
        target = (root / location).resolve()
        if root != target and root not in target.parents:
            raise InvalidModelError(
                f"tensor {tensor.name!r}: external data location {location!r} leaves the model's folder; refused"
            )
        if not target.is_file():
            raise InvalidModelError(f"tensor {tensor.name!r}: external data file {location!r} is missing")
        file_size = target.stat().st_size
        offset = int(info.offset or 0)
        length = int(info.length) if info.length is not None else file_size - offset
        if offset < 0 or length < 0 or offset + length > file_size:
            raise InvalidModelError(
                f"tensor {tensor.name!r}: external data {location!r} declares bytes {offset}..{offset + length}"
                f" but the file has {file_size}; truncated?"
            )
        expected = _tensor_nbytes(tensor)
        if expected is not None and info.length is not None and expected != length:
            raise InvalidModelError(
                f"tensor {tensor.name!r}: external data holds {length} bytes but its shape needs {expected}"
            )


def _external_tensors(model: onnx.ModelProto):
    for graph in iter_graphs(model.graph):
        for tensor in graph.initializer:
            if external_data_helper.uses_external_data(tensor):
                yield tensor
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t") and external_data_helper.uses_external_data(attr.t):
                    yield attr.t


def _tensor_nbytes(tensor: TensorProto) -> int | None:
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return None
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count * itemsize


def stored_size_bytes(path: Path, model: onnx.ModelProto) -> int:
    """Bytes on disk of the model file and every external data file it references."""
    total = path.stat().st_size
    seen: set[str] = set()
    for tensor in _external_tensors(model):
        location = external_data_helper.ExternalDataInfo(tensor).location
        if location not in seen:
            seen.add(location)
            total += (path.parent / location).stat().st_size
    return total


def check(model: onnx.ModelProto) -> None:
    """onnx's checker (full model check without shape inference, which comes later)."""
    if model.ByteSize() > 2**31 - 1 if not _has_external(model) else False:
        raise InvalidModelError("model over 2 GB must store its weights as external data")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise InvalidModelError(f"invalid ONNX model: {first}") from None
    except ValueError as exc:  # e.g. "model too large" from the serializer
        raise InvalidModelError(f"invalid ONNX model: {exc}") from None


def _has_external(model: onnx.ModelProto) -> bool:
    return any(True for _ in _external_tensors(model))


def require_float32(model: onnx.ModelProto) -> None:
    """Refuse models whose float tensors are float16/bfloat16/float64: ptq converts float32."""
    other: dict[str, str] = {}
    graph = model.graph
    for vi in list(graph.input) + list(graph.output):
        t = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else TensorProto.UNDEFINED
        if t in _FLOAT_TYPES and t != TensorProto.FLOAT:
            other[vi.name] = TensorProto.DataType.Name(t).lower()
    float_weights = 0
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            float_weights += 1
        elif init.data_type in _FLOAT_TYPES and _count(init) > 1:
            other[init.name] = TensorProto.DataType.Name(init.data_type).lower()
    if other:
        name, dtype = next(iter(other.items()))
        raise UnsupportedModelError(
            f"not a float32 model: {dtype} tensor {name!r} ({len(other)} non-float32 float tensors);"
            " ptq converts float32 models (convert float16/float64 models to float32 first)"
        )


def _count(tensor: TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= int(d)
    return n


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
    """Convert to opset 13 when older: per-channel QuantizeLinear needs it."""
    opset = default_opset(model)
    if opset >= MIN_QDQ_OPSET:
        return model
    if opset < OLDEST_OPSET:
        raise UnsupportedModelError(f"opset {opset} is too old (ptq converts opset {OLDEST_OPSET} and newer); re-export the model")
    try:
        converted = onnx.version_converter.convert_version(model, MIN_QDQ_OPSET)
    except Exception as exc:  # the converter raises RuntimeError/ValidationError with long C++ text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"opset {opset} model could not be converted to opset {MIN_QDQ_OPSET} (needed for int8): {first}"
        ) from None
    converted.ir_version = max(converted.ir_version, 7)
    notes.append(f"converted opset {opset} -> {MIN_QDQ_OPSET} with onnx's version converter (QDQ per-channel needs 13)")
    return converted


def optimize_basic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run onnxruntime's basic optimizations (constant folding, BN->Conv, no-op removal)."""
    import onnxruntime as ort

    from ptq.graph import ort_error_line

    with tempfile.TemporaryDirectory(prefix="ptq-prep-") as tmp:
        src = Path(tmp) / "in.onnx"
        dst = Path(tmp) / "basic.onnx"
        _save(model, src)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(dst)
        options.log_severity_level = 3
        if model.ByteSize() > 1_800_000_000:
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "basic.data")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        try:
            ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UnsupportedModelError(f"onnxruntime cannot load the model: {ort_error_line(exc)}") from None
        prepared = onnx.load(str(dst))
    return prepared


def _save(model: onnx.ModelProto, path: Path) -> None:
    if model.ByteSize() > 1_800_000_000:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx shape and type inference; on failure keep the model (types then come from running it)."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is best-effort: exporters emit shapes it rejects
        log.info("shape inference failed: %s", exc)
        return model
