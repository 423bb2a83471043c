"""Write the quantized model as ``.onnx``: deterministic bytes, atomic, checked by onnx first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ptq.errors import PtqError
from ptq.write.atomic import write_bytes

PRODUCER_NAME = "ptq"


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
    kept, nodes = [], []
    for tensor in graph.initializer:
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        value = numpy_helper.to_array(tensor) if count >= SPLAT_MIN_ELEMENTS else None
        if value is None or not np.all(value == value.flat[0]) or not np.isfinite(value.flat[0]):
            kept.append(tensor)
            continue
        shape = numpy_helper.from_array(np.array(tensor.dims, dtype=np.int64), f"{tensor.name}/shape")
        kept.append(shape)
        fill = numpy_helper.from_array(value.flat[:1].copy())
        nodes.append(helper.make_node("ConstantOfShape", [shape.name], [tensor.name], name=f"{tensor.name}/splat", value=fill))
    if nodes:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        existing = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + existing)
    return model


def serialize(model: onnx.ModelProto, producer_version: str) -> bytes:
    """The model's bytes; the same model always gives the same bytes (no timestamps, no paths)."""
    model = store_splats_compactly(model)
    model.producer_name = PRODUCER_NAME
    model.producer_version = producer_version
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:  # a ptq bug: refuse to write an invalid model
        raise PtqError(f"internal error: the quantized model fails onnx's checker: {str(exc).splitlines()[0]}") from None
    return model.SerializeToString(deterministic=True)


def write_onnx(model_bytes: bytes, path: Path) -> None:
    write_bytes(path, model_bytes)
