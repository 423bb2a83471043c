"""Write the ``.ort`` flatbuffer with onnxruntime's own serializer.

onnxruntime saves the graph it will run, in ORT format, when a session is created with
``optimized_model_filepath`` and ``session.save_model_format=ORT``. We save at the *extended*
level: the QDQ -> QLinear*/hybrid fusions are applied (they are the point of the file), the
layout transforms of the *all* level (NCHWc blocking for this CPU's vector width) are not, so
the file stays portable to other CPUs.
"""

from __future__ import annotations

from pathlib import Path

from ptq.errors import OutputError, PtqError
from ptq.graph import ort_error_line
from ptq.runtime import inference_session, session_options
from ptq.write.atomic import commit, temp_path


def write_ort(model_bytes: bytes, path: Path) -> None:
    """Save ``model_bytes`` (an ONNX model) as an ORT-format file at ``path`` atomically."""
    if getattr(model_bytes, "external", None) is not None:
        raise OutputError(
            f"cannot write {path}: the ORT format holds at most 2 GB (one flatbuffer) and this model's"
            " weights are larger; rerun with --no-ort and run the .onnx with its .data file"
        )
    with temp_path(path, suffix=".ort") as tmp:
        options = session_options(threads=1, optimization="ORT_ENABLE_EXTENDED", save_optimized_to=tmp, ort_format=True)
        try:
            inference_session(model_bytes, options)
        except Exception as exc:
            reason = ort_error_line(exc)
            if tmp.stat().st_size or "failed to save" in reason.lower():  # loaded; saving failed: disk full?
                raise OutputError(f"cannot write {path}: {reason}") from None
            raise PtqError(f"internal error: onnxruntime cannot load the quantized model: {reason}") from None
        commit(tmp, path)
