"""Calibrated ranges and the recipe they were made with, as a JSON file, so a rerun with new
options skips calibration and ``--load-ranges`` rebuilds the same model without data.

Format (version 2)::

    {"format": "ptq-ranges", "version": 2, "percentile": 99.99, "samples": 10,
     "recipe": {...ptq.recipe.Recipe.to_json()...}, "ranges": {"tensor name": [lo, hi], ...}}

Version 1 files (method, hybrid, exclude, weight_range and the rewrite switches as top-level
keys) are still read: they become the recipe they describe. Ranges are per tensor of the
prepared model; a file made for another model (or for a plan that observed other tensors) is
refused with the first missing tensor named.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ptq.config import CalibrationMethod, WeightRange
from ptq.errors import CalibrationDataError
from ptq.recipe import FLOAT, HYBRID, USER, Placement, Recipe
from ptq.rewrites import RewriteResult
from ptq.write.atomic import write_bytes

FORMAT = "ptq-ranges"
VERSION = 2
READS = (1, 2)


@dataclass(frozen=True)
class SavedRanges:
    """A ranges file as read: the recipe, how the ranges were calibrated, and the range table."""

    path: Path
    recipe: Recipe
    percentile: float
    samples: int
    table: dict

    def ranges(self, needed: list[str]) -> dict[str, tuple[float, float]]:
        """Ranges for every tensor in ``needed``."""
        return _check_table(self.path, self.table, needed)


def save_ranges(ranges: dict[str, tuple[float, float]], recipe: Recipe, percentile: float, samples: int, path: Path) -> None:
    """Write ``ranges`` and the ``recipe`` they were calibrated with (the method auto picked, the
    placements, the weight range, the float rewrites), so that a rerun from the file builds the
    same model without data."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "percentile": percentile,
        "samples": samples,
        "recipe": recipe.to_json(),
        "ranges": {name: [float(lo), float(hi)] for name, (lo, hi) in sorted(ranges.items())},
    }
    write_bytes(Path(path), (json.dumps(document, indent=1) + "\n").encode())


def read_ranges(path: Path) -> SavedRanges:
    """The one reader of ranges files (this version and version 1)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationDataError(f"{path}: no such ranges file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationDataError(f"{path}: not a ranges file ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(document.get("ranges"), dict):
        raise CalibrationDataError(f"{path}: not a ptq ranges file (written by --save-ranges)")
    version = document.get("version")
    if version not in READS:
        raise CalibrationDataError(f"{path}: ranges file version {version!r}, this ptq reads {' and '.join(map(str, READS))}")
    recipe = Recipe.from_json(document.get("recipe"), str(path)) if version == 2 else _version_1_recipe(path, document)
    percentile, samples = document.get("percentile", 99.99), document.get("samples", 0)
    if not isinstance(percentile, (int, float)) or not isinstance(samples, int):
        raise CalibrationDataError(f"{path}: 'percentile' or 'samples' is not a number")
    return SavedRanges(path, recipe, float(percentile), samples, document["ranges"])


def _version_1_recipe(path: Path, document: dict) -> Recipe:
    """The recipe a version 1 file describes with its top-level keys."""

    def names(key: str) -> tuple[str, ...]:
        value = document.get(key, [])
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise CalibrationDataError(f"{path}: {key!r} is not a list of node names or op types")
        return tuple(value)

    weight_range = document.get("weight_range", WeightRange.MINMAX.value)
    if weight_range not in (WeightRange.MINMAX.value, WeightRange.MSE.value):
        raise CalibrationDataError(f"{path}: 'weight_range' is {weight_range!r}, not 'minmax' or 'mse'")
    alpha = document.get("smoothquant")
    if alpha is not None and (not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0):
        raise CalibrationDataError(f"{path}: 'smoothquant' is not an alpha in [0, 1]")
    rewrites = []
    for key in ("equalize", "equalize_activations"):
        if not isinstance(document.get(key, False), bool):
            raise CalibrationDataError(f"{path}: {key!r} is not true or false")
        if document.get(key):
            rewrites.append(RewriteResult(key))
    if alpha is not None:
        rewrites.append(RewriteResult("smoothquant", settings=(("alpha", float(alpha)),)))
    try:
        method = CalibrationMethod(document.get("method", "minmax"))
    except ValueError:
        raise CalibrationDataError(f"{path}: 'method' is not a calibration method") from None
    return Recipe(
        calibration_method=method,
        weight_range=WeightRange(weight_range),
        placements=tuple(Placement(n, FLOAT, USER) for n in names("exclude")) + tuple(Placement(n, HYBRID, USER) for n in names("hybrid")),
        rewrites=tuple(rewrites),
    )


def _check_table(path: Path, table: dict, needed: list[str]) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}
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
