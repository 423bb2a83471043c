"""Sample files: the ``.npz``/``.npy`` formats, read without pickles and checked against the model's
inputs (``ptq.calibrate.samples`` reads folders and Python sources through this module).

A file is a ``.npz`` whose keys are the model's input names, or a ``.npy`` for a model with a
single input (or an image, see ``ptq.calibrate.images``). Files are read in name order with
``allow_pickle=False``: a pickled array is refused, never executed. Symbolic dimensions (batch,
sequence length, image size) may differ between samples; fixed dimensions and element types must
match.

One file may hold many samples. For each array, with R the rank the model declares for its input:

- rank R + 1: axis 0 indexes samples; sample ``i`` is ``array[i]``;
- rank R, the model's first dimension fixed at k and the array's first dimension N a multiple
  m > 1 of k: m samples of k rows each (for a batch-1 model, N samples);
- otherwise the array is one sample (a symbolic batch axis of N is one batch of N, fed whole).

Every array of a file must give the same number of samples. A multi-sample file is read one sample
at a time: headers are checked first (``numpy.lib.format``'s parser, object dtypes refused, the
declared bytes must be present), then each sample's bytes are read from their offset in the
``.npy`` or in the ``.npz``'s stored (uncompressed, ``np.savez``) member, or streamed in order out
of a compressed (``np.savez_compressed``) member. Memory is one sample whatever the file's size;
only a Fortran-ordered array (whose samples are not contiguous bytes) is read whole, one array at a
time. ``--calibration-samples`` counts samples, not files.
"""

from __future__ import annotations

import contextlib
import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat
import onnx
from onnx import helper

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


def error_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


