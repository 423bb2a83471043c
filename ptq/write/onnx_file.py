"""Write the quantized model as ``.onnx``: deterministic bytes, atomic, checked by onnx first."""

from __future__ import annotations

from pathlib import Path

import onnx

from ptq.errors import PtqError
from ptq.write.atomic import write_bytes

PRODUCER_NAME = "ptq"


def serialize(model: onnx.ModelProto, producer_version: str) -> bytes:
    """The model's bytes; the same model always gives the same bytes (no timestamps, no paths)."""
    model.producer_name = PRODUCER_NAME
    model.producer_version = producer_version
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:  # a ptq bug: refuse to write an invalid model
        raise PtqError(f"internal error: the quantized model fails onnx's checker: {str(exc).splitlines()[0]}") from None
    return model.SerializeToString(deterministic=True)


def write_onnx(model_bytes: bytes, path: Path) -> None:
    write_bytes(path, model_bytes)
