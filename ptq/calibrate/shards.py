"""Sharded calibration: the samples split into contiguous shards, each observed by its own process
(or Ray task), the observer states merged.

What crosses a process boundary is plain data, never a model or a sample:

- to a worker, a ``ShardTask``: paths (the model with the observed tensors as extra outputs,
  written once to disk by the driver; the calibration folder), the shard's sample indices and
  the observer settings, as a dict of strings and numbers;
- back, the shard's observer states as the bytes of an uncompressed ``.npz`` (plain float64
  arrays, read with ``allow_pickle=False``) plus a few numbers (samples used, seconds, peak RSS).

So every worker reads the model and its shard's samples from disk itself: on one machine from
the same files; on a Ray cluster the model file and the calibration folder must be at the same
path on every node (shared storage), and ptq ships neither through the driver.

Each worker streams its shard one sample at a time (``runner.observe_samples``), so a worker's
memory is one model and one sample's activations whatever the number of samples. The driver
merges the states in shard order (deterministic for a given number of shards): min/max merge
exactly; histograms merge by re-binning onto the union range (``HistogramObserver.merge``), so
percentile/MSE/entropy ranges agree with a one-process run up to that re-binning and to the
sampled bulk counting of large updates (``observers.SAMPLED_MIN_VALUES``), which depends on the
counts seen so far in each shard: ``REBIN_TOLERANCE`` bounds the difference (tested on PP-OCR det;
bench/FLEET_RESULTS.md has the largest difference measured on 256 samples).
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ptq.calibrate.observers import HistogramObserver, MinMaxObserver
from ptq.config import ImageFormat
from ptq.errors import CalibrationDataError, PtqError, UsageError

Progress = Callable[[int, int], None]
# The documented tolerance: percentile and MSE ranges of a sharded run lie within this fraction of
# the tensor's min/max width of a one-process run's (min/max ranges are equal). Re-binning spreads
# a later shard's bin counts over the merged grid's bins, and large updates count their bulk from
# a sample chosen by the counts seen so far in the shard. PP-OCR det, 10 samples, 2 shards, 166
# tensors: percentile at most 0.10 % (2 bins of 2048), MSE 0.55 %. Entropy is not bounded: its KL
# threshold search can switch between two near-equal minima on such small count changes.
REBIN_TOLERANCE = 0.01
Observer = MinMaxObserver | HistogramObserver


@dataclass(frozen=True)
class ShardTask:
    """What one worker needs to observe one shard: paths and numbers only."""

    model_path: str  # the model with the observed tensors as outputs (written by the driver)
    data_dir: str
    start: int  # first sample of the shard
    stop: int  # one past its last sample
    tensors: tuple[str, ...]  # the graph outputs (and inputs) to observe
    histogram: bool
    exact: bool
    image_format: dict | None  # ImageFormat fields
    threads: int  # onnxruntime intra-op threads of the worker's session
    batch_budget: int
    index: int = 0  # the shard's number, for progress and errors
    whole: int = 0  # samples in all shards, for errors
    limit: int | None = None  # the calibration set: the first ``limit`` samples of the folder,
    indices: tuple[int, ...] | None = None  # of which these (a fitting split); shards count the selected

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ShardResult:
    """A worker's answer: its observer states (``.npz`` bytes) and what it measured."""

    index: int
    states: bytes
    used: int
    seconds: float
    peak_rss_bytes: int


