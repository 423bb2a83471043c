"""External data: where a model's tensors keep their bytes outside the .onnx file.

ONNX tooling that follows ``location`` blindly can be made to read any file (absolute paths,
``..``, symlinks) or to allocate whatever a tiny file declares; here every location is resolved
and confined to the model's folder, and exactly the declared byte range is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, helper

from ptq.errors import InvalidModelError
from ptq.graph import iter_graphs

_SUB_BYTE_BITS = {
    getattr(TensorProto, name): bits
    for name, bits in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2))
    if hasattr(TensorProto, name)
}


def element_count(tensor: TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= int(d)
    return n


@dataclass(frozen=True)
class ExternalRef:
    tensor: TensorProto
    target: Path  # resolved, inside the model's folder
    offset: int
    length: int  # bytes to read


def check_external_data(model: onnx.ModelProto, base_dir: Path) -> list[ExternalRef]:
    """Refuse external-data locations that leave the model's folder or point past a file's end.

    ONNX tooling that follows ``location`` blindly can be made to read any file (absolute paths,
    ``..``, symlinks); we resolve each location and require it to stay under ``base_dir``, and
    require the file to hold exactly the bytes the tensor's shape needs at the given offset.
    """
    root = base_dir.resolve()
    refs = []
    for tensor in external_tensors(model):
        name = tensor.name
        try:
            info = external_data_helper.ExternalDataInfo(tensor)
        except (ValueError, TypeError) as exc:  # a non-integer or negative offset/length
            raise InvalidModelError(f"tensor {name!r}: invalid external data description: {exc}") from None
        location = info.location
        if not location or "\0" in location or os.path.isabs(location) or Path(location).drive or location.startswith("\\"):
            raise InvalidModelError(f"tensor {name!r}: external data location {location!r} is not a relative path")
        try:
            target = (root / location).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, over-long names
            raise InvalidModelError(f"tensor {name!r}: external data location {location!r} cannot be resolved: {exc}") from None
        if root != target and root not in target.parents:
            raise InvalidModelError(
                f"tensor {name!r}: external data location {location!r} leaves the model's folder; refused"
            )
        try:
            if not target.is_file():
                what = "is not a file" if target.exists() else "is missing"
                raise InvalidModelError(f"tensor {name!r}: external data file {location!r} {what}")
            file_size = target.stat().st_size
        except OSError as exc:
            raise InvalidModelError(f"tensor {name!r}: external data file {location!r}: {exc.strerror or exc}") from None
        offset = int(info.offset or 0)
        expected = tensor_nbytes(tensor)
        if info.length is not None:
            length = int(info.length)
        elif expected is not None:
            length = expected
        else:
            length = file_size - offset
        if offset < 0 or length < 0 or offset + length > file_size:
            raise InvalidModelError(
                f"tensor {name!r}: external data {location!r} declares bytes {offset}..{offset + length}"
                f" but the file has {file_size}; truncated?"
            )
        if expected is not None and expected != length:
            raise InvalidModelError(
                f"tensor {name!r}: external data holds {length} bytes but its shape needs {expected}"
            )
        refs.append(ExternalRef(tensor, target, offset, length))
    return refs


def external_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    for tensor in all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            yield tensor


def all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every TensorProto of the model: initializers, sparse parts, node attributes, all graphs."""
    for graph in iter_graphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices


def tensor_nbytes(tensor: TensorProto) -> int | None:
    """Bytes of the tensor's data as its shape and element type declare (None: not computable)."""
    count = element_count(tensor)
    if tensor.data_type in _SUB_BYTE_BITS:
        return (count * _SUB_BYTE_BITS[tensor.data_type] + 7) // 8
    size = itemsize(tensor.data_type)
    return None if size is None else count * size


def itemsize(data_type: int) -> int | None:
    if data_type in (TensorProto.UNDEFINED, TensorProto.STRING) or data_type in _SUB_BYTE_BITS:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except (KeyError, ValueError, TypeError):
        return None


def load_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Read each external tensor's bytes into it: exactly the checked byte range, nothing more."""
    for ref in check_external_data(model, base_dir):
        try:
            with open(ref.target, "rb") as f:
                f.seek(ref.offset)
                data = f.read(ref.length)
        except OSError as exc:
            raise InvalidModelError(f"tensor {ref.tensor.name!r}: cannot read its external data: {exc.strerror or exc}") from None
        if len(data) != ref.length:
            raise InvalidModelError(f"tensor {ref.tensor.name!r}: external data file changed while it was read")
        ref.tensor.raw_data = data
        del ref.tensor.external_data[:]
        ref.tensor.data_location = TensorProto.DEFAULT


def stored_size_bytes(path: Path, model: onnx.ModelProto) -> int:
    """Bytes on disk of the model file and every external data file it references."""
    total = path.stat().st_size
    seen: set[Path] = set()
    root = path.parent.resolve()
    for tensor in external_tensors(model):
        target = (root / external_data_helper.ExternalDataInfo(tensor).location).resolve()
        if target not in seen:
            seen.add(target)
            total += target.stat().st_size
    return total
