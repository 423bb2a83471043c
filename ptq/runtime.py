"""The one place ptq builds onnxruntime sessions: their options and the session itself.

Every stage that runs a model (calibration, scoring, the op list, the .ort writer, measurement)
asks here, so the options that matter are set the same way everywhere: errors come back as
exceptions (log level 4: no C++ log lines on stderr), CPU execution provider only.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
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


def inference_session(model, options=None, providers=("CPUExecutionProvider",), reuse: bool = True):
    """An onnxruntime session for a model held in memory, whatever its size.

    ``model`` is an ``onnx.ModelProto``, plain ``bytes``, or ``ptq.write.onnx_file.ModelBytes``
    whose weights travel beside the proto (models over 2 GB). Within ``reusing_sessions`` a
    session of the same bytes and options is reused (``reuse=False``: a model run only once,
    which should not push others out of the cache). A ModelProto too large for one
    protobuf is split that way first. The weights reach onnxruntime as an in-memory external
    data file, or, when one tensor alone is over 2 GB (onnxruntime refuses those from memory),
    through a temporary copy on disk. When ``options.optimized_model_filepath`` is set for such a
    model, onnxruntime saves the optimized model's weights to ``<that file>.data`` (ONNX format
    only: the ORT format holds at most 2 GB). Exceptions are onnxruntime's own.
    """
    if options is None:
        options = session_options()
    cache = _CACHE.get() if reuse else None
    if cache is not None and isinstance(model, (bytes, str, Path)) and tuple(providers) == ("CPUExecutionProvider",):
        return cache.session(model, options, lambda: _new_session(model, options, providers))
    return _new_session(model, options, providers)


def _new_session(model, options, providers):
    import onnxruntime as ort

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


# ------------------------------------------------------------------------------ session reuse


@dataclass
class SessionCache:
    """onnxruntime sessions of one conversion, reused where the same model bytes run with
    options that give the same session: the validation scoring, the latency search, its
    confirmation and the report each opened their own (PP-OCR cls: 265 sessions, 14 of them
    repeats of 5 models, 0.8 s of 2.4 s spent creating sessions).

    Holds the ``capacity`` most recently used sessions of models up to ``max_model_bytes``
    (a session holds its model's weights and memory arena). ``created``/``reused`` count what
    happened; ``saved_s`` adds, for each reuse, the measured time the reused session took to create.
    """

    capacity: int = 16
    max_model_bytes: int = 256 * 2**20
    created: int = 0
    reused: int = 0
    saved_s: float = 0.0

    def __post_init__(self) -> None:
        self._sessions: OrderedDict[tuple, tuple[object, float]] = OrderedDict()

    def session(self, model: bytes | str | Path, options, make):
        """The cached session for ``model`` with ``options``, else ``make()``'s (then cached)."""
        key = self._key(model, options)
        if key is None:
            return make()
        if key in self._sessions:
            self._sessions.move_to_end(key)
            sess, seconds = self._sessions[key]
            self.reused += 1
            self.saved_s += seconds
            return sess
        started = time.perf_counter()
        sess = make()
        self.created += 1
        self._sessions[key] = (sess, time.perf_counter() - started)
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)
        return sess

    def _key(self, model, options) -> tuple | None:
        if options.optimized_model_filepath or options.enable_profiling:
            return None  # the session writes a file: a cached one would not
        where = ""
        if isinstance(model, bytes):
            data = model
        else:
            path = Path(model)
            if not path.is_file() or path.stat().st_size > self.max_model_bytes:
                return None
            data, where = path.read_bytes(), str(path.resolve())  # the path too: external data beside it
        if len(data) > self.max_model_bytes:
            return None
        threads = options.intra_op_num_threads
        try:
            spinning = options.get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:  # not set: onnxruntime's default
            spinning = "1"
        return (
            hashlib.sha256(data).hexdigest(),
            where,
            threads,
            options.inter_op_num_threads,
            # with one intra-op thread there is no worker to spin: the flag makes no difference
            spinning if threads != 1 else None,
            str(options.graph_optimization_level),
            str(options.execution_mode),
            options.log_severity_level,
        )


_CACHE: contextvars.ContextVar[SessionCache | None] = contextvars.ContextVar("ptq_session_cache", default=None)


@contextlib.contextmanager
def reusing_sessions(cache: SessionCache | None = None) -> Iterator[SessionCache]:
    """Within this block ``inference_session`` reuses sessions (``SessionCache``); nested blocks
    share the outer cache. A cache rather than sessions passed along: the stages that open
    sessions (scoring, the latency search, the report) exchange models, not each other's sessions."""
    outer = _CACHE.get()
    if outer is not None:
        yield outer
        return
    cache = cache if cache is not None else SessionCache()
    token = _CACHE.set(cache)
    try:
        yield cache
    finally:
        _CACHE.reset(token)
