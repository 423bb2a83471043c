"""Read calibration samples from a folder, one at a time, checked against the model's inputs.

A sample is a ``.npz`` whose keys are the model's input names, or a ``.npy`` for a model with a
single input. Files are read with ``allow_pickle=False``: a pickled array is refused, never
executed. Symbolic dimensions (batch, sequence length, image size) may differ between samples;
fixed dimensions and element types must match.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ptq.errors import CalibrationDataError

SUFFIXES = (".npz", ".npy")


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
        raise CalibrationDataError(f"{folder}: calibration data must be a folder of .npz/.npy files")
    files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise CalibrationDataError(f"{folder}: no .npz or .npy files")
    return files


def read_sample(path: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    """One sample as a feed dict, checked against ``specs``."""
    try:
        if path.suffix == ".npy":
            if len(specs) != 1:
                names = ", ".join(s.name for s in specs)
                raise CalibrationDataError(
                    f"{path.name}: a .npy file can only feed a single-input model; this model has inputs {names}:"
                    " use .npz files keyed by input name"
                )
            feed = {specs[0].name: np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as npz:
                feed = {key: npz[key] for key in npz.files}
    except CalibrationDataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise CalibrationDataError(f"{path.name}: holds pickled objects; refused (only plain arrays are read)") from None
        raise CalibrationDataError(f"{path.name}: not a readable numpy file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CalibrationDataError(f"{path.name}: not a readable numpy file ({exc})") from None
    return check_feed(path.name, feed, specs)


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


def iter_samples(folder: Path, specs: list[InputSpec], limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Feed dicts from ``folder``, one file at a time (nothing is kept between samples)."""
    files = sample_files(folder)
    for path in files[:limit]:
        yield read_sample(path, specs)
