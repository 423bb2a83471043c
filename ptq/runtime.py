"""The one place ptq builds onnxruntime sessions: their options and the session itself.

Every stage that runs a model (calibration, scoring, the op list, the .ort writer, measurement)
asks here, so the options that matter are set the same way everywhere: errors come back as
exceptions (log level 4: no C++ log lines on stderr), CPU execution provider only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from ptq.graph import serialized_within
from ptq.write import onnx_file

# Fatal only: failures come back as exceptions, so onnxruntime's own log lines would repeat them.
LOG_SEVERITY = 4


def session_options(
    threads: int | None = None,
    spinning: bool = True,
    optimization: str | None = None,
    save_optimized_to: Path | None = None,
    ort_format: bool = False,
    sequential: bool = False,
):
    """``onnxruntime.SessionOptions`` for one use.

    Args:
        threads: intra-op threads (inter-op then 1); None keeps onnxruntime's default.
        spinning: False makes idle intra-op workers sleep instead of spin-waiting (they would take
            cores from another session or thread working meanwhile).
        optimization: a ``GraphOptimizationLevel`` member name (e.g. "ORT_ENABLE_EXTENDED");
            None keeps onnxruntime's default (all).
        save_optimized_to: onnxruntime saves the optimized model there (ORT format if ``ort_format``).
        sequential: ``ExecutionMode.ORT_SEQUENTIAL``, as users run models.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = LOG_SEVERITY
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimization is not None:
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
    if sequential:
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if save_optimized_to is not None:
        options.optimized_model_filepath = str(save_optimized_to)
        if ort_format:
            options.add_session_config_entry("session.save_model_format", "ORT")
    return options


def inference_session(model, options=None, providers=("CPUExecutionProvider",)):
    """An onnxruntime session for a model held in memory, whatever its size.

    ``model`` is an ``onnx.ModelProto``, plain ``bytes``, or ``ptq.write.onnx_file.ModelBytes``
    whose weights travel beside the proto (models over 2 GB). A ModelProto too large for one
    protobuf is split that way first. The weights reach onnxruntime as an in-memory external
    data file, or, when one tensor alone is over 2 GB (onnxruntime refuses those from memory),
    through a temporary copy on disk. When ``options.optimized_model_filepath`` is set for such a
    model, onnxruntime saves the optimized model's weights to ``<that file>.data`` (ONNX format
    only: the ORT format holds at most 2 GB). Exceptions are onnxruntime's own.
    """
    import onnxruntime as ort

    if options is None:
        options = session_options()
    if isinstance(model, onnx.ModelProto):
        model = serialized_within(model, onnx_file.EXTERNAL_DATA_THRESHOLD) or onnx_file.split_external(model)
    external = getattr(model, "external", None)
    if external is None:
        return ort.InferenceSession(model, options, providers=list(providers))
    if options.optimized_model_filepath:
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", Path(options.optimized_model_filepath).name + ".data"
        )
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    if getattr(model, "largest_tensor", 0) < 2**31:
        options.add_external_initializers_from_files_in_memory([model.location], [memoryview(external)], [len(external)])
        return ort.InferenceSession(bytes(model), options, providers=list(providers))
    with tempfile.TemporaryDirectory(prefix="ptq-session-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model)
        with open(Path(tmp) / model.location, "wb") as f:
            f.write(external)
        # onnxruntime maps or copies the weights while it builds the session; the files can go after.
        return ort.InferenceSession(str(path), options, providers=list(providers))
