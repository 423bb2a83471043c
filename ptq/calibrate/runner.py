"""Run the float model over calibration samples and observe the ranges of chosen tensors.

One onnxruntime session, with the observed tensors added as extra graph outputs; samples are
read and run one at a time and each output updates its observer and is dropped, so peak memory
is one sample's activations whatever the number of samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from ptq.calibrate import ranges as range_estimators
from ptq.calibrate.data import input_specs, iter_samples, sample_files
from ptq.calibrate.observers import HistogramObserver, MinMaxObserver
from ptq.config import CalibrationMethod, ImageFormat
from ptq.errors import CalibrationDataError, UnsupportedModelError
from ptq.graph import inference_session, ort_error_line

Progress = Callable[[int, int], None]


@contextlib.contextmanager
def with_outputs(model: onnx.ModelProto, tensors: Iterable[str]) -> Iterator[onnx.ModelProto]:
    """``model`` returning ``tensors`` too (those not already outputs or inputs), for the duration
    of the block. The outputs are added in place and removed afterwards rather than on a copy:
    a copy would duplicate every weight in memory."""
    present = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    original = len(model.graph.output)
    for name in tensors:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            present.add(name)
    try:
        yield model
    finally:
        del model.graph.output[original:]


def session(model: onnx.ModelProto, threads: int | None = None):
    """A CPU inference session for ``model`` (serialized in memory, or via a file when huge)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors come back as exceptions, not C++ log lines on stderr
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return inference_session(model, options)
    except Exception as exc:
        raise UnsupportedModelError(f"onnxruntime cannot run the model: {ort_error_line(exc)}") from None


def calibrate(
    model: onnx.ModelProto,
    tensors: list[str],
    data_dir: Path,
    method: CalibrationMethod = CalibrationMethod.MINMAX,
    percentile: float = 99.99,
    limit: int | None = None,
    progress: Progress | None = None,
    image_format: ImageFormat | None = None,
) -> tuple[dict[str, tuple[float, float]], int]:
    """Range of every tensor in ``tensors`` over the samples in ``data_dir``, by ``method``.

    Returns:
        ``(ranges, samples_used)``.
    """
    histogram = method != CalibrationMethod.MINMAX
    observers, used = observe(model, tensors, data_dir, histogram, limit, progress, image_format)
    return {name: choose_range(obs, method, percentile) for name, obs in observers.items()}, used


def observe(
    model: onnx.ModelProto,
    tensors: list[str],
    data_dir: Path,
    histogram: bool = True,
    limit: int | None = None,
    progress: Progress | None = None,
    image_format: ImageFormat | None = None,
) -> tuple[dict[str, MinMaxObserver | HistogramObserver], int]:
    """One observer per tensor in ``tensors``, fed every sample in ``data_dir``: a histogram
    observer (any method's range can be chosen from it afterwards) or a plain min/max one.

    Returns:
        ``(observers, samples_used)``.
    """
    specs = input_specs(model)
    total = len(sample_files(data_dir)[:limit])
    with with_outputs(model, tensors) as observed:
        sess = session(observed)
    output_names = [o.name for o in sess.get_outputs()]
    wanted = set(tensors)
    make = HistogramObserver if histogram else MinMaxObserver
    observers = {name: make() for name in tensors}
    used = 0
    for feed in iter_samples(data_dir, specs, limit, image_format):
        try:
            outputs = sess.run(None, feed)
        except Exception as exc:
            raise CalibrationDataError(f"sample {used + 1} of {total}: onnxruntime failed on it: {ort_error_line(exc)}") from None
        for name, value in zip(output_names, outputs):
            if name in wanted:
                observers[name].update(value)
        for name, value in feed.items():
            if name in wanted:
                observers[name].update(value)
        del outputs
        used += 1
        if progress:
            progress(used, total)
    return observers, used


def choose_range(observer, method: CalibrationMethod, percentile: float) -> tuple[float, float]:
    """The range ``method`` picks from what ``observer`` saw; never wider than min/max."""
    if method == CalibrationMethod.MINMAX or not isinstance(observer, HistogramObserver) or observer.minmax.count == 0:
        return observer.range()
    counts, edges = observer.counts, observer.edges
    if method == CalibrationMethod.PERCENTILE:
        lo, hi = range_estimators.percentile_range(counts, edges, percentile)
    elif method == CalibrationMethod.ENTROPY:
        lo, hi = range_estimators.entropy_range(counts, edges)
    else:
        lo, hi = range_estimators.mse_range(counts, edges)
    seen_lo, seen_hi = observer.range()
    return max(lo, seen_lo), min(hi, seen_hi)
