"""The sample reader: calibration, scoring and measurement read their inputs here, one sample at
a time, each checked against the model's inputs.

Samples come from a folder (or one file) of ``.npz``/``.npy`` arrays or images (the file formats
are ``ptq.calibrate.data``'s and ``ptq.calibrate.images``'s job), or from Python, the way other
quantizers take them:

- any re-iterable of ``{input name: array}`` dicts (a list, a tuple, a ``torch`` DataLoader-like
  object whose ``__iter__`` starts over each time), as NNCF's ``Dataset`` wraps one;
- a callable returning a fresh iterable each call, as TFLite's ``representative_dataset``;
- an onnxruntime ``CalibrationDataReader`` (``get_next()`` until None) that has ``rewind()``.

ptq reads its samples more than once (calibration, then the measured choices that score
candidates on them), so a one-shot iterator (a generator object, a reader without ``rewind``) is
refused with the fix, never silently consumed once. Python samples go through the same checks as
files (``check_feed``: names, dtypes, fixed dimensions) and are never held together: memory is one
sample at a time whatever the source.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from ptq.calibrate.data import (
    IMAGE_SUFFIXES,
    InputSpec,
    MultiSampleReader,
    SampleFile,
    check_feed,
    error_reason,
    read_npy,
    read_npz,
    sample_files,
    scan_file,
)
from ptq.calibrate.images import image_input
from ptq.config import ImageFormat
from ptq.errors import CalibrationDataError

log = logging.getLogger("ptq")

# What ``Samples`` reads: a folder or file, or samples from Python (see the module docstring).
DataSource = str | os.PathLike | Iterable[Mapping[str, object]] | Callable[[], Iterable[Mapping[str, object]]]


def is_path(data: object) -> bool:
    return isinstance(data, (str, os.PathLike))


def describe_source(data: DataSource) -> str:
    """How error messages and reports name a source: the path, or what Python object it is."""
    if is_path(data):
        return str(data)
    if callable(data) and not hasattr(data, "get_next"):
        return f"{getattr(data, '__name__', type(data).__name__)}() (a Python callable)"
    kind = type(data).__name__
    size = _length(data)
    return f"a Python {kind}" + (f" of {size} samples" if size is not None else "")


def _length(data: object) -> int | None:
    try:
        return len(data)  # type: ignore[arg-type]
    except Exception:  # no __len__, or one that raises (onnxruntime's reader base class)
        return None


def read_sample(path: Path, specs: list[InputSpec], image_format: ImageFormat | None = None) -> dict[str, np.ndarray]:
    """One sample file as a feed dict, checked against ``specs``. Images are decoded per
    ``image_format`` (default: the model's size, pixels scaled to [0, 1], RGB)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise CalibrationDataError(
                f"{path.name}: an image can only feed a single-input model; this model has inputs {names}"
            )
        feed = {specs[0].name: image_input(path, specs[0], image_format or ImageFormat())}
        return check_feed(path.name, feed, specs)
    if path.suffix == ".npy" and len(specs) != 1:
        names = ", ".join(s.name for s in specs)
        raise CalibrationDataError(
            f"{path.name}: a .npy file can only feed a single-input model; this model has inputs {names}:"
            " use .npz files keyed by input name"
        )
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as f:
                feed = {specs[0].name: read_npy(f, os.fstat(f.fileno()).st_size, path.name)}
        else:
            feed = read_npz(path)
    except CalibrationDataError:
        raise
    except Exception as exc:  # hostile bytes raise anything from zipfile, zlib, numpy's header parser, tokenize...
        raise CalibrationDataError(f"{path.name}: not a readable numpy file ({error_reason(exc)})") from None
    return check_feed(path.name, feed, specs)


# Files already named in a whole-batch note (one note per file and process, not one per pass).
_NOTED_BATCHES: set[tuple[str, int]] = set()


def _note_whole_batch(sample_file: SampleFile) -> None:
    key = (str(sample_file.path.resolve()), sample_file.batch)
    if key in _NOTED_BATCHES:
        return
    _NOTED_BATCHES.add(key)
    n = sample_file.batch
    log.warning(
        "%s holds %d rows on the model's symbolic batch axis: read as ONE sample (a batch of %d, fed whole,"
        " %d times the memory of one). For %d samples save one per file, or stack them on a new axis 0"
        " (numpy.expand_dims(array, 1))",
        sample_file.path.name, n, n, n, n,
    )  # fmt: skip