# Deflate cannot expand data more than ~1032-fold: a member that claims more is a zip bomb or a lie.
_MAX_DEFLATE_RATIO = 1100


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` (keys without ``.npy``), each checked as ``read_npy`` does."""
    feed: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:
        for info in _members(archive, path):
            key = info.filename[: -len(".npy")]
            with archive.open(info) as member:
                feed[key] = read_npy(member, info.file_size, f"{path.name}[{key}]")
    return feed


def read_npy(f, available: int, label: str) -> np.ndarray:
    """One array in .npy format from the open file ``f`` holding ``available`` bytes.

    The header is read and checked first: object (pickled) arrays are refused, and the data the
    header declares must be present, so a tiny file cannot make us allocate a huge array.
    """
    header = read_npy_header(f, available, label)
    array = np.frombuffer(_read_exactly(f, header.nbytes, label), dtype=header.dtype)
    return array.reshape(header.shape[::-1]).transpose() if header.fortran else array.reshape(header.shape)


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    size: int  # bytes of the header (magic included): the data starts there

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(f, available: int, label: str) -> NpyHeader:
    """The checked header of the .npy at the current position of ``f`` (``available`` bytes from
    there on); ``f`` is left at the start of the data."""
    start = f.tell()
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
    header = NpyHeader(tuple(int(d) for d in shape), bool(fortran_order), dtype, f.tell() - start)
    if header.nbytes > available - header.size:
        raise CalibrationDataError(
            f"{label}: declares a {dtype} array of shape {list(shape)} ({header.nbytes} bytes) but holds"
            f" {max(available - header.size, 0)}; truncated or corrupt"
        )
    return header


def _read_exactly(f, nbytes: int, label: str) -> bytearray:
    buffer = bytearray(nbytes)
    view = memoryview(buffer)
    done = 0
    while done < nbytes:
        n = f.readinto(view[done:])
        if not n:
            raise CalibrationDataError(f"{label}: file ended after {done} of {nbytes} data bytes; truncated")
        done += n
    return buffer


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


# ------------------------------------------------------------------------------- many samples per file


@dataclass(frozen=True)
class _Split:
    """How one array of a multi-sample file is cut into samples."""

    input: str
    key: str  # the .npz member (without .npy); "" for a .npy file
    header: NpyHeader
    offset: int | None  # absolute file offset of the data when it can be read in place, else None
    stacked: bool  # sample i is array[i]
    rows: int  # when not stacked: sample i is array[i * rows:(i + 1) * rows]; 0: the whole array

    @property
    def sample_shape(self) -> tuple[int, ...]:
        shape = self.header.shape
        if self.stacked:
            return shape[1:]
        return (self.rows, *shape[1:]) if self.rows else shape

    def take(self, array: np.ndarray, index: int) -> np.ndarray:
        if self.stacked:
            return array[index]
        return array[index * self.rows : (index + 1) * self.rows] if self.rows else array

    @property
    def sample_bytes(self) -> int:
        return math.prod(self.sample_shape) * self.header.dtype.itemsize


@dataclass(frozen=True)
class SampleFile:
    """One file of a calibration folder and the number of samples it holds.

    ``splits`` is None for a file that is one sample (read whole by ``read_sample``); ``batch`` is
    the length of its arrays' axis 0 when that axis is the model's symbolic batch axis, fed whole
    as one sample (a stacked file of N images for a batch-free model: one sample of N)."""

    path: Path
    count: int
    splits: tuple[_Split, ...] | None = None
    batch: int = 1


def _samples_in(spec: InputSpec, shape: tuple[int, ...]) -> tuple[int, bool, int]:
    """``(count, stacked, rows)``: how many samples an array of ``shape`` holds for ``spec``."""
    if spec.dims is None:
        return 1, False, 0
    rank = len(spec.dims)
    if len(shape) == rank + 1:
        return shape[0], True, 1
    if len(shape) == rank and rank:
        first = spec.dims[0]
        if isinstance(first, int) and first > 0 and shape[0] > first and shape[0] % first == 0:
            return shape[0] // first, False, first
    return 1, False, 0


# Words in a symbolic axis name that say it is a sequence, not a batch: Silero VAD's input is
# [sequence_length, 576], fed whole as one clip on purpose.
_SEQUENCE_AXIS_WORDS = ("seq", "len", "time", "frame", "step", "token")


def _free_batch(spec: InputSpec, shape: tuple[int, ...]) -> int:
    """Axis 0 of an array fed whole to an input whose axis 0 is a symbolic batch axis (1 otherwise:
    a fixed axis 0, or a symbolic one whose name says it is a sequence)."""
    if spec.dims is None or not spec.dims or len(shape) != len(spec.dims):
        return 1
    first = spec.dims[0]
    if isinstance(first, int) and first > 0:
        return 1
    if isinstance(first, str) and any(word in first.lower() for word in _SEQUENCE_AXIS_WORDS):
        return 1
    return shape[0] if shape[0] > 1 else 1


def scan_file(path: Path, specs: list[InputSpec]) -> SampleFile:
    """How many samples ``path`` holds, from its headers alone (no array data is read)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES or (suffix == ".npy" and len(specs) != 1) or suffix not in ARRAY_SUFFIXES:
        return SampleFile(path, 1)  # read_sample says what is wrong, if anything
    try:
        headers = _headers(path)
    except CalibrationDataError:
        raise
    except Exception as exc:  # hostile bytes: as read_sample reports them
        raise CalibrationDataError(f"{path.name}: not a readable numpy file ({error_reason(exc)})") from None
    if suffix == ".npy":
        headers = {specs[0].name: headers[""]}
    by_name = {s.name: s for s in specs}
    if set(headers) != set(by_name):
        return SampleFile(path, 1)  # read_sample names the missing and unknown keys
    counts = {}
    splits = []
    for name, (key, header, offset) in headers.items():
        count, stacked, rows = _samples_in(by_name[name], header.shape)
        counts[name] = count
        if header.fortran:
            offset = None  # its samples are not contiguous bytes: read whole
        splits.append(_Split(name, key, header, offset, stacked, rows))
    if len(set(counts.values())) > 1:
        detail = ", ".join(
            f"{name!r} {list(headers[name][1].shape)} holds {counts[name]}" for name in sorted(counts)
        )
        raise CalibrationDataError(
            f"{path.name}: its arrays disagree on the number of samples: {detail}"
            " (an array one rank above the model's input, or whose first axis is a multiple of the"
            " model's fixed batch, holds one sample per step along axis 0)"
        )
    count = next(iter(counts.values()))
    if count == 1 and not any(s.stacked for s in splits):
        return SampleFile(path, 1, batch=max((_free_batch(by_name[s.input], s.header.shape) for s in splits), default=1))
    if count == 0:
        raise CalibrationDataError(f"{path.name}: holds no samples (axis 0 of its arrays has length 0)")
    for split in splits:
        spec = by_name[split.input]
        shape = split.sample_shape
        if spec.dims is not None and not (
            len(shape) == len(spec.dims)
            and all(not isinstance(d, int) or d <= 0 or d == n for d, n in zip(spec.dims, shape))
        ):
            raise CalibrationDataError(
                f"{path.name}: input {spec.name!r} holds {count} samples of shape {list(shape)}"
                f" (array {list(split.header.shape)}), the model expects {spec.describe()}"
            )
    return SampleFile(path, count, tuple(splits))


def _headers(path: Path) -> dict[str, tuple[str, NpyHeader, int | None]]:
    """Key -> (member key, checked header, absolute data offset or None) of every array in ``path``.

    The offset is set where the data lies uncompressed in the file (a .npy, or a stored .npz
    member) and None for a compressed member."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if path.suffix.lower() == ".npy":
            header = read_npy_header(f, size, path.name)
            return {"": ("", header, header.size)}
        found: dict[str, tuple[str, NpyHeader, int | None]] = {}
        with zipfile.ZipFile(f) as archive:
            for info in _members(archive, path):
                key = info.filename[: -len(".npy")]
                label = f"{path.name}[{key}]"
                start = _stored_data_start(f, info, size) if info.compress_type == zipfile.ZIP_STORED else None
                if start is not None:
                    f.seek(start)
                    header = read_npy_header(f, info.file_size, label)
                    found[key] = (key, header, start + header.size)
                else:
                    with archive.open(info) as member:
                        found[key] = (key, read_npy_header(member, info.file_size, label), None)
        return found


def _members(archive: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    """The array members of a .npz, checked as ``read_npz`` checks them."""
    members, keys = [], set()
    for info in archive.infolist():
        if info.is_dir():
            continue
        if not info.filename.endswith(".npy"):
            raise CalibrationDataError(f"{path.name}: member {info.filename!r} is not a .npy array")
        key = info.filename[: -len(".npy")]
        if key in keys:
            raise CalibrationDataError(f"{path.name}: key {key!r} appears twice")
        keys.add(key)
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + (1 << 20):
            raise CalibrationDataError(
                f"{path.name}: member {info.filename!r} claims {info.file_size} bytes from {info.compress_size} compressed; refused"
            )
        members.append(info)
    return members


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header (30 bytes)


def _stored_data_start(f, info: zipfile.ZipInfo, file_size: int) -> int | None:
    """File offset of a stored (uncompressed, unencrypted) member's bytes, or None to stream it."""
    if info.flag_bits & 0x1 or info.compress_size != info.file_size:
        return None
    f.seek(info.header_offset)
    raw = f.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
        return None
    fields = _LOCAL_HEADER.unpack(raw)
    start = info.header_offset + _LOCAL_HEADER.size + fields[10] + fields[11]
    return start if start + info.file_size <= file_size else None


class MultiSampleReader:
    """Samples of a multi-sample file, in increasing order, one at a time."""

    def __init__(self, sample_file: SampleFile, stack: contextlib.ExitStack):
        self.file = sample_file
        path = sample_file.path
        self.raw = stack.enter_context(open(path, "rb"))
        archive = None
        self.streams: dict[str, object] = {}
        self.streamed: dict[str, int] = {}  # input -> samples read from its stream so far
        self.whole: dict[str, np.ndarray] = {}
        for split in sample_file.splits:
            if split.offset is not None:
                continue
            if archive is None:
                archive = stack.enter_context(zipfile.ZipFile(path)) if path.suffix.lower() == ".npz" else None
            label = f"{path.name}[{split.key}]" if split.key else path.name
            if archive is None:  # a Fortran-ordered .npy
                self.raw.seek(0)
                self.whole[split.input] = read_npy(self.raw, path.stat().st_size, label)
                continue
            info = archive.getinfo(split.key + ".npy")
            member = stack.enter_context(archive.open(info))
            if split.header.fortran or split.sample_bytes == 0:
                self.whole[split.input] = read_npy(member, info.file_size, label)
            else:
                read_npy_header(member, info.file_size, label)  # position at the data
                self.streams[split.input] = member

    def read(self, index: int) -> dict[str, np.ndarray]:
        feed = {}
        for split in self.file.splits:
            label = f"{self.file.path.name}[{split.key}]" if split.key else self.file.path.name
            if split.input in self.whole:
                feed[split.input] = split.take(self.whole[split.input], index)
                continue
            if split.input in self.streams:  # compressed: the next sample's bytes, in order
                stream = self.streams[split.input]
                while self.streamed.get(split.input, 0) < index:  # a shard that starts mid-file
                    _read_exactly(stream, split.sample_bytes, label)
                    self.streamed[split.input] = self.streamed.get(split.input, 0) + 1
                data = _read_exactly(stream, split.sample_bytes, label)
                self.streamed[split.input] = index + 1
            else:
                self.raw.seek(split.offset + index * split.sample_bytes)
                data = _read_exactly(self.raw, split.sample_bytes, label)
            feed[split.input] = np.frombuffer(data, dtype=split.header.dtype).reshape(split.sample_shape)
        return feed
