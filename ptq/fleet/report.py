"""The fleet report: one row per model (status, size, latency, fidelity, gates) and the totals, as
a terminal table, Markdown (a CI job summary or PR comment), HTML and JSON (schema
``ptq-fleet-report`` version 1: ``{"schema", "schema_version", "created", "file", "jobs",
"backend", "seconds", "totals", "models": [run_one's dicts]}``).

Each model's full report (per-layer errors, op types, plots) is its own ``ptq.report`` file,
linked from here; this module renders only the fleet's overview.
"""

from __future__ import annotations

import html as html_mod
import json
import math
from pathlib import Path

from ptq.fleet.runner import FAILED, GATE_FAILED, OK, FleetResult

SCHEMA = "ptq-fleet-report"
SCHEMA_VERSION = 1
FORMATS = (".md", ".html", ".json")
ICONS = {OK: "✅", GATE_FAILED: "❌", FAILED: "💥"}


def totals(result: FleetResult) -> dict:
    """Counts by status, summed sizes and latencies of the converted models, and the wall time."""
    converted = [m for m in result.models if m["status"] != FAILED]

    def total(key: str) -> float | None:
        values = [m.get(key) for m in converted]
        return sum(values) if values and all(isinstance(v, (int, float)) for v in values) else None

    float_bytes, int8_bytes = total("float_size_bytes"), total("int8_size_bytes")
    float_ms, int8_ms = total("float_ms"), total("int8_ms")
    return {
        "models": len(result.models),
        "converted": len(converted),
        "passed": sum(m["status"] == OK for m in result.models),
        "gate_failed": [m["name"] for m in result.gate_failed],
        "failed": [m["name"] for m in result.failed],
        "float_size_bytes": float_bytes,
        "int8_size_bytes": int8_bytes,
        "size_ratio": int8_bytes / float_bytes if float_bytes and int8_bytes is not None else None,
        "float_ms": float_ms,
        "int8_ms": int8_ms,
        "speedup": float_ms / int8_ms if float_ms and int8_ms else None,
        "seconds": result.seconds,
    }


def _num(value, fmt: str, unit: str = "") -> str:
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        return "-" if value is None else str(value)
    return format(value, fmt) + unit


def _mb(value) -> str:
    return _num(value / 1e6 if isinstance(value, (int, float)) else value, ".2f", " MB")


def _gates(model: dict) -> str:
    gates = model.get("gates") or []
    if not gates:
        return "-"
    failed = [g for g in gates if not g["passed"]]
    return f"{len(gates) - len(failed)}/{len(gates)} passed" if not failed else "; ".join(g["message"] for g in failed)


def rows(result: FleetResult) -> list[list[str]]:
    """Header and one row per model, then the totals row."""
    out = [["model", "status", "float", "int8", "ratio", "float ms", "int8 ms", "speedup", "cosine", "SQNR", "gates"]]
    for m in result.models:
        if m["status"] == FAILED:
            out.append([m["name"], "FAILED", *["-"] * 8, m.get("error") or ""])
            continue
        out.append([
            m["name"], "ok" if m["status"] == OK else "GATE FAILED", _mb(m.get("float_size_bytes")),
            _mb(m.get("int8_size_bytes")), _num(m.get("size_ratio"), ".2f", "x"), _num(m.get("float_ms"), ".2f"),
            _num(m.get("int8_ms"), ".2f"), _num(m.get("speedup"), ".2f", "x"), _num(m.get("cosine"), ".4f"),
            _num(m.get("sqnr_db"), ".1f", " dB"), _gates(m),
        ])  # fmt: skip
    t = result.totals or totals(result)
    out.append([
        f"total ({t['models']})", f"{t['passed']} ok", _mb(t["float_size_bytes"]), _mb(t["int8_size_bytes"]),
        _num(t["size_ratio"], ".2f", "x"), _num(t["float_ms"], ".2f"), _num(t["int8_ms"], ".2f"),
        _num(t["speedup"], ".2f", "x"), "", "", f"{len(t['gate_failed'])} gate failed, {len(t['failed'])} failed",
    ])  # fmt: skip
    return out


