"""Inputs a report measures on: eval samples, the calibration samples, or inputs synthesized from
the model's declared input shapes when there is no data at all.

Samples are a folder in the calibration format (``.npz`` keyed by input name, ``.npy`` for one
input, images) or samples from Python, read one at a time by ``ptq.calibrate.samples`` and checked
against the model's inputs.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ptq.calibrate.data import InputSpec, input_specs
from ptq.calibrate.samples import DataSource, Samples, describe_source, is_path
from ptq.config import ImageFormat
from ptq.errors import CalibrationDataError, UnsupportedModelError

EVAL = "eval"
CALIBRATION = "calibration"
SYNTHESIZED = "synthesized"
SOURCES = (EVAL, CALIBRATION, SYNTHESIZED)

SYNTHESIZED_SAMPLES = 4
IMAGE_SIDE = 224  # free spatial dimensions of a rank-4 float input
SEQUENCE = 32  # any other free dimension
# Free sizes tried in turn when the model cannot run the defaults (a text recognizer needs a
# height of 48, an audio model a window of 512 samples): (image side, other free axes).
FREE_SIZES = ((IMAGE_SIDE, SEQUENCE), (48, 64), (32, 128), (64, 256), (96, 512), (128, 1024), (320, 16), (640, 8))
MAX_TOKEN = 100  # integer inputs that index a table get values below min(table rows, this)


@dataclass(frozen=True)
class EvalData:
    """Where the measured inputs come from, and how to read them one at a time."""

    source: str  # eval | calibration | synthesized
    specs: list[InputSpec]
    path: Path | None = None
    count: int = 0  # samples in the folder (a file may hold many), up to the limit
    synthesized: tuple[dict[str, np.ndarray], ...] = field(default=(), repr=False)
    option: str = "--eval-data"  # named in error messages
    image_format: ImageFormat | None = None  # how image files in the folder become inputs
    python: object = field(default=None, repr=False)  # samples from Python, when not a folder

    @property
    def origin(self) -> str:
        """Where the samples come from, for messages: the folder, or the Python object."""
        return str(self.path) if self.python is None else describe_source(self.python)

    @property
    def samples(self) -> int:
        return self.count if self.source != SYNTHESIZED else len(self.synthesized)

    def feeds(self, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """The samples as feed dicts, read lazily and checked against the model's inputs."""
        if self.source == SYNTHESIZED:
            yield from self.synthesized[:limit]
            return
        limit = self.count if limit is None else min(limit, self.count)
        try:
            yield from Samples(self.path if self.python is None else self.python, self.specs, limit, self.image_format)
        except CalibrationDataError as exc:
            raise CalibrationDataError(f"{self.option} {self.origin}: {exc}") from None

    def first(self) -> dict[str, np.ndarray]:
        return next(self.feeds(1))

    def describe(self) -> str:
        """One line saying what the inputs are, for the table and the reports."""
        n = self.samples
        plural = "s" if n != 1 else ""
        if self.source == EVAL:
            return f"{n} eval sample{plural} from {self.origin}"
        if self.source == CALIBRATION:
            return f"{n} calibration sample{plural} from {self.origin} (not held out: the ranges were fitted on them)"
        return (
            f"{n} synthesized input{plural} from the model's input shapes (random values, no data given;"
            f" pass {self.option} for real figures)"
        )

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "path": str(self.path) if self.path is not None else None,
            "samples": self.samples,
            "description": self.describe(),
        }


def model_specs(path: Path) -> tuple[onnx.ModelProto, list[InputSpec]]:
    """The graph (weights not loaded) and input specs of the model at ``path``."""
    from ptq import loader

    model = loader.read(Path(path))
    return model, input_specs(model)


def from_source(data: DataSource, specs: list[InputSpec], source: str, limit: int | None = None,
                option: str = "--eval-data", image_format: ImageFormat | None = None) -> EvalData:  # fmt: skip
    """Samples of a folder or of a Python source (``ptq.calibrate.samples``), the first ``limit``.

    The first sample is read and checked now; a Python source without ``len()`` is counted (and
    every sample checked) by one reading pass, so the figures can say how many they rest on."""
    if is_path(data):
        return from_folder(Path(data), specs, source, limit, option, image_format)
    try:
        samples = Samples(data, specs, limit, image_format)
        count = samples.count if samples.count is not None else sum(1 for _ in samples)
    except CalibrationDataError as exc:
        raise CalibrationDataError(f"{option} {describe_source(data)}: {exc}") from None
    evaluated = EvalData(source, specs, None, count, option=option, image_format=image_format, python=data)
    evaluated.first()
    return evaluated


