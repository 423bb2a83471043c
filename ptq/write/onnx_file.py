"""Write the quantized model as ``.onnx``: deterministic bytes, atomic, checked by onnx first.

A model whose serialized form would pass ``EXTERNAL_DATA_THRESHOLD`` (protobuf cannot hold 2 GB in
one message) keeps its weights in a data file beside it, ``<name>.onnx.data``: ``serialize``
returns the small model proto with the weights' bytes alongside (``ModelBytes.external``), which
onnxruntime can load from memory (``ptq.graph.inference_session``), and ``write_onnx`` writes
both files in one atomic step, the data file first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ptq.errors import PtqError
from ptq.graph import byte_size
from ptq.write.atomic import transaction, write_bytes

PRODUCER_NAME = "ptq"

# Serialized size above which the weights go to an external data file (protobuf's limit is 2 GiB;
# the margin leaves room for the graph itself). Tests lower it to exercise the path on small models.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26
# Tensors smaller than this stay inside the .onnx even then (scales, zero points, shapes).
EXTERNAL_MIN_TENSOR_BYTES = 1024
# Each tensor starts at a multiple of this in the data file (page size: onnxruntime can map it).
EXTERNAL_ALIGNMENT = 4096
# The location written into the proto by ``serialize``; ``write_onnx`` renames it after the output.
DATA_LOCATION = "ptq-weights.data"


class ModelBytes(bytes):
    """The bytes of a ``.onnx`` file; for a model over ``EXTERNAL_DATA_THRESHOLD`` its weights are in
    ``external`` (the content of the data file named ``location`` in the proto), else ``None``."""

    external: bytes | bytearray | None = None
    location: str | None = None
    largest_tensor: int = 0  # bytes of the largest tensor in ``external``

    @property
    def total_size(self) -> int:
        """Bytes of the .onnx plus its data file."""
        return len(self) + (len(self.external) if self.external is not None else 0)


# Tensors of at least this many elements that hold one repeated value are stored as
# ConstantOfShape: architecture-only models (onnx's bundled test models) generate all their
# weights that way, and materialising them would make the "quantized" file larger than the input.
SPLAT_MIN_ELEMENTS = 64


def store_splats_compactly(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace large initializers whose elements are all equal by a ConstantOfShape node.

    onnxruntime folds ConstantOfShape back into an initializer when it loads the model (basic
    level, before its QDQ fusions), so kernels and fusions see the same constant.
    """
    graph = model.graph
    nodes = []
    for tensor in graph.initializer:  # replaced in place: re-adding would copy every weight
        value = _splat_value(tensor)
        if value is None:
            continue
        dims = list(tensor.dims)
        name = tensor.name
        tensor.CopyFrom(numpy_helper.from_array(np.array(dims, dtype=np.int64), f"{name}/shape"))
        nodes.append(helper.make_node("ConstantOfShape", [tensor.name], [name], name=f"{name}/splat", value=value))
    if nodes:
        existing = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + existing)
    return model


