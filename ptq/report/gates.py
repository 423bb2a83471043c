"""CI gates: thresholds on a report's headline figures.

Each gate names a figure of the report's ``summary`` and a bound. A gate whose figure was not
measured (``--min-top1`` on a model without class scores, ``--min-speedup`` without timing)
fails: a pipeline that asked for a guarantee must not pass silently without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ptq.errors import UsageError


@dataclass(frozen=True)
class GateSpec:
    key: str  # keyword of Thresholds and of the JSON gate result
    option: str  # the CLI option
    figure: str  # key of the report summary it reads
    bound: str  # "max" (value <= threshold) or "min" (value >= threshold)
    label: str
    unit: str = ""
    lowest: float | None = None  # valid threshold range
    highest: float | None = None


GATES: tuple[GateSpec, ...] = (
    GateSpec("max_size_ratio", "--max-size-ratio", "size_ratio", "max", "size ratio", "x", 0.0, None),
    GateSpec("min_speedup", "--min-speedup", "speedup", "min", "speedup", "x", 0.0, None),
    GateSpec("min_cosine", "--min-cosine", "cosine", "min", "cosine", "", -1.0, 1.0),
    GateSpec("min_sqnr", "--min-sqnr", "sqnr_db", "min", "SQNR", " dB", None, None),
    GateSpec("min_top1", "--min-top1", "top1", "min", "top-1 agreement", "", 0.0, 1.0),
)
BY_KEY = {g.key: g for g in GATES}


@dataclass(frozen=True)
class GateResult:
    key: str
    option: str
    figure: str
    bound: str
    threshold: float
    value: float | None
    passed: bool
    message: str

    def to_json(self) -> dict:
        return {
            "gate": self.key,
            "option": self.option,
            "figure": self.figure,
            "bound": self.bound,
            "threshold": self.threshold,
            "value": self.value,
            "passed": self.passed,
            "message": self.message,
        }


def check_thresholds(thresholds: dict[str, float | None]) -> dict[str, float]:
    """The given thresholds, validated; raises ``UsageError`` (exit 2) on an impossible one."""
    checked = {}
    for key, value in thresholds.items():
        if value is None:
            continue
        spec = BY_KEY.get(key)
        if spec is None:
            raise UsageError(f"unknown gate {key!r}")
        if (
            math.isnan(value)
            or (spec.lowest is not None and value < spec.lowest)
            or (spec.highest is not None and value > spec.highest)
        ):
            span = f"[{spec.lowest if spec.lowest is not None else '-inf'}, {spec.highest if spec.highest is not None else 'inf'}]"
            hint = " (a fraction: 0.99 means 99%)" if key == "min_top1" else ""
            raise UsageError(f"{spec.option} must be in {span}, got {value:g}{hint}")
        if spec.key in ("max_size_ratio", "min_speedup") and value <= 0:
            raise UsageError(f"{spec.option} must be positive, got {value:g}")
        checked[key] = float(value)
    return checked


def _fmt(value: float, spec: GateSpec) -> str:
    if math.isinf(value):
        return ("inf" if value > 0 else "-inf") + spec.unit
    if spec.key == "min_cosine":
        return f"{value:.5f}"
    if spec.key == "min_top1":
        return f"{value:.4f}"
    return f"{value:.3g}{spec.unit}" if spec.unit == "x" else f"{value:.2f}{spec.unit}"


def evaluate(
    thresholds: dict[str, float], summary: dict[str, float | None], missing: dict[str, str] | None = None
) -> list[GateResult]:
    """One result per given threshold, in the order of ``GATES``.

    ``summary`` maps figure keys to values (None when not measured); ``missing`` may say why a
    figure is absent.
    """
    missing = missing or {}
    results = []
    for spec in GATES:
        if spec.key not in thresholds:
            continue
        threshold = thresholds[spec.key]
        value = summary.get(spec.figure)
        sign = "<=" if spec.bound == "max" else ">="
        limit = f"{threshold:g}{spec.unit}"
        if value is None or (isinstance(value, float) and math.isnan(value)):
            why = missing.get(spec.figure, "not measured")
            results.append(GateResult(spec.key, spec.option, spec.figure, spec.bound, threshold, None, False,
                                      f"{spec.option} {threshold:g}: {spec.label} {why}"))  # fmt: skip
            continue
        passed = value <= threshold if spec.bound == "max" else value >= threshold
        relation = sign if passed else (">" if spec.bound == "max" else "<")
        message = f"{spec.option} {threshold:g}: {spec.label} {_fmt(value, spec)} {relation} {limit}"
        results.append(GateResult(spec.key, spec.option, spec.figure, spec.bound, threshold, value, passed, message))
    return results
