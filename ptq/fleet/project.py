"""The project file: the models a CI job converts, with their data, options and gates.

``ptq.toml`` (or ``[tool.ptq]`` in ``pyproject.toml``)::

    report = ["out/fleet.md", "out/fleet.json"]   # fleet reports (optional; --report adds more)

    [defaults]                      # any model key below, for every model
    calibration_method = "percentile"
    runs = 20

    [defaults.gates]                # gates of every model (a model's [model.gates] overrides keys)
    min_cosine = 0.98

    [[model]]
    name = "det"                    # unique; default: the model file's stem
    path = "models/det.onnx"        # required
    calibration_data = "data/det"   # static int8; without it dynamic int8
    eval_data = "data/det_eval"
    output = "out/det.int8.onnx"    # default: <stem>.int8.onnx beside the model

    [model.gates]
    min_sqnr = 20

Relative paths are relative to the project file's folder. An unknown key or a bad value is refused
with the file, the line and the key (tomllib gives no line numbers: ``key_lines`` finds them by
scanning the text).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ptq.config import CalibrationMethod, Scheme, WeightRange
from ptq.errors import UsageError
from ptq.report.gates import BY_KEY as GATE_SPECS

DEFAULT_FILES = ("ptq.toml", "pyproject.toml")


class ProjectFileError(UsageError):
    """A project file that cannot be used: its message starts with ``file:line:``."""


# Model keys -> (kind, check). Kinds: "path", "str", "int", "float", "bool", "names" (a list of
# strings), "choice" (with the allowed values). Conversion keys are ``ptq convert``'s options.
PATH_KEYS = ("path", "output", "calibration_data", "eval_data")
MODEL_KEYS: dict[str, tuple] = {
    "name": ("str",),
    "path": ("path",),
    "output": ("path",),
    "calibration_data": ("path",),
    "eval_data": ("path",),
    "eval_samples": ("int", 1),
    "calibration_samples": ("int", 1),
    "calibration_method": ("choice", [m.value for m in CalibrationMethod]),
    "percentile": ("float",),
    "weights": ("choice", [s.value for s in Scheme]),
    "activations": ("choice", [s.value for s in Scheme]),
    "per_channel": ("bool",),
    "reduce_range": ("bool",),
    "exclude": ("names",),
    "hybrid": ("names",),
    "weight_range": ("choice", [w.value for w in WeightRange]),
    "equalize": ("bool",),
    "equalize_activations": ("bool",),
    "smoothquant": ("float",),
    "bias_correction": ("bool",),
    "auto_fallback": ("bool",),
    "auto_hybrid": ("bool",),
    "auto_smoothquant": ("bool",),
    "write_ort": ("bool",),
    "workers": ("int", 1),
    # measurement
    "latency": ("bool",),
    "threads": ("int", 1),
    "runs": ("int", 1),
    "warmup": ("int", 0),
}
TOP_KEYS = ("report", "defaults", "model")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the project: resolved paths, options and gates, and where it was declared."""

    name: str
    path: Path
    options: dict  # MODEL_KEYS other than name/path, paths resolved
    gates: dict[str, float]
    line: int

    def job(self) -> dict:
        """A plain dict a worker process or Ray task can take (paths as strings)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in self.options.items()},
            "gates": dict(self.gates),
        }


@dataclass(frozen=True)
class Project:
    file: Path
    models: list[ModelEntry]
    reports: list[Path] = field(default_factory=list)


def find_project_file(given: Path | None) -> Path:
    """``given``, or ``ptq.toml`` in the current folder, or a ``pyproject.toml`` with ``[tool.ptq]``."""
    if given is not None:
        if not Path(given).is_file():
            raise UsageError(f"project file {given} does not exist")
        return Path(given)
    for name in DEFAULT_FILES:
        path = Path(name)
        if path.is_file() and (name != "pyproject.toml" or re.search(r"^\s*\[+\s*tool\.ptq\b", path.read_text(), re.MULTILINE)):
            return path
    raise UsageError("no project file: give one (ptq run FILE), or add ptq.toml or [tool.ptq] in pyproject.toml here")


# ---------------------------------------------------------------------- line numbers


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=""")