def _splat_value(tensor: onnx.TensorProto) -> onnx.TensorProto | None:
    """The single value (as a 1-element tensor) of a large initializer whose elements are all
    equal and finite; None for any other tensor. Cheap for ordinary weights: they differ early."""
    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    if count < SPLAT_MIN_ELEMENTS or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    if tensor.HasField("raw_data"):
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
        except (KeyError, ValueError, TypeError):
            return None
        if dtype.kind not in "fiub" or len(tensor.raw_data) != count * dtype.itemsize:
            return None
        head = np.frombuffer(tensor.raw_data[: 64 * dtype.itemsize], dtype=dtype.newbyteorder("<"))
        if not np.all(head == head[0]):
            return None
        value = np.frombuffer(tensor.raw_data, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
    else:
        value = numpy_helper.to_array(tensor)
    first = value.flat[0]
    if not np.isfinite(first) if value.dtype.kind == "f" else False:
        return None
    for start in range(0, value.size, 1 << 20):  # chunks: no full-size temporary
        if not np.all(value.flat[start : start + (1 << 20)] == first):
            return None
    return numpy_helper.from_array(value.flat[:1].copy())


def serialize(model: onnx.ModelProto, producer_version: str, data_location: str = DATA_LOCATION) -> ModelBytes:
    """The model's bytes; the same model always gives the same bytes (no timestamps, no paths).

    Over ``EXTERNAL_DATA_THRESHOLD`` the weights are split off into ``ModelBytes.external``, named
    ``data_location`` in the proto (pass ``data_path(output).name``; ``write_onnx`` renames
    any other name to that).
    """
    model = store_splats_compactly(model)
    model.producer_name = PRODUCER_NAME
    model.producer_version = producer_version
    large = byte_size(model) > EXTERNAL_DATA_THRESHOLD
    try:
        with _payloads_emptied(model) if large else contextlib.nullcontext():
            onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:  # a ptq bug: refuse to write an invalid model
        raise PtqError(f"internal error: the quantized model fails onnx's checker: {str(exc).splitlines()[0]}") from None
    if large:
        return split_external(model, data_location)
    return ModelBytes(model.SerializeToString(deterministic=True))


@contextlib.contextmanager
def _payloads_emptied(model: onnx.ModelProto) -> Iterator[None]:
    """Temporarily make every big initializer an empty tensor of its type, so onnx's checker (which
    serializes the model and checks each tensor against its own shape) sees a small model with
    the same graph; the checker does not compare initializer shapes with the nodes using them."""
    saved = []
    try:
        for tensor in model.graph.initializer:
            if tensor.HasField("raw_data") and len(tensor.raw_data) >= EXTERNAL_MIN_TENSOR_BYTES:
                saved.append((tensor, list(tensor.dims), tensor.raw_data))
                tensor.ClearField("raw_data")
                del tensor.dims[:]
                tensor.dims.append(0)
        yield
    finally:
        for tensor, dims, payload in saved:
            del tensor.dims[:]
            tensor.dims.extend(dims)
            tensor.raw_data = payload


def split_external(model: onnx.ModelProto, location: str = DATA_LOCATION) -> ModelBytes:
    """Serialize ``model`` with the payloads of its big initializers in a separate buffer.

    ``model`` itself is left as it was. The result is deterministic: tensors in graph order, each
    at the next multiple of ``EXTERNAL_ALIGNMENT``.
    """
    data = bytearray()
    moved: list[tuple[TensorProto, bytes]] = []
    try:
        for tensor in model.graph.initializer:
            if tensor.data_location == TensorProto.EXTERNAL:
                continue
            if not tensor.HasField("raw_data"):
                if _typed_nbytes(tensor) < EXTERNAL_MIN_TENSOR_BYTES:
                    continue
                tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
            payload = tensor.raw_data
            if len(payload) < EXTERNAL_MIN_TENSOR_BYTES:
                continue
            data.extend(b"\0" * (-len(data) % EXTERNAL_ALIGNMENT))
            offset = len(data)
            data.extend(payload)
            moved.append((tensor, payload))
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(payload)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
        proto = model.SerializeToString(deterministic=True)
    finally:
        for tensor, payload in moved:
            del tensor.external_data[:]
            tensor.data_location = TensorProto.DEFAULT
            tensor.raw_data = payload
    if len(proto) > 2**31 - 1:
        raise PtqError("internal error: the quantized graph is over 2 GB even without its weights")
    result = ModelBytes(proto)
    result.external, result.location = data, location
    result.largest_tensor = max((len(p) for _, p in moved), default=0)
    return result


def _typed_nbytes(tensor: TensorProto) -> int:
    return 4 * (len(tensor.float_data) + len(tensor.int32_data)) + 8 * (len(tensor.int64_data) + len(tensor.double_data))


def data_path(path: Path) -> Path:
    """The external data file written beside the .onnx at ``path`` for a large model."""
    return Path(path).with_name(Path(path).name + ".data")


def write_onnx(model_bytes: bytes, path: Path) -> None:
    """Write the .onnx (and, for a large model, its data file beside it) atomically."""
    external = getattr(model_bytes, "external", None)
    if external is None:
        write_bytes(path, model_bytes)
        return
    target = data_path(path)
    proto_bytes = bytes(model_bytes)
    if model_bytes.location != target.name:
        proto = onnx.ModelProto()
        proto.ParseFromString(proto_bytes)
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value == model_bytes.location:
                    entry.value = target.name
        proto_bytes = proto.SerializeToString(deterministic=True)
    with transaction():  # the data file lands first: a reader never sees the .onnx without it
        write_bytes(target, external)
        write_bytes(path, proto_bytes)
