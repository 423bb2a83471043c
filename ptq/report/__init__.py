"""Reports a release pipeline can act on: size, latency and fidelity of two models side by side,
CI gates on them, and the report files (JSON with a versioned schema, Markdown, HTML).

Plain functions and dataclasses; the CLI only parses options, calls these and prints. The JSON
schema is documented in ``schema.md`` beside this file.
"""

from __future__ import annotations

import json
from pathlib import Path

from ptq.errors import OutputError, UsageError
from ptq.report.build import (
    SCHEMA,
    SCHEMA_VERSION,
    MeasureOptions,
    Report,
    choose_data,
    report_bench,
    report_comparison,
    report_conversion,
)
from ptq.report.gates import GATES
from ptq.report.inspect import ModelInfo, inspect_model

FORMATS = (".json", ".md", ".html")

__all__ = [
    "FORMATS",
    "GATES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "MeasureOptions",
    "ModelInfo",
    "Report",
    "check_report_paths",
    "choose_data",
    "inspect_model",
    "render_report",
    "report_bench",
    "report_comparison",
    "report_conversion",
    "write_report",
]


def check_report_paths(paths, protected=()) -> list[Path]:
    """Validate ``--report`` paths before any work: a known extension, an existing folder, and not
    one of the ``protected`` files (the input model, the outputs)."""
    checked = []
    protected_real = {Path(p).resolve() for p in protected}
    for path in paths:
        path = Path(path)
        if path.suffix.lower() not in FORMATS:
            raise UsageError(f"--report {path}: the extension must be one of {', '.join(FORMATS)}")
        if not path.parent.is_dir():
            raise OutputError(f"--report {path}: folder {path.parent} does not exist")
        if path.resolve() in protected_real:
            raise OutputError(f"--report {path} would overwrite a model file")
        checked.append(path)
    return checked


def render_report(report: Report, suffix: str) -> str:
    """The report as ``.json``, ``.md`` or ``.html`` text."""
    suffix = suffix.lower()
    if suffix == ".json":
        return json.dumps(report.to_json(), indent=1, allow_nan=False) + "\n"
    if suffix == ".md":
        from ptq.report.render import markdown

        return markdown(report)
    if suffix == ".html":
        from ptq.report.html import html

        return html(report)
    raise UsageError(f"unknown report format {suffix!r}; use one of {', '.join(FORMATS)}")


def write_report(report: Report, path: Path) -> None:
    """Write the report atomically in the format its extension names."""
    from ptq.write.atomic import write_bytes

    write_bytes(Path(path), render_report(report, Path(path).suffix).encode("utf-8"))