def from_folder(folder: Path, specs: list[InputSpec], source: str, limit: int | None = None,
                option: str = "--eval-data", image_format: ImageFormat | None = None) -> EvalData:  # fmt: skip
    """Samples of ``folder`` (name order, the first ``limit``); the first one is read and checked now."""
    folder = Path(folder)
    if not folder.exists():
        raise CalibrationDataError(f"{option} {folder}: no such folder")
    try:
        count = len(Samples(folder, specs, limit, image_format))
    except CalibrationDataError as exc:
        raise CalibrationDataError(f"{option} {folder}: {exc}") from None
    data = EvalData(source, specs, folder, count, option=option, image_format=image_format)
    data.first()  # fail early, before any long measurement, if the data does not fit the model
    return data


def synthesize(model: onnx.ModelProto, specs: list[InputSpec], n: int = SYNTHESIZED_SAMPLES,
               option: str = "--eval-data", image_side: int = IMAGE_SIDE, sequence: int = SEQUENCE) -> EvalData:  # fmt: skip
    """``n`` deterministic random inputs shaped from the model's declared inputs.

    Free dimensions: the first axis (batch) is 1, the free axes of a rank-4 float input (an
    image) are ``image_side`` (224), any other free axis is ``sequence`` (32). Float inputs are standard normal. Integer inputs
    get valid small values: an input used as Gather indices stays below the table's row count
    (and below 100), one named like a mask is all ones, a token-type/segment input is zeros,
    any other is 0 or 1. Booleans are all True.
    """
    bounds = _index_bounds(model)
    feeds = []
    for i in range(n):
        feed = {}
        for spec in specs:
            shape = _shape(spec, image_side, sequence)
            rng = np.random.default_rng(zlib.crc32(f"{spec.name}:{i}".encode()))
            feed[spec.name] = _values(spec, shape, rng, bounds.get(spec.name))
        feeds.append(feed)
    return EvalData(SYNTHESIZED, specs, synthesized=tuple(feeds), option=option)


def _shape(spec: InputSpec, image_side: int = IMAGE_SIDE, sequence: int = SEQUENCE) -> tuple[int, ...]:
    if spec.dims is None:
        raise UnsupportedModelError(
            f"input {spec.name!r} has no declared rank: inputs cannot be synthesized; pass a data folder"
        )
    image = len(spec.dims) == 4 and spec.dtype.kind == "f"
    shape = []
    for axis, d in enumerate(spec.dims):
        if isinstance(d, int) and d > 0:
            shape.append(d)
        elif axis == 0:
            shape.append(1)
        else:
            shape.append(image_side if image else sequence)
    return tuple(shape)


def _values(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator, bound: int | None) -> np.ndarray:
    kind = spec.dtype.kind
    name = spec.name.lower()
    if kind == "f":
        return rng.standard_normal(shape).astype(spec.dtype)
    if kind == "b":
        return np.ones(shape, dtype=spec.dtype)
    if kind in "iu":
        if bound is not None:
            high = max(1, min(bound, MAX_TOKEN))
            return rng.integers(0, high, size=shape).astype(spec.dtype)
        if "mask" in name:
            return np.ones(shape, dtype=spec.dtype)
        if "type" in name or "segment" in name:
            return np.zeros(shape, dtype=spec.dtype)
        return rng.integers(0, 2, size=shape).astype(spec.dtype)
    raise UnsupportedModelError(f"input {spec.name!r} is {spec.dtype}: cannot synthesize it; pass a data folder")


def _index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """Graph input -> rows of the smallest table it indexes through Gather (directly or via Cast)."""
    graph = model.graph
    tables = {t.name: list(t.dims) for t in graph.initializer}
    inputs = {i.name for i in graph.input}
    aliases = {name: name for name in inputs}
    for node in graph.node:  # follow casts/unsqueezes of an input to its Gather
        if node.op_type in ("Cast", "Unsqueeze", "Squeeze", "Reshape") and node.input and node.input[0] in aliases:
            aliases[node.output[0]] = aliases[node.input[0]]
    bounds: dict[str, int] = {}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] not in aliases:
            continue
        dims = tables.get(node.input[0])
        if not dims:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        rows = int(dims[axis])
        source = aliases[node.input[1]]
        bounds[source] = min(rows, bounds.get(source, rows))
    return bounds


def same_inputs(specs_a: list[InputSpec], specs_b: list[InputSpec]) -> bool:
    return {s.name for s in specs_a} == {s.name for s in specs_b}
