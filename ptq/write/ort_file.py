"""Write the ``.ort`` flatbuffer with onnxruntime's own serializer.

onnxruntime saves the graph it will run, in ORT format, when a session is created with
``optimized_model_filepath`` and ``session.save_model_format=ORT``. We save at the *extended*
level: the QDQ -> QLinear*/hybrid fusions are applied (they are the point of the file), the
layout transforms of the *all* level (NCHWc blocking for this CPU's vector width) are not, so
the file stays portable to other CPUs.

onnxruntime's save is not byte-deterministic (its kernel-type-string resolver is written in the
iteration order of absl hash maps salted by heap addresses; see ``ptq.write.ort_canonical``), and
it has no option to make it so. The saved file is therefore read back and written again in an
order fixed by its content, with onnxruntime's own generated flatbuffer classes: same model and
options, same bytes, and the same meaning (fields copied, not changed).
"""

from __future__ import annotations

from pathlib import Path

from ptq.errors import OutputError, PtqError
from ptq.graph import ort_error_line
from ptq.runtime import inference_session, session_options
from ptq.write.atomic import commit, temp_path
from ptq.write.ort_canonical import canonical_ort_bytes


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
        canonical = canonical_ort_bytes(tmp.read_bytes())
        try:
            tmp.write_bytes(canonical)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        commit(tmp, path)
