"""Read calibration samples from a folder, one at a time, checked against the model's inputs.

A sample is a ``.npz`` whose keys are the model's input names, or a ``.npy`` for a model with a
single input. Files are read with ``allow_pickle=False``: a pickled array is refused, never
executed. Symbolic dimensions (batch, sequence length, image size) may differ between samples;
fixed dimensions and element types must match.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat
import onnx
from onnx import helper

from ptq.config import ImageFormat
from ptq.errors import CalibrationDataError

ARRAY_SUFFIXES = (".npz", ".npy")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # read by ptq.calibrate.images
SUFFIXES = ARRAY_SUFFIXES + IMAGE_SUFFIXES


@dataclass(frozen=True)
class InputSpec:
    """What the model expects on one graph input."""

    name: str
    dtype: np.dtype
    dims: tuple[int | str | None, ...] | None  # None: rank unknown; str/None entries are free

    def describe(self) -> str:
        if self.dims is None:
            return f"{self.dtype} of any shape"
        shape = ", ".join("?" if not isinstance(d, int) else str(d) for d in self.dims)
        return f"{self.dtype}[{shape}]"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    init_names = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in init_names or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        dims = None
        if tt.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, dtype, dims))
    return specs


def sample_files(folder: Path) -> list[Path]:
    """The sample files of ``folder`` in name order (deterministic across file systems)."""
    folder = Path(folder)
    if not folder.exists():
        raise CalibrationDataError(f"calibration data folder {folder} does not exist")
    if folder.is_file():
        if folder.suffix in SUFFIXES:
            return [folder]
        raise CalibrationDataError(f"{folder}: calibration data must be a folder of .npz/.npy files or images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files:
        raise CalibrationDataError(f"{folder}: no .npz or .npy files (or .png/.jpg images)")
    return files


def read_sample(path: Path, specs: list[InputSpec], image_format: ImageFormat | None = None) -> dict[str, np.ndarray]:
    """One sample as a feed dict, checked against ``specs``. Images are decoded per
    ``image_format`` (default: the model's size, pixels scaled to [0, 1], RGB)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from ptq.calibrate.images import image_input

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
        raise CalibrationDataError(f"{path.name}: not a readable numpy file ({_reason(exc)})") from None
    return check_feed(path.name, feed, specs)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


# Deflate cannot expand data more than ~1032-fold: a member that claims more is a zip bomb or a lie.
_MAX_DEFLATE_RATIO = 1100


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` (keys without ``.npy``), each checked as ``read_npy`` does."""
    feed: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                raise CalibrationDataError(f"{path.name}: member {info.filename!r} is not a .npy array")
            key = info.filename[: -len(".npy")]
            if key in feed:
                raise CalibrationDataError(f"{path.name}: key {key!r} appears twice")
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + (1 << 20):
                raise CalibrationDataError(
                    f"{path.name}: member {info.filename!r} claims {info.file_size} bytes from {info.compress_size} compressed; refused"
                )
            with archive.open(info) as member:
                feed[key] = read_npy(member, info.file_size, f"{path.name}[{key}]")
    return feed


def read_npy(f, available: int, label: str) -> np.ndarray:
    """One array in .npy format from the open file ``f`` holding ``available`` bytes.

    The header is read and checked first: object (pickled) arrays are refused, and the data the
    header declares must be present, so a tiny file cannot make us allocate a huge array.
    """
    version = npformat.read_magic(f)
    if version == (1, 0):
        shape, fortran_order, dtype = npformat.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran_order, dtype = npformat.read_array_header_2_0(f)
    else:
        raise CalibrationDataError(f"{label}: .npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    if dtype.hasobject:
        raise CalibrationDataError(f"{label}: holds pickled objects; refused (only plain arrays are read)")
    if any(int(d) < 0 for d in shape):
        raise CalibrationDataError(f"{label}: negative dimension in shape {list(shape)}")
    header = f.tell()
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    if nbytes > available - header:
        raise CalibrationDataError(
            f"{label}: declares a {dtype} array of shape {list(shape)} ({nbytes} bytes) but holds"
            f" {max(available - header, 0)}; truncated or corrupt"
        )
    buffer = bytearray(nbytes)
    view = memoryview(buffer)
    done = 0
    while done < nbytes:
        n = f.readinto(view[done:])
        if not n:
            raise CalibrationDataError(f"{label}: file ended after {done} of {nbytes} data bytes; truncated")
        done += n
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape[::-1]).transpose() if fortran_order else array.reshape(shape)


def check_feed(label: str, feed: dict[str, np.ndarray], specs: list[InputSpec]) -> dict[str, np.ndarray]:
    expected = {s.name for s in specs}
    missing = sorted(expected - set(feed))
    extra = sorted(set(feed) - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unknown key(s) {', '.join(extra)}")
        raise CalibrationDataError(
            f"{label}: {'; '.join(parts)} (the model's inputs are {', '.join(sorted(expected))})"
        )
    checked = {}
    for spec in specs:
        array = feed[spec.name]
        if array.dtype != spec.dtype:
            if array.dtype.kind == spec.dtype.kind == "f" or (array.dtype.kind in "iu" and spec.dtype.kind in "iu"):
                # float64 -> float32, int32 -> int64: what numpy users save by default.
                if array.dtype.kind in "iu" and array.size and not _fits(array, spec.dtype):
                    raise CalibrationDataError(
                        f"{label}: input {spec.name!r} is {array.dtype} with values outside {spec.dtype}"
                    )
                array = array.astype(spec.dtype)
            else:
                raise CalibrationDataError(
                    f"{label}: input {spec.name!r} is {array.dtype}, the model expects {spec.describe()}"
                )
        if spec.dims is not None:
            ok = array.ndim == len(spec.dims) and all(
                not isinstance(d, int) or d <= 0 or d == s for d, s in zip(spec.dims, array.shape)
            )
            if not ok:
                raise CalibrationDataError(
                    f"{label}: input {spec.name!r} has shape {list(array.shape)}, the model expects {spec.describe()}"
                )
        checked[spec.name] = np.ascontiguousarray(array)
    return checked


def _fits(array: np.ndarray, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return int(array.min()) >= info.min and int(array.max()) <= info.max


def iter_samples(
    folder: Path, specs: list[InputSpec], limit: int | None = None, image_format: ImageFormat | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Feed dicts from ``folder``, one file at a time (nothing is kept between samples)."""
    files = sample_files(folder)
    for path in files[:limit]:
        yield read_sample(path, specs, image_format)