class Samples:
    """The samples of ``data`` (a folder, a file, or Python samples), up to ``limit``.

    ``count`` is the number of samples, from file headers or the Python object's ``len()``, and
    None when a Python source has no length; iterating yields checked feed dicts one at a time,
    anew on every iteration. ``indices`` keeps only the samples at those positions (0-based,
    among the first ``limit``): the fitting or the validation part of a split
    (``ptq.tuning.validation``)."""

    def __init__(self, data: DataSource, specs: list[InputSpec], limit: int | None = None,
                 image_format: ImageFormat | None = None, indices: Collection[int] | None = None):  # fmt: skip
        self.indices = None if indices is None else frozenset(indices)
        self._select(data, specs, limit, image_format)
        if self.indices is not None and self.count is not None:
            self.count = sum(1 for i in self.indices if 0 <= i < self.count)

    def _select(self, data, specs, limit, image_format) -> None:
        self.specs = specs
        self.image_format = image_format
        self.limit = limit
        self.data = data
        self.files: list[SampleFile] = []
        if is_path(data):
            total = 0
            for path in sample_files(Path(data)):
                if limit is not None and total >= limit:
                    break
                scanned = scan_file(path, specs)
                if scanned.batch > 1:
                    _note_whole_batch(scanned)
                self.files.append(scanned)
                total += scanned.count
            self.count: int | None = total if limit is None else min(total, limit)
            self.available = self.count
            return
        _check_repeatable(data)
        size = None if callable(data) and not hasattr(data, "get_next") else _length(data)
        self.count = size if size is None or limit is None else min(size, limit)

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("the number of samples is unknown until they are read (a Python source without len())")
        return self.count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        source = self._from_files() if is_path(self.data) else self._from_python()
        if self.indices is None:
            yield from source
            return
        for position, feed in enumerate(source):  # the others are read (and checked) but not kept
            if position in self.indices:
                yield feed

    def between(self, start: int, stop: int) -> Iterator[dict[str, np.ndarray]]:
        """Samples ``start`` to ``stop - 1`` of the selected ones of a folder or file (a shard,
        ``ptq.calibrate.shards``); without ``indices`` the samples before ``start`` are skipped by
        count, not read."""
        if not is_path(self.data):
            raise CalibrationDataError("calibration shards read their samples from files: give a folder or a file")
        if self.indices is not None:
            yield from itertools.islice(iter(self), start, stop)
            return
        yield from self._from_files(start, stop)

    def _from_files(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        skip, left = start, min(self.available if stop is None else stop, self.available) - start
        for sample_file in self.files:
            if left <= 0:
                return
            if skip >= sample_file.count:
                skip -= sample_file.count
                continue
            if sample_file.splits is None:
                yield read_sample(sample_file.path, self.specs, self.image_format)
                left -= 1
                continue
            with contextlib.ExitStack() as stack:
                try:
                    reader = MultiSampleReader(sample_file, stack)
                except CalibrationDataError:
                    raise
                except Exception as exc:
                    raise CalibrationDataError(
                        f"{sample_file.path.name}: not a readable numpy file ({error_reason(exc)})"
                    ) from None
                first, skip = skip, 0
                n = min(sample_file.count - first, left)
                for index in range(first, first + n):
                    label = f"{sample_file.path.name} (sample {index + 1} of {sample_file.count})"
                    try:
                        feed = reader.read(index)
                    except CalibrationDataError:
                        raise
                    except Exception as exc:
                        raise CalibrationDataError(f"{label}: not readable ({error_reason(exc)})") from None
                    yield check_feed(label, feed, self.specs)
                left -= n

    def _from_python(self) -> Iterator[dict[str, np.ndarray]]:
        n = 0
        for item in _fresh_iterator(self.data):
            if self.limit is not None and n >= self.limit:
                return
            n += 1
            label = f"sample {n}"
            yield check_feed(label, _as_feed(label, item), self.specs)
        if n == 0:
            raise CalibrationDataError(f"{describe_source(self.data)} yielded no samples")


def _check_repeatable(data: object) -> None:
    """Refuse a source that can be read only once (see the module docstring)."""
    if callable(data) and not hasattr(data, "get_next"):
        return
    if hasattr(data, "get_next"):
        if callable(getattr(data, "rewind", None)):
            return
        raise CalibrationDataError(
            f"{type(data).__name__} is a CalibrationDataReader without rewind(): ptq reads the samples more than once"
            " (calibration, then scoring its choices); give it a rewind() method, or pass a list of the dicts it yields"
        )
    try:
        iterator = iter(data)  # type: ignore[call-overload]
    except TypeError:
        raise CalibrationDataError(
            f"calibration/eval data must be a folder, a file, an iterable of {{input name: array}} dicts or a function"
            f" returning one; got a {type(data).__name__}"
        ) from None
    if iterator is data:
        raise CalibrationDataError(
            f"the samples are a one-shot {type(data).__name__} (e.g. a generator object): ptq reads them more than"
            " once (calibration, then scoring its choices); pass a list, or the function that makes the generator"
            " (as TFLite's representative_dataset)"
        )


def _fresh_iterator(data: object) -> Iterator[object]:
    if hasattr(data, "get_next"):
        data.rewind()  # type: ignore[attr-defined]
        return iter(data.get_next, None)  # type: ignore[attr-defined]
    source = data() if callable(data) else data
    try:
        return iter(source)  # type: ignore[call-overload]
    except TypeError:
        raise CalibrationDataError(
            f"{describe_source(data)} returned a {type(source).__name__}, not an iterable of {{input name: array}} dicts"
        ) from None


def _as_feed(label: str, item: object) -> dict[str, np.ndarray]:
    if not isinstance(item, Mapping):
        raise CalibrationDataError(
            f"{label}: is a {type(item).__name__}, not a dict of {{input name: array}}"
        )
    feed = {}
    for name, value in item.items():
        array = value if isinstance(value, np.ndarray) else _to_array(label, name, value)
        if array.dtype.hasobject:
            raise CalibrationDataError(f"{label}: input {name!r} holds Python objects; give numeric arrays")
        feed[str(name)] = array
    return feed


def _to_array(label: str, name: object, value: object) -> np.ndarray:
    try:
        return np.asarray(value)  # a torch tensor on the CPU, a list of numbers
    except Exception as exc:
        raise CalibrationDataError(f"{label}: input {name!r} is not an array ({error_reason(exc)})") from None


def iter_samples(data: DataSource, specs: list[InputSpec], limit: int | None = None,
                 image_format: ImageFormat | None = None, indices: Collection[int] | None = None,
                 ) -> Iterator[dict[str, np.ndarray]]:  # fmt: skip
    """Feed dicts from ``data``, one sample at a time (nothing is kept between samples)."""
    yield from Samples(data, specs, limit, image_format, indices)