def key_lines(text: str) -> dict[tuple, int]:
    """Line (1-based) of every table header and ``key =`` line of a TOML text: keys are tuples of
    table names, array-of-table indexes and the key, e.g. ``("model", 0, "gates", "min_sqnr")``
    for ``min_sqnr`` under the first ``[[model]]``'s ``[model.gates]``; a header maps its own
    path. Multi-line strings and arrays are skipped over (their inner lines hold no keys)."""
    lines: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}
    table: tuple = ()
    arrays: dict[tuple, tuple] = {}  # array-of-tables name path -> its current indexed path
    open_brackets = 0
    in_string = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string:
            if in_string in line:
                in_string = None
            continue
        if open_brackets > 0:
            open_brackets += line.count("[") - line.count("]")
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            names = tuple(_unquote(n) for n in _split_dotted(header.group(2)))
            path = _resolve(names, arrays)
            if header.group(1) == "[[":
                index = counts.get(names, 0)
                counts[names] = index + 1
                path = path + (index,)
                arrays[names] = path
            table = path
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            full = table + tuple(_unquote(n) for n in _split_dotted(key.group(1)))
            lines.setdefault(full, number)
            rest = line[key.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_string = quote
            value = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", rest.split("#")[0])
            open_brackets = value.count("[") - value.count("]")
    return lines


def _split_dotted(text: str) -> list[str]:
    return [p.strip() for p in re.findall(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^.]+', text)]


def _unquote(name: str) -> str:
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'" else name


def _resolve(names: tuple, arrays: dict[tuple, tuple]) -> tuple:
    """A header's path with the indexes of the arrays of tables it lies in (``[model.gates]``
    after the second ``[[model]]`` -> ``("model", 1, "gates")``)."""
    for size in range(len(names), 0, -1):
        prefix = names[:size]
        if prefix in arrays and size < len(names):
            return arrays[prefix] + names[size:]
    return names


# ---------------------------------------------------------------------- parsing


def load_project(path: Path) -> Project:
    """The checked project of ``path`` (``ptq.toml``, or ``pyproject.toml``'s ``[tool.ptq]``)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise ProjectFileError(f"{path}:{line.group(1) if line else 1}: not valid TOML ({exc})") from None
    lines = key_lines(text)
    prefix: tuple = ()
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("ptq")
        if data is None:
            raise ProjectFileError(f"{path}:1: no [tool.ptq] table")
        prefix = ("tool", "ptq")
    return _Parser(path, lines, prefix).project(data)


class _Parser:
    def __init__(self, path: Path, lines: dict[tuple, int], prefix: tuple):
        self.path, self.lines, self.prefix = path, lines, prefix
        self.base = path.resolve().parent

    def line(self, where: tuple) -> int:
        for size in range(len(where), -1, -1):  # the key's line, else its table's
            found = self.lines.get(self.prefix + where[:size])
            if found:
                return found
        return 1

    def fail(self, where: tuple, message: str) -> ProjectFileError:
        key = ".".join(str(w) if not isinstance(w, int) else f"[{w}]" for w in where).replace(".[", "[")
        return ProjectFileError(f"{self.path}:{self.line(where)}: {key}: {message}")

    def project(self, data: dict) -> Project:
        for key in data:
            if key not in TOP_KEYS:
                raise self.fail((key,), f"unknown key (known: {', '.join(TOP_KEYS)})")
        reports = data.get("report", [])
        if isinstance(reports, str):
            reports = [reports]
        if not isinstance(reports, list) or not all(isinstance(r, str) for r in reports):
            raise self.fail(("report",), "must be a path or a list of paths (.md, .html, .json)")
        report_paths = []
        for r in reports:
            if Path(r).suffix.lower() not in (".md", ".html", ".json"):
                raise self.fail(("report",), f"{r}: the extension must be .md, .html or .json")
            report_paths.append(self.base / r)
        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict):
            raise self.fail(("defaults",), "must be a table ([defaults])")
        default_options, default_gates = self.options(defaults, ("defaults",), in_defaults=True)
        models = data.get("model", [])
        if not isinstance(models, list) or not models:
            raise self.fail(("model",), "list the models as [[model]] tables (at least one)")
        entries, names = [], {}
        for index, table in enumerate(models):
            where = ("model", index)
            if not isinstance(table, dict):
                raise self.fail(where, "must be a table ([[model]])")
            options, gates = self.options(table, where)
            if "path" not in table:
                raise self.fail(where, "needs path = the float .onnx model")
            merged = {**default_options, **options}
            model_path = merged.pop("path")
            name = merged.pop("name", None) or model_path.name.removesuffix(".onnx")
            if name in names:
                raise self.fail(where + ("name",), f"{name!r} is already the name of the model on line {names[name]}")
            names[name] = self.line(where)
            entries.append(ModelEntry(name, model_path, merged, {**default_gates, **gates}, self.line(where)))
        return Project(self.path, entries, report_paths)

    def options(self, table: dict, where: tuple, in_defaults: bool = False) -> tuple[dict, dict]:
        options: dict = {}
        gates: dict[str, float] = {}
        for key, value in table.items():
            at = where + (key,)
            if key == "gates":
                if not isinstance(value, dict):
                    raise self.fail(at, "must be a table of gates ([model.gates])")
                for gate, threshold in value.items():
                    gates[gate] = self.gate(at + (gate,), gate, threshold)
                continue
            if key not in MODEL_KEYS:
                raise self.fail(at, f"unknown key (known: {', '.join(sorted([*MODEL_KEYS, 'gates']))})")
            if in_defaults and key in ("name", "path", "output"):
                raise self.fail(at, "belongs to one model, not to [defaults]")
            options[key] = self.value(at, key, value)
        if "smoothquant" in options and not 0 <= options["smoothquant"] <= 1:
            raise self.fail(where + ("smoothquant",), f"must be in [0, 1], got {options['smoothquant']}")
        if "percentile" in options and not 50 < options["percentile"] <= 100:
            raise self.fail(where + ("percentile",), f"must be in (50, 100], got {options['percentile']}")
        return options, gates

    def value(self, at: tuple, key: str, value):
        kind = MODEL_KEYS[key]
        if kind[0] == "path" or kind[0] == "str":
            if not isinstance(value, str) or not value:
                raise self.fail(at, f"must be a non-empty string, got {value!r}")
            return (self.base / value) if kind[0] == "path" else value
        if kind[0] == "bool":
            if not isinstance(value, bool):
                raise self.fail(at, f"must be true or false, got {value!r}")
            return value
        if kind[0] == "int":
            if isinstance(value, bool) or not isinstance(value, int) or value < kind[1]:
                raise self.fail(at, f"must be an integer >= {kind[1]}, got {value!r}")
            return value
        if kind[0] == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(at, f"must be a number, got {value!r}")
            return float(value)
        if kind[0] == "names":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.fail(at, f"must be a list of node names or op types, got {value!r}")
            return tuple(value)
        if value not in kind[1]:
            raise self.fail(at, f"must be one of {', '.join(kind[1])}, got {value!r}")
        return value

    def gate(self, at: tuple, gate: str, threshold) -> float:
        spec = GATE_SPECS.get(gate)
        if spec is None:
            raise self.fail(at, f"unknown gate (known: {', '.join(GATE_SPECS)})")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise self.fail(at, f"must be a number, got {threshold!r}")
        if (spec.lowest is not None and threshold < spec.lowest) or (spec.highest is not None and threshold > spec.highest):
            raise self.fail(at, f"must be in [{spec.lowest}, {spec.highest}], got {threshold}")
        return float(threshold)
