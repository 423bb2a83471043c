"""Calibrated ranges as a JSON file, so a rerun with new options skips calibration.

Format (version 1)::

    {"format": "ptq-ranges", "version": 1, "method": "minmax", "percentile": 99.99,
     "samples": 10, "ranges": {"tensor name": [lo, hi], ...}}

Ranges are per tensor of the prepared model; a file made for another model (or for a plan that
observed other tensors) is refused with the first missing tensor named.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ptq.config import CalibrationMethod, WeightRange
from ptq.errors import CalibrationDataError
from ptq.write.atomic import write_bytes

FORMAT = "ptq-ranges"
VERSION = 1


def save_ranges(
    ranges: dict[str, tuple[float, float]],
    method: CalibrationMethod,
    percentile: float,
    samples: int,
    path: Path,
    hybrid: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    smoothquant: float | None = None,
    weight_range: WeightRange = WeightRange.MINMAX,
    equalize: bool = False,
    equalize_activations: bool = False,
) -> None:
    """Write ``ranges`` and how they were chosen (the method auto picked, when it was auto), and
    the nodes run hybrid, so that a rerun from the file builds the same model without data.

    ``smoothquant``: the alpha the ranges' model was smoothed with (its smoothed tensors' ranges
    fit only a model smoothed the same way, from the same samples)."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "method": method.value,
        "percentile": percentile,
        "hybrid": list(hybrid),
        "exclude": list(exclude),
        "samples": samples,
        **({"smoothquant": smoothquant} if smoothquant is not None else {}),
        "weight_range": WeightRange(weight_range).value,
        **({"equalize": True} if equalize else {}),
        **({"equalize_activations": True} if equalize_activations else {}),
        "ranges": {name: [float(lo), float(hi)] for name, (lo, hi) in sorted(ranges.items())},
    }
    write_bytes(Path(path), (json.dumps(document, indent=1) + "\n").encode())


def saved_hybrid(path: Path) -> tuple[str, ...]:
    """The nodes the saved run put on hybrid kernels (empty for files without the key)."""
    return _names(path, "hybrid")


def saved_exclude(path: Path) -> tuple[str, ...]:
    """The node names and op types the saved run kept float (empty for files without the key)."""
    return _names(path, "exclude")


def saved_equalize(path: Path) -> bool:
    """Whether the saved ranges were calibrated on a cross-layer-equalized model."""
    return _flag(path, "equalize")


def saved_equalize_activations(path: Path) -> bool:
    """Whether the saved ranges were calibrated on an activation-equalized model."""
    return _flag(path, "equalize_activations")


def _flag(path: Path, key: str) -> bool:
    value = _read(path).get(key, False)
    if not isinstance(value, bool):
        raise CalibrationDataError(f"{path}: {key!r} is not true or false")
    return value


def saved_weight_range(path: Path) -> WeightRange:
    """The weight range the saved run used (min/max for files from before the choice existed)."""
    value = _read(path).get("weight_range", WeightRange.MINMAX.value)
    if value not in (WeightRange.MINMAX.value, WeightRange.MSE.value):
        raise CalibrationDataError(f"{path}: 'weight_range' is {value!r}, not 'minmax' or 'mse'")
    return WeightRange(value)


def saved_smoothquant(path: Path) -> float | None:
    """The SmoothQuant alpha the saved ranges were calibrated with (None: no smoothing)."""
    alpha = _read(path).get("smoothquant")
    if alpha is not None and (not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0):
        raise CalibrationDataError(f"{path}: 'smoothquant' is not an alpha in [0, 1]")
    return None if alpha is None else float(alpha)


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