def headline(result: FleetResult) -> str:
    t = result.totals or totals(result)
    verdict = "all converted, all gates passed"
    if t["failed"] or t["gate_failed"]:
        parts = []
        if t["failed"]:
            parts.append("failed: " + ", ".join(t["failed"]))
        if t["gate_failed"]:
            parts.append("gate failed: " + ", ".join(t["gate_failed"]))
        verdict = "; ".join(parts)
    return (
        f"ptq run {result.file}: {t['models']} models, {t['converted']} converted, {t['passed']} passed — {verdict}"
        f" ({result.seconds:.1f} s wall, --jobs {result.jobs}, {result.backend})"
    )


def text_table(result: FleetResult) -> str:
    table = rows(result)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    lines = []
    for i, row in enumerate(table):
        cells = [c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells) + "  " + row[-1])
        if i == 0 or i == len(table) - 2:
            lines.append("-" * (sum(widths) + 2 * len(widths) + 5))
    return "\n".join(lines)


def markdown(result: FleetResult) -> str:
    t = result.totals or totals(result)
    icon = ICONS[FAILED] if t["failed"] else ICONS[GATE_FAILED] if t["gate_failed"] else ICONS[OK]
    table = rows(result)
    out = [f"### {icon} {headline(result)}", ""]
    out.append("| " + " | ".join(table[0]) + " |")
    out.append("|" + "|".join(["---", "---"] + ["---:"] * (len(table[0]) - 3) + ["---"]) + "|")
    for row in table[1:]:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    out.append("")
    out.append("Latency: median ms per run, float and int8 timed interleaved in each model's own process;"
               " with --jobs > 1 models were measured concurrently and share the CPU.")  # fmt: skip
    reports = [(m["name"], r) for m in result.models for r in m.get("reports", []) if r.endswith(".md")]
    if reports:
        out.append("")
        out.append("Per-model reports: " + ", ".join(f"{name}: `{path}`" for name, path in reports))
    failures = [m for m in result.models if m["status"] == FAILED]
    if failures:
        out.append("")
        out += [f"- 💥 **{m['name']}** (`{m['path']}`): {m.get('error')}" for m in failures]
    return "\n".join(out) + "\n"


def html(result: FleetResult) -> str:
    esc = html_mod.escape
    table = rows(result)
    head = "".join(f"<th>{esc(c)}</th>" for c in table[0])
    body = []
    for row, model in zip(table[1:], [*result.models, None]):
        status = model["status"] if model else "total"
        body.append(f'<tr class="{esc(status.replace(" ", "-"))}">' + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}td:first-child,td:nth-child(2),td:last-child{text-align:left}"
        "tr.failed{background:#fdd}tr.gate-failed{background:#fed}tr.total{font-weight:bold}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>ptq fleet report</title><style>{style}</style></head>"
        f"<body><h1>{esc(headline(result))}</h1><table><tr>{head}</tr>{''.join(body)}</table>"
        f"<p>Created {esc(result.created)}.</p></body></html>\n"
    )


def to_json(result: FleetResult) -> dict:
    from ptq.report.build import json_safe

    return json_safe({
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": result.created, "file": result.file,
        "jobs": result.jobs, "backend": result.backend, "seconds": result.seconds,
        "totals": result.totals or totals(result), "models": result.models,
    })  # fmt: skip


def render(result: FleetResult, suffix: str) -> str:
    suffix = suffix.lower()
    if suffix == ".json":
        return json.dumps(to_json(result), indent=1, allow_nan=False) + "\n"
    if suffix == ".md":
        return markdown(result)
    return html(result)


def write(result: FleetResult, path: Path) -> None:
    from ptq.write.atomic import write_bytes

    write_bytes(Path(path), render(result, Path(path).suffix).encode("utf-8"))