def shard_bounds(total: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``(start, stop)`` ranges covering ``0..total``, sizes differing by at
    most one (earlier shards take the remainder); empty shards are dropped."""
    shards = max(1, min(shards, total)) if total else 1
    base, extra = divmod(total, shards)
    bounds, start = [], 0
    for i in range(shards):
        stop = start + base + (1 if i < extra else 0)
        if stop > start:
            bounds.append((start, stop))
        start = stop
    return bounds


# ---------------------------------------------------------------------- observer states as arrays


def states_to_npz(observers: dict[str, Observer]) -> bytes:
    """Observer states as the bytes of an uncompressed ``.npz``: per tensor ``i``, ``i.kind``
    (0 min/max, 1 histogram), ``i.minmax`` = [lo, hi, count] and for histograms ``i.hist`` =
    [lo, hi] and ``i.counts``; ``names`` lists the tensors (as a unicode array, not objects)."""
    arrays: dict[str, np.ndarray] = {"names": np.array(list(observers), dtype=np.str_)}
    for i, observer in enumerate(observers.values()):
        minmax = observer.minmax if isinstance(observer, HistogramObserver) else observer
        arrays[f"{i}.minmax"] = np.array([minmax.lo, minmax.hi, float(minmax.count)], dtype=np.float64)
        if isinstance(observer, HistogramObserver):
            arrays[f"{i}.kind"] = np.array(1)
            arrays[f"{i}.hist"] = np.array([observer.lo, observer.hi], dtype=np.float64)
            arrays[f"{i}.counts"] = np.asarray(observer.counts, dtype=np.float64)
            arrays[f"{i}.exact"] = np.array(bool(observer.exact))
        else:
            arrays[f"{i}.kind"] = np.array(0)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def observers_from_npz(data: bytes) -> dict[str, Observer]:
    """The observers ``states_to_npz`` wrote (arrays read with ``allow_pickle=False``)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        names = [str(n) for n in arrays["names"]]
        observers: dict[str, Observer] = {}
        for i, name in enumerate(names):
            lo, hi, count = (float(v) for v in arrays[f"{i}.minmax"])
            minmax = MinMaxObserver()
            minmax.lo, minmax.hi, minmax.count = lo, hi, int(count)
            if int(arrays[f"{i}.kind"]) == 1:
                counts = arrays[f"{i}.counts"]
                observer = HistogramObserver(bins=counts.size, exact=bool(arrays[f"{i}.exact"]))
                observer.lo, observer.hi = (float(v) for v in arrays[f"{i}.hist"])
                observer.counts = counts.copy()
                observer.minmax = minmax
                observers[name] = observer
            else:
                observers[name] = minmax
    return observers


def merge_states(parts: list[dict[str, Observer]]) -> dict[str, Observer]:
    """One observer per tensor: the shards' merged in the given (shard) order.

    Histograms keep the first shard's bin grid, widened as a one-process run widens it (by
    doubling, ``HistogramObserver._widen``) to cover each later shard's values, whose counts are
    re-binned onto it: the merged histogram has the bins the one-process run would have had,
    where ``HistogramObserver.merge`` (onto the union of both grids) would make coarser ones.
    MSE and entropy ranges read the fine shape of the histogram and moved by up to a fifth of a
    tensor's width on PP-OCR det with the union grid (bench/FLEET_RESULTS.md)."""
    merged: dict[str, Observer] = {}
    for part in parts:
        for name, observer in part.items():
            if name not in merged:
                merged[name] = (
                    HistogramObserver(observer.bins, observer.exact) if isinstance(observer, HistogramObserver) else MinMaxObserver()
                )
            if isinstance(observer, HistogramObserver):
                _merge_on_grid(merged[name], observer)
            else:
                merged[name].merge(observer)
    return merged


def _merge_on_grid(into: HistogramObserver, other: HistogramObserver) -> None:
    """Add ``other`` to ``into`` on ``into``'s grid, widened to ``other``'s values."""
    if other.minmax.count == 0:
        return
    if into.minmax.count == 0:
        into.lo, into.hi, into.counts = other.lo, other.hi, other.counts.copy()
        into.minmax.merge(other.minmax)
        return
    lo, hi = other.minmax.lo, other.minmax.hi
    if lo < into.lo or hi > into.hi:
        into._widen(min(lo, into.lo), max(hi, into.hi))
    into.counts = into.counts + _rebin_kept(other.counts, other.lo, other.hi, into.lo, into.hi)
    into.minmax.merge(other.minmax)


def _rebin_kept(counts: np.ndarray, lo: float, hi: float, new_lo: float, new_hi: float) -> np.ndarray:
    """``counts`` (equal bins over [lo, hi]) spread onto equal bins over [new_lo, new_hi], the
    mass of old bins reaching past the new grid's ends (beyond the values, which the new grid
    covers) kept in its end bins instead of dropped."""
    from ptq.calibrate.observers import _rebin

    out = _rebin(counts, lo, hi, new_lo, new_hi)
    lost = float(counts.sum()) - float(out.sum())
    if lost > 0:
        cumulative = np.concatenate([[0.0], np.cumsum(counts)])
        below = float(np.interp(new_lo, np.linspace(lo, hi, counts.size + 1), cumulative, left=0.0, right=cumulative[-1]))
        out[0] += min(below, lost)
        out[-1] += max(lost - below, 0.0)
    return out


# ---------------------------------------------------------------------- the driver side


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def write_observed_model(model: onnx.ModelProto, folder: Path) -> Path:
    """Write ``model`` (already holding the observed tensors as outputs) to ``folder`` for the
    workers to read; a model over the protobuf limit gets its weights in a data file beside it."""
    from ptq.graph import serialized_within
    from ptq.write import onnx_file

    path = folder / "observed.onnx"
    data = serialized_within(model, onnx_file.EXTERNAL_DATA_THRESHOLD) or onnx_file.split_external(
        model, onnx_file.data_path(path).name
    )
    onnx_file.write_onnx(data, path)
    return path


@dataclass(frozen=True)
class ShardRun:
    """What a sharded calibration did, for the bench and the summary."""

    workers: int
    used: int
    seconds: list[float]  # per shard, inside the worker
    peak_rss_bytes: list[int]  # per shard's worker process
    backend: str  # "processes" | "ray"


def observe_sharded(
    model: onnx.ModelProto,
    tensors: list[str],
    data_dir: Path,
    total: int,
    workers: int,
    histogram: bool,
    exact: bool,
    image_format: ImageFormat | None,
    batch_budget: int,
    progress: Progress | None = None,
    ray_address: str | None = None,
    shared_dir: Path | None = None,
    limit: int | None = None,
    indices=None,
) -> tuple[dict[str, Observer], int, ShardRun]:
    """Observe ``tensors`` (outputs or inputs of ``model``, which already returns them) over the
    first ``total`` samples of ``data_dir`` in ``workers`` shards, each in its own process (or,
    with ``ray_address``, Ray task), and merge the states in shard order.

    ``shared_dir``: where the driver writes the model for the workers (a temporary folder inside
    it, removed afterwards); default the system temp folder, which on a multi-node Ray cluster
    must be replaced by a folder every node sees at the same path."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    bounds = shard_bounds(total, workers)
    # Cores shared out between the workers: each onnxruntime session gets its part, and a
    # worker with two or more pipelines its observer updates as the one-process run does.
    threads = max(1, _cores() // len(bounds)) if ray_address is None else 1
    fmt = dataclasses.asdict(image_format) if image_format is not None else None
    if shared_dir is not None and not Path(shared_dir).is_dir():
        raise UsageError(f"--shared-dir {shared_dir}: not an existing folder")
    with tempfile.TemporaryDirectory(prefix="ptq-shards-", dir=shared_dir) as folder:
        model_path = write_observed_model(model, Path(folder))
        tasks = [
            ShardTask(str(model_path.resolve()), str(Path(data_dir).resolve()), start, stop, tuple(tensors), histogram,
                      exact, fmt, threads, batch_budget, index, total, limit,
                      None if indices is None else tuple(sorted(indices))).to_dict()
            for index, (start, stop) in enumerate(bounds)
        ]  # fmt: skip
        if ray_address is not None:
            from ptq import cluster

            results = cluster.run_tasks(
                "ptq.calibrate.shard_worker", "observe_shard", tasks, ray_address,
                progress=None if progress is None else lambda done, n: progress(min(done * total // n, total - 1), total),
            )  # fmt: skip
            backend = "ray"
        else:
            results = _run_local(tasks, progress, total)
            backend = "processes"
    for result in results:
        if "error" in result:
            raise _error_of(result)
    results.sort(key=lambda r: r["index"])
    merged = merge_states([observers_from_npz(r["states"]) for r in results])
    used = sum(r["used"] for r in results)
    run = ShardRun(len(results), used, [r["seconds"] for r in results], [r["peak_rss_bytes"] for r in results], backend)
    return merged, used, run


def _error_of(result: dict) -> PtqError:
    """The worker's error as a ``PtqError`` with its exit code (the message names the sample)."""
    from ptq import errors

    kinds = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, PtqError)]
    kind = next((k for k in kinds if k.exit_code == result["exit_code"] and k is not PtqError), CalibrationDataError)
    return kind(result["error"])


