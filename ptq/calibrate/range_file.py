"""Calibrated ranges as a JSON file, so a rerun with new options skips calibration.

Format (version 1)::

    {"format": "ptq-ranges", "version": 1, "method": "minmax", "percentile": 99.99,
     "samples": 10, "ranges": {"tensor name": [lo, hi], ...}}

Ranges are per tensor of the prepared model; a file made for another model (or for a plan that
observed other tensors) is refused with the first missing tensor named.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ptq.config import CalibrationMethod, Config, WeightRange
from ptq.errors import CalibrationDataError
from ptq.write.atomic import write_bytes

FORMAT = "ptq-ranges"
VERSION = 1


@dataclass(frozen=True)
class Rewrites:
    """The float rewrites applied before calibration. Ranges of the tensors they rescale fit only
    a model rewritten the same way, so a ranges file records them and a rerun must repeat them."""

    smoothquant: float | None = None
    equalize: bool = False
    equalize_activations: bool = False

    @classmethod
    def of(cls, config: Config) -> "Rewrites":
        return cls(config.smoothquant, config.equalize, config.equalize_activations)

    def to_json(self) -> dict:
        """Only the rewrites applied (files without them read back as none)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, False)}

    def describe(self) -> str:
        parts = [f"--smoothquant {self.smoothquant:g}"] if self.smoothquant is not None else []
        parts += [f"--{k.replace('_', '-')}" for k in ("equalize", "equalize_activations") if getattr(self, k)]
        return " ".join(parts) or "no --smoothquant, --equalize or --equalize-activations"


def save_ranges(
    ranges: dict[str, tuple[float, float]],
    method: CalibrationMethod,
    percentile: float,
    samples: int,
    path: Path,
    hybrid: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    weight_range: WeightRange = WeightRange.MINMAX,
    rewrites: Rewrites = Rewrites(),
) -> None:
    """Write ``ranges`` and how they were chosen (the method auto picked, when it was auto), the
    nodes run hybrid and the weight range, so that a rerun from the file builds the same model
    without data, and the float ``rewrites`` the ranges' model had."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "method": method.value,
        "percentile": percentile,
        "hybrid": list(hybrid),
        "exclude": list(exclude),
        "samples": samples,
        "weight_range": WeightRange(weight_range).value,
        **rewrites.to_json(),
        "ranges": {name: [float(lo), float(hi)] for name, (lo, hi) in sorted(ranges.items())},
    }
    write_bytes(Path(path), (json.dumps(document, indent=1) + "\n").encode())


def saved_hybrid(path: Path) -> tuple[str, ...]:
    """The nodes the saved run put on hybrid kernels (empty for files without the key)."""
    return _names(path, "hybrid")


def saved_exclude(path: Path) -> tuple[str, ...]:
    """The node names and op types the saved run kept float (empty for files without the key)."""
    return _names(path, "exclude")


def saved_weight_range(path: Path) -> WeightRange:
    """The weight range the saved run used (min/max for files from before the choice existed)."""
    value = _read(path).get("weight_range", WeightRange.MINMAX.value)
    if value not in (WeightRange.MINMAX.value, WeightRange.MSE.value):
        raise CalibrationDataError(f"{path}: 'weight_range' is {value!r}, not 'minmax' or 'mse'")
    return WeightRange(value)


def saved_rewrites(path: Path) -> Rewrites:
    """The float rewrites the saved ranges were calibrated after (none for older files)."""
    document = _read(path)
    alpha = document.get("smoothquant")
    if alpha is not None and (not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0):
        raise CalibrationDataError(f"{path}: 'smoothquant' is not an alpha in [0, 1]")
    flags = {}
    for key in ("equalize", "equalize_activations"):
        flags[key] = document.get(key, False)
        if not isinstance(flags[key], bool):
            raise CalibrationDataError(f"{path}: {key!r} is not true or false")
    return Rewrites(None if alpha is None else float(alpha), **flags)


def _names(path: Path, key: str) -> tuple[str, ...]:
    names = _read(path).get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CalibrationDataError(f"{path}: {key!r} is not a list of node names or op types")
    return tuple(names)


def load_ranges(path: Path, needed: list[str]) -> dict[str, tuple[float, float]]:
    """Ranges from ``path`` for every tensor in ``needed``."""
    return _check_table(path, _read(path), needed)


def _read(path: Path) -> dict:
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CalibrationDataError(f"{path}: no such ranges file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationDataError(f"{path}: not a ranges file ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(document.get("ranges"), dict):
        raise CalibrationDataError(f"{path}: not a ptq ranges file (written by --save-ranges)")
    if document.get("version") != VERSION:
        raise CalibrationDataError(f"{path}: ranges file version {document.get('version')!r}, this ptq reads {VERSION}")
    return document


def _check_table(path: Path, document: dict, needed: list[str]) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}
    table = document["ranges"]
    for name in needed:
        value = table.get(name)
        if value is None:
            raise CalibrationDataError(f"{path}: no range for tensor {name!r}; the file was made for another model or options")
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
            or value[0] > value[1]
        ):
            raise CalibrationDataError(f"{path}: range of tensor {name!r} is not [lo, hi] with finite lo <= hi")
        ranges[name] = (float(value[0]), float(value[1]))
    return ranges