def _run_local(tasks: list[dict], progress: Progress | None, total: int) -> list[dict]:
    """Each task in its own fresh Python process (``python -m ptq.calibrate.shard_worker``): the task
    goes in as JSON on stdin, progress comes back as lines on stdout and the states as a
    ``.npz`` file beside the model. A fresh interpreter, not a fork: no copy of the driver's
    model or onnxruntime threads, and no re-import of the caller's main script (which
    multiprocessing's spawn would need guarded)."""
    import json
    import subprocess
    import sys
    import threading

    done_by_shard: dict[int, int] = {}
    lock = threading.Lock()
    processes = []
    for task in tasks:
        process = subprocess.Popen(
            [sys.executable, "-m", "ptq.calibrate.shard_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        process.stdin.write(json.dumps(task))
        process.stdin.close()
        processes.append(process)
    answers: list[str | None] = [None] * len(tasks)

    def follow(i: int, process) -> None:
        for line in process.stdout:
            if line.startswith("progress "):
                with lock:
                    done_by_shard[i] = int(line.split()[1])
                    if progress is not None:
                        progress(min(sum(done_by_shard.values()), total - 1), total)
            elif line.startswith("result "):
                answers[i] = line[len("result ") :]

    readers = [threading.Thread(target=follow, args=(i, p), daemon=True) for i, p in enumerate(processes)]
    try:
        for reader in readers:
            reader.start()
        errors = [p.stderr.read() for p in processes]
        for reader, process in zip(readers, processes):
            reader.join()
            process.wait()
    except BaseException:  # Ctrl-C: leave no worker behind
        for process in processes:
            process.kill()
        raise
    results = []
    for task, answer, process, error in zip(tasks, answers, processes, errors):
        if answer is None:
            last = (error.strip().splitlines() or [f"exit code {process.returncode}"])[-1]
            raise RuntimeError(f"calibration shard {task['index'] + 1} worker failed: {last}")
        result = json.loads(answer)
        if "states_file" in result:
            result["states"] = Path(result.pop("states_file")).read_bytes()
        results.append(result)
    return results
