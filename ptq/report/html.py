"""The HTML report: one self-contained file (inline CSS and SVG, no script, no network resource)
with the figures as tables and plots: latency distributions and run sequence of both models,
per-layer error in graph order, per-op-type kernels and error, and bytes by op type."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

from ptq.report import render
from ptq.report.build import Report

COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d", "#bab0ac")
# Op types in the per-layer chart (Tableau 20, dark shades first): distinct for up to 20 types.
OP_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f", "#ff9da7",
             "#bab0ac", "#1f77b4", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#d62728", "#9467bd", "#2ca02c",
             "#ff7f0e", "#aec7e8")  # fmt: skip
KERNEL_COLORS = {"int8": "#54a24b", "hybrid": "#eeca3b", "float": "#e45756", "folded": "#bab0ac"}
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"

CSS = """
body{margin:24px auto;max-width:1100px;padding:0 16px;color:#222;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666} .pass{color:#2e7d32;font-weight:600} .fail{color:#c62828;font-weight:600}
table{border-collapse:collapse;margin:6px 0} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f6f6f6} td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.ok{background:#2e7d32} .bad{background:#c62828} .none{background:#777}
figure{margin:10px 0 18px} figcaption{color:#555;font-size:13px;margin-top:2px;max-width:1000px}
svg text{font-size:11px;fill:#333} code{background:#f3f3f3;padding:0 3px;border-radius:3px}
"""


# ------------------------------------------------------------------------------- svg helpers


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _y_gridlines(ticks, left: float, plot_width: float, sy, stroke: str) -> list[str]:
    """A plot's horizontal grid lines at ``ticks`` with their labels left of the frame (``sy``:
    value -> y)."""
    parts = []
    for t in ticks:
        parts.append(f'<line x1="{left - 4}" y1="{sy(t):.1f}" x2="{left + plot_width}" y2="{sy(t):.1f}" stroke="{stroke}"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt_tick(t)}</text>')
    return parts


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:g}"


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{escape(label)}" style="{FONT}">' + "".join(body) + "</svg>"
    )


def _legend_width(label: str) -> float:
    return 24 + 6.5 * len(label)


def legend_lines(items: Sequence[tuple[str, str]], x: float, width: float) -> int:
    """Lines the legend takes when wrapped at ``width``."""
    lines, cx = 1, x
    for label, _ in items:
        if cx + _legend_width(label) > width and cx > x:
            lines, cx = lines + 1, x
        cx += _legend_width(label)
    return lines


def _legend(items: Sequence[tuple[str, str]], x: float, y: float, width: float = 1000) -> list[str]:
    out = []
    cx, cy = x, y
    for label, color in items:
        if cx + _legend_width(label) > width and cx > x:
            cx, cy = x, cy + 16
        out.append(f'<rect x="{cx:.1f}" y="{cy - 9:.1f}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{cx + 14:.1f}" y="{cy:.1f}">{escape(label)}</text>')
        cx += _legend_width(label)
    return out


def histogram_svg(series: Sequence[tuple[str, Sequence[float]]], unit: str = "ms", width: int = 1000,
                  height: int = 260) -> str:  # fmt: skip
    """Overlaid histograms (shared bins) with a marker at each series' median and p90."""
    left, right, top, bottom = 56, 20, 26, 36
    all_values = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in series])
    lo, hi = float(all_values.min()), float(all_values.max())
    if hi <= lo:
        hi = lo + max(abs(lo) * 0.01, 1e-3)
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    bins = np.linspace(lo, hi, 41)
    counts = [np.histogram(np.asarray(v, dtype=np.float64), bins=bins)[0] for _, v in series]
    ymax = max(int(c.max()) for c in counts) or 1
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    def sy(c: float) -> float:
        return top + ph - c / ymax * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>']
    for t in nice_ticks(lo, hi, 8):
        if lo <= t <= hi:
            body.append(f'<line x1="{sx(t):.1f}" y1="{top + ph}" x2="{sx(t):.1f}" y2="{top + ph + 4}" stroke="#999"/>')
            body.append(f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt_tick(t)}</text>')
    body += _y_gridlines([t for t in nice_ticks(0, ymax, 4) if t <= ymax], left, pw, sy, "#eee")
    body.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">latency per run ({unit})</text>')
    body.append(
        f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle">runs</text>'
    )
    bw = pw / (len(bins) - 1)
    for (label, values), c, color in zip(series, counts, COLORS):
        for i, n in enumerate(c):
            if n:
                body.append(
                    f'<rect x="{sx(bins[i]) + 0.5:.1f}" y="{sy(n):.1f}" width="{max(bw - 1, 1):.1f}"'
                    f' height="{top + ph - sy(n):.1f}" fill="{color}" fill-opacity="0.55">'
                    f"<title>{escape(label)}: {n} runs in {bins[i]:.2f}-{bins[i + 1]:.2f} {unit}</title></rect>"
                )
        arr = np.asarray(values, dtype=np.float64)
        for q, dash in ((50, ""), (90, ' stroke-dasharray="4 3"')):
            v = float(np.percentile(arr, q))
            body.append(f'<line x1="{sx(v):.1f}" y1="{top}" x2="{sx(v):.1f}" y2="{top + ph}" stroke="{color}"'
                        f' stroke-width="2"{dash}><title>{escape(label)} p{q} {v:.2f} {unit}</title></line>')  # fmt: skip
    items = [(f"{label} (median solid, p90 dashed)", color) for (label, _), color in zip(series, COLORS)]
    body += _legend(items, left, 16)
    return _svg(width, height, body, "latency distributions")


def runs_svg(series: Sequence[tuple[str, Sequence[float]]], unit: str = "ms", width: int = 1000,
             height: int = 200) -> str:  # fmt: skip
    """Each timed run in the order it ran (series interleaved): drift and outliers show here."""
    left, right, top, bottom = 56, 20, 26, 34
    all_values = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in series])
    lo, hi = 0.0, float(all_values.max()) * 1.05 or 1.0
    n = max(len(v) for _, v in series)
    pw, ph = width - left - right, height - top - bottom

    def sx(i: float) -> float:
        return left + (i + 0.5) / max(n, 1) * pw

    def sy(v: float) -> float:
        return top + ph - (v - lo) / (hi - lo) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>']
    body += _y_gridlines([t for t in nice_ticks(lo, hi, 4) if t <= hi], left, pw, sy, "#eee")
    body.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">timed round (models interleaved)</text>'
    )
    body.append(
        f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle">{unit}</text>'
    )
    for (label, values), color in zip(series, COLORS):
        points = " ".join(f"{sx(i):.1f},{sy(v):.1f}" for i, v in enumerate(values))
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.2" stroke-opacity="0.8"/>'
        )
        for i, v in enumerate(values):
            body.append(f'<circle cx="{sx(i):.1f}" cy="{sy(v):.1f}" r="2" fill="{color}"><title>{escape(label)} run {i + 1}:'
                        f" {v:.2f} {unit}</title></circle>")  # fmt: skip
    body += _legend([(label, color) for (label, _), color in zip(series, COLORS)], left, 16)
    return _svg(width, height, body, "latency per run")


def columns_svg(values: Sequence[tuple[str, float, str]], y_label: str, legend: Sequence[tuple[str, str]],
                width: int = 1000, height: int = 300) -> str:  # fmt: skip
    """One column per entry ``(tooltip, value, color)`` in order; infinite values drawn at the top."""
    left, right, top, bottom = 56, 20, 26 + 16 * (legend_lines(legend, 56, width - 20) - 1), 30
    height += top - 26
    finite = [v for _, v, _ in values if math.isfinite(v)]
    hi = max(finite) if finite else 1.0
    if len(finite) >= 10:  # a few near-identical tensors (100+ dB) must not flatten the rest: clip them
        hi = min(hi, max(float(np.percentile(finite, 95)) * 1.5, 10.0))
    lo = min(0.0, min(finite)) if finite else 0.0
    hi = hi * 1.08 if hi > 0 else 1.0
    pw, ph = width - left - right, height - top - bottom
    n = max(len(values), 1)
    bw = pw / n

    def sy(v: float) -> float:
        return top + ph - (v - lo) / (hi - lo) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>']
    body += _y_gridlines([t for t in nice_ticks(lo, hi, 5) if lo <= t <= hi], left, pw, sy, "#e6e6e6")
    body.append(
        f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle">{escape(y_label)}</text>'
    )
    body.append(
        f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">tensors in graph order (hover for names)</text>'
    )
    zero = sy(0.0)
    for i, (tip, v, color) in enumerate(values):
        shown = min(max(v, lo), hi) if math.isfinite(v) else (hi if v > 0 else lo)
        y0, y1 = sorted((zero, sy(shown)))
        body.append(
            f'<rect x="{left + i * bw + 0.15 * bw:.2f}" y="{y0:.1f}" width="{max(bw * 0.7, 0.8):.2f}"'
            f' height="{max(y1 - y0, 0.5):.1f}" fill="{color}"><title>{escape(tip)}</title></rect>'
        )
    body += _legend(legend, left, 16, width - right)
    return _svg(width, height, body, y_label)


def hbars_svg(rows: Sequence[tuple[str, Sequence[float]]], series: Sequence[tuple[str, str]], *, stacked: bool,
              x_label: str, value_fmt=_fmt_tick, width: int = 1000) -> str:  # fmt: skip
    """Horizontal bars, one group per row: stacked segments, or one thin bar per series side by side."""
    label_w = min(220, 12 + 7 * max((len(r[0]) for r in rows), default=4))
    left, right, top, bottom = label_w, 70, 28, 34
    per_row = 18 if stacked else 8 * len(series) + 8
    height = top + bottom + per_row * max(len(rows), 1)
    totals = [sum(v) if stacked else max(v, default=0) for _, v in rows]
    hi = max(totals, default=0) or 1.0
    pw = width - left - right

    def sx(v: float) -> float:
        return left + v / hi * pw

    body = []
    for t in nice_ticks(0, hi, 6):
        if t <= hi:
            body.append(f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{height - bottom}" stroke="#eee"/>')
            body.append(f'<text x="{sx(t):.1f}" y="{height - bottom + 14}" text-anchor="middle">{_fmt_tick(t)}</text>')
    body.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>')
    for r, (label, vals) in enumerate(rows):
        y = top + r * per_row
        body.append(f'<text x="{left - 6}" y="{y + per_row / 2 + 4:.1f}" text-anchor="end">{escape(label[:32])}</text>')
        x = left
        for s, (v, (name, color)) in enumerate(zip(vals, series)):
            if v <= 0:
                continue
            w = v / hi * pw
            tip = f"{label}, {name}: {value_fmt(v)}"
            if stacked:
                body.append(
                    f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{per_row - 6}" fill="{color}"><title>{escape(tip)}</title></rect>'
                )
                x += w
            else:
                yy = y + 4 + s * 8
                body.append(
                    f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="7" fill="{color}"><title>{escape(tip)}</title></rect>'
                )
        total = sum(vals) if stacked else None
        if stacked and total:
            body.append(
                f'<text x="{sx(total) + 4:.1f}" y="{y + per_row / 2 + 4:.1f}">{escape(value_fmt(total))}</text>'
            )
    body += _legend(list(series), left, 16)
    return _svg(width, height, body, x_label)


def tradeoff_svg(points: Sequence[dict], y_key: str, y_label: str, level: float | None = None, level_label: str = "",
                 width: int = 1000, height: int = 260) -> str:  # fmt: skip
    """Every candidate the accuracy search ran: regions out of int8 (x) against ``point[y_key]``
    (y), green where it met the target with its margin, red where not, ringed where written;
    a dashed line at ``level`` (the target). Each circle carries its numbers as data-regions and
    data-value, so what is drawn can be checked against the search."""
    left, right, top, bottom = 56, 20, 26, 34
    values = [float(p[y_key]) for p in points if math.isfinite(float(p[y_key]))]
    if level is not None and math.isfinite(level):
        values.append(level)
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad
    x_hi = max([int(p["regions"]) for p in points] + [1])
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + 10 + v / x_hi * (pw - 20)

    def sy(v: float) -> float:
        return top + ph - (min(max(v, lo), hi) - lo) / (hi - lo) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>']
    body += _y_gridlines([t for t in nice_ticks(lo, hi, 5) if lo <= t <= hi], left, pw, sy, "#e6e6e6")
    for t in nice_ticks(0, x_hi, 8):
        if 0 <= t <= x_hi and float(t).is_integer():
            body.append(f'<text x="{sx(t):.1f}" y="{top + ph + 14}" text-anchor="middle">{_fmt_tick(t)}</text>')
    body.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">regions out of int8 (float or hybrid)</text>')
    body.append(
        f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle">{escape(y_label)}</text>'
    )
    if level is not None and math.isfinite(level):
        body.append(f'<line class="target" x1="{left}" y1="{sy(level):.1f}" x2="{left + pw}" y2="{sy(level):.1f}"'
                    f' stroke="#555" stroke-dasharray="5,4" data-value="{level:.6g}"/>')  # fmt: skip
        body.append(f'<text x="{left + pw - 4}" y="{sy(level) - 4:.1f}" text-anchor="end">{escape(level_label)}</text>')
    for p in points:
        v = float(p[y_key])
        color = KERNEL_COLORS["int8"] if p["met"] else KERNEL_COLORS["float"]
        tip = f"{p['regions']} regions: {render.tradeoff_note(p)}; {y_label} {v:.4g}"
        ring = ' stroke="#222" stroke-width="2"' if p["written"] else ""
        body.append(
            f'<circle class="trial" cx="{sx(int(p["regions"])):.1f}" cy="{sy(v):.1f}" r="{5 if p["written"] else 3.5}" fill="{color}"'
            f' fill-opacity="0.85"{ring} data-regions="{int(p["regions"])}" data-value="{v:.6g}"><title>{escape(tip)}</title></circle>'
        )
    body += _legend([("met the target with its margin", KERNEL_COLORS["int8"]), ("missed", KERNEL_COLORS["float"])], left, 16)
    return _svg(width, height, body, y_label)


# ------------------------------------------------------------------------------------- page


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _op_colors(op_types: Sequence[str]) -> dict[str, str]:
    return {op: OP_COLORS[i % len(OP_COLORS)] for i, op in enumerate(op_types)}


def html(report: Report) -> str:
    """The self-contained HTML page."""
    e = escape
    env = report.environment
    cpu = env.get("cpu", {})
    title = f"ptq {report.kind}: " + " vs ".join(render._name(m.path) for m in report.models)
    head = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{CSS}</style></head><body>")  # fmt: skip
    parts = [head]
    if report.gates:
        badge = (
            '<span class="badge ok">all gates passed</span>'
            if report.gates_passed
            else (f'<span class="badge bad">{len(report.failed_gates)} gate(s) failed</span>')
        )
    elif report.kind == "bench":
        badge = ""
    else:
        badge = '<span class="badge none">no gates set</span>'
    parts.append(f"<h1>{e(title)} {badge}</h1>")
    flags = ", ".join(f for f, on in cpu.get("flags", {}).items() if on) or "no int8 dot-product flags"
    parts.append(
        f'<p class="sub">{e(report.created)} · ptq {e(str(env.get("ptq")))} · onnxruntime {e(str(env.get("onnxruntime")))}'
        f" · onnx {e(str(env.get('onnx')))} · {e(str(cpu.get('model')))} ({cpu.get('logical_cores')} logical cores;"
        f" {e(flags)}) · {report.options.threads} thread{'s' if report.options.threads != 1 else ''}</p>"
    )
    parts.append(_models_section(report))
    if report.kind != "bench":
        parts.append(_summary_section(report))
        parts.append(_accuracy_section(report))
    parts.append(_latency_section(report))
    if report.kind != "bench":
        parts.append(_layers_section(report))
        parts.append(_op_types_section(report))
        parts.append(_size_section(report))
        parts.append(_fallbacks_section(report))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p) + "\n"


def _models_section(report: Report) -> str:
    rows = []
    for label, info, size in zip(report.labels, report.models, report.sizes):
        rows.append([escape(label), f"<code>{escape(info.path)}</code>", render.fmt_bytes(size),
                     f"IR {info.ir_version}, opset {info.opset}", str(info.nodes),
                     "yes" if info.quantized else "no"])  # fmt: skip
    out = "<h2>Models</h2>" + _table(["", "file", "size", "format", "nodes", "quantized"], rows, (2, 4))
    if report.conversion:
        c = report.conversion
        calib = (
            f", calibrated on {c['calibration_samples']} samples ({c['calibration_method']})"
            if c["mode"] == "static"
            else ""
        )
        out += f"<p>{escape(c['mode'])} int8{escape(calib)}; converted in {c['seconds']:.1f} s.</p>"
    return out


def _summary_section(report: Report) -> str:
    e = escape
    a, b = report.labels[0], report.labels[1]
    lat, fid = report.latency, report.fidelity
    rows = [
        [
            "size",
            render.fmt_bytes(report.sizes[0]),
            render.fmt_bytes(report.sizes[1]),
            render.fmt_ratio(report.size_ratio),
        ]
    ]
    if lat:
        rows.append(["latency median", render.fmt_ms(lat.models[0].median_ms), render.fmt_ms(lat.models[1].median_ms),
                     e(render._speedup_text(report))])  # fmt: skip
        rows.append(["latency p90", render.fmt_ms(lat.models[0].p90_ms), render.fmt_ms(lat.models[1].p90_ms), ""])
    else:
        rows.append(["latency", "", "", "not measured (--no-bench)"])
    nodes = render.nodes_line(report)
    out = "<h2>Summary</h2>" + _table(["", a, b, ""], rows, (1, 2))
    if fid:
        out += f"<p>Fidelity of {e(b)} against {e(a)}: {e(render.fidelity_line(report))}.</p>"
        orows = [[f"<code>{e(o.name)}</code>", e(str(o.shape)), render.fmt_cosine(o.cosine), render.fmt_cosine(o.cosine_min),
                  e(render.fmt_db(o.sqnr_db)), render.fmt_err(o.max_abs_error), render.fmt_top1(o.top1, o.top1_rows)]
                 for o in fid.outputs]  # fmt: skip
        out += _table(
            ["output", "shape", "cosine", "worst sample", "SQNR", "max abs error", "top-1"], orows, (2, 3, 4, 5)
        )
    if report.data:
        out += f"<p>Measured on {e(report.data.describe())}.</p>"
    if nodes:
        out += f"<p>Nodes: {e(nodes)}.</p>"
    for note in report.notes:
        out += f"<p>Note: {e(note)}.</p>"
    if report.gates:
        grows = [[f"<code>{e(g.option)}</code>", f"{g.threshold:g}", "not measured" if g.value is None else render_value(g),
                  '<span class="pass">pass</span>' if g.passed else '<span class="fail">FAIL</span>', e(g.message)]
                 for g in report.gates]  # fmt: skip
        out += "<h2>Gates</h2>" + _table(["gate", "threshold", "value", "", "detail"], grows, (1, 2))
    return out


def _accuracy_section(report: Report) -> str:
    """What the accuracy search kept out of int8 and why, and the trade-off it measured: fidelity
    and run time against the number of regions out of int8, as a table and as plots."""
    accuracy = (report.conversion or {}).get("accuracy")
    if not accuracy or (accuracy["met"] and not accuracy["placements"]):
        return ""
    e = escape
    why = "the int8 model's fidelity collapsed" if accuracy["collapse"] else f"target {accuracy['target']}"
    verdict = "met" if accuracy["met"] else "NOT met (the best placement found was written)"
    out = (
        f"<h2>Accuracy search</h2><p>{e(why)}, scored on {e(accuracy['scored_on'])}: {verdict} with"
        f" {len(accuracy['placements'])} region(s) out of int8 ({accuracy['regions_measured']} regions measured alone,"
        f" {accuracy['trials']} candidate models run, {accuracy['seconds']:.1f} s).</p>"
    )
    prows = [[f"<code>{e(p['node'])}</code>", e(p["placement"]), f"{p['gain_db']:+.2f} dB", str(len(p["region"]))]
             for p in accuracy["placements"]]  # fmt: skip
    if prows:
        out += _table(["region (op)", "kept", "gain alone", "nodes out of int8"], prows, (2, 3))
    rows = accuracy.get("tradeoff") or []
    if len(rows) < 2:
        return out
    trows = [[str(t["regions"]), e(render.fmt_db(t["figures"]["sqnr_db"])), f"{t['figures']['cosine']:.5f}",
              f"{t['figures']['cosine_min']:.5f}", f"{t['spread_db']:.2f} dB", f"{t['run_ms']:.2f}", e(render.tradeoff_note(t))]
             for t in rows]  # fmt: skip
    out += (f"<p>The trade-off, measured on {e(accuracy['scored_on'])}: per count of regions out of int8, the best"
            f" candidate the search ran. Spread: the jackknife standard error of the target's figure over those samples,"
            f" which sets the margin. {e(render.TRADEOFF_TIMING)}; the latency section times the written model"
            " properly.</p>")  # fmt: skip
    out += _table(["regions out of int8", "SQNR", "cosine", "worst sample", "spread", "run ms", "candidate"], trows, (0, 1, 2, 3, 4, 5))
    rank = accuracy["rank"]
    curve = accuracy["curve"]
    out += _figure(
        tradeoff_svg(curve, "rank_db", rank["label"], rank["target"], "target"),
        f"Every candidate model the search ran ({len(curve)}), on {e(accuracy['scored_on'])}; ringed: the written one.",
    )
    out += _figure(
        tradeoff_svg(curve, "run_ms", "run ms (rough)"),
        f"Run time of the same candidates: {e(render.TRADEOFF_TIMING)}.",
    )
    return out


def render_value(g) -> str:
    return escape(render._gate_value(g))


def _latency_section(report: Report) -> str:
    lat = report.latency
    if lat is None:
        return "<h2>Latency</h2><p>Not measured (--no-bench).</p>"
    series = [(m.label, m.runs_ms) for m in lat.models]
    caption = (f"{escape(lat.describe())}. Shared bins; solid line at the median, dashed at the 90th percentile of"
               " each model. Hover a bar for its count.")  # fmt: skip
    out = "<h2>Latency</h2>" + _figure(histogram_svg(series), caption)
    out += _figure(runs_svg(series), "Every timed run in the order it ran; the models alternate run by run.")
    rows = [[escape(m.label), render.fmt_ms(m.median_ms), render.fmt_ms(m.p90_ms), render.fmt_ms(m.mean_ms),
             render.fmt_ms(m.min_ms), render.fmt_ms(m.max_ms), render.fmt_ms(m.stdev_ms), str(len(m.runs_ms))]
            for m in lat.models]  # fmt: skip
    out += _table(["model", "median", "p90", "mean", "min", "max", "stdev", "runs"], rows, (1, 2, 3, 4, 5, 6, 7))
    return out


def _layers_section(report: Report) -> str:
    layers = report.layers
    if layers is None:
        return ""
    if not layers.tensors:
        return f"<h2>Per-layer error</h2><p>{escape(layers.note or 'no tensor could be matched')}.</p>"
    ops = sorted({t.op_type for t in layers.tensors}, key=lambda op: -sum(t.op_type == op for t in layers.tensors))
    colors = _op_colors(ops)
    values = [
        ((f"{t.tensor} ({t.op_type} {t.node}, {render.kernel_label(t)} in the candidate):"
          f" SQNR {render.fmt_db(t.sqnr_db)}, cosine {t.cosine:.5f}, max abs error {t.max_abs_error:.3g}"),
         t.sqnr_db, colors[t.op_type])
        for t in layers.tensors
    ]  # fmt: skip
    svg = columns_svg(values, "SQNR (dB), higher is better", [(op, colors[op]) for op in ops])
    worst = sorted(layers.tensors, key=lambda t: t.sqnr_db)[:10]
    rows = [[f"<code>{escape(t.tensor)}</code>", escape(t.op_type), f"<code>{escape(t.node)}</code>",
             render.kernel_label(t), escape(render.fmt_db(t.sqnr_db)), f"{t.cosine:.5f}",
             f"{t.max_abs_error:.3g}"] for t in worst]  # fmt: skip
    caption = (f"SQNR of each of {len(layers.tensors)} intermediate tensors against the reference, on"
               f" {layers.samples} sample(s), coloured by the op that produces it. The error accumulates along the"
               " graph: a sudden drop marks the layer that loses precision. Bars reaching the top are cut there"
               " (near-identical tensors, up to infinite SQNR; hover for the value). Method: " + escape(LAYER_NOTE))  # fmt: skip
    out = "<h2>Per-layer error</h2>" + _figure(svg, caption)
    out += "<p>The ten tensors with the lowest SQNR:</p>" + _table(
        ["tensor", "op", "node", "in the candidate", "SQNR", "cosine", "max abs error"], rows, (4, 5, 6)
    )
    return out


LAYER_NOTE = (
    "tensors are matched by name; where the candidate quantizes a tensor, its QuantizeLinear's int8 output is read"
    " (as an extra graph output, which leaves onnxruntime's int8 fusions in place) and dequantized, otherwise the"
    " float tensor is read."
)


def _op_types_section(report: Report) -> str:
    rows = [r for r in report.op_type_rows() if any(r["nodes"]) or r["layers"]]
    out = "<h2>By op type</h2>"
    all_folded = [r for r in rows if r["kernels"] and r["kernels"]["folded"] == r["nodes"][0]]
    with_kernels = [r for r in rows if r["kernels"] and r not in all_folded]
    if with_kernels:
        kinds = [k for k in ("int8", "hybrid", "float", "folded") if any(r["kernels"].get(k) for r in with_kernels)]
        bars = [(r["op_type"], [r["kernels"].get(k, 0) for k in kinds]) for r in with_kernels]
        svg = hbars_svg(bars, [(k, KERNEL_COLORS[k]) for k in kinds], stacked=True, x_label="nodes of the source model")
        hidden = ", ".join(f"{r['nodes'][0]} {r['op_type']}" for r in all_folded)
        out += _figure(
            svg,
            "What onnxruntime runs for each node of the source model, by op type (from the op list):"
            " int8 kernel, hybrid kernel, float kernel, or folded away before quantization."
            + (f" Not drawn: op types folded away entirely ({escape(hidden)})." if hidden else ""),
        )
    elif rows:
        shown = [r for r in rows if r["op_type"] != "Constant"][:30]
        bars = [(r["op_type"], list(r["nodes"])) for r in shown]
        series = [(label, COLORS[i]) for i, label in enumerate(report.labels)]
        out += _figure(
            hbars_svg(bars, series, stacked=False, x_label="nodes"),
            "Nodes of each op type in each model file (Constant nodes not drawn).",
        )
    with_layers = [r for r in rows if r["sqnr_db_median"] is not None]
    if with_layers:
        finite = [r["sqnr_db_median"] for r in with_layers if math.isfinite(r["sqnr_db_median"])]
        cap = max(finite, default=60.0) * 1.1 or 60.0
        bars = [
            (r["op_type"], [min(r["sqnr_db_median"], cap)])
            for r in sorted(with_layers, key=lambda r: r["sqnr_db_median"])
        ]
        svg = hbars_svg(bars, [("median SQNR of its output tensors", COLORS[0])], stacked=True, x_label="dB",
                        value_fmt=lambda v: f"{v:.1f} dB")  # fmt: skip
        out += _figure(svg, "Median per-layer SQNR of the tensors each op type produces (lowest first).")
    a, b = report.labels[0], report.labels[1]
    kinds = ["int8", "hybrid", "float", "folded"] if report.kernels else []
    table_rows = []
    for r in rows:
        k = r["kernels"] or {}
        table_rows.append(
            [escape(r["op_type"]), str(r["nodes"][0] or ""), str(r["nodes"][1] or "")]
            + [str(k[kind]) if k.get(kind) else "" for kind in kinds]
            + [escape(render.fmt_db(r["sqnr_db_median"])) if r["sqnr_db_median"] is not None else "",
               render.fmt_bytes(r["bytes"][0]) if r["bytes"][0] else "",
               render.fmt_bytes(r["bytes"][1]) if r["bytes"][1] else ""]
        )  # fmt: skip
    headers = ["op type", f"nodes {a}", f"nodes {b}", *kinds, "median SQNR", f"bytes {a}", f"bytes {b}"]
    out += _table(headers, table_rows, tuple(range(1, len(headers))))
    if kinds:
        out += '<p class="sub">int8/hybrid/float/folded: what onnxruntime runs for the source nodes (the op list).</p>'
    return out


def _size_section(report: Report) -> str:
    merged: dict[str, list[int]] = {}
    for i, info in enumerate(report.models):
        for op, nbytes in info.bytes_by_op_type().items():
            merged.setdefault(op, [0] * len(report.models))[i] = nbytes
    rows = sorted(merged.items(), key=lambda kv: -max(kv[1]))
    bars = [(op, [v / 1e3 for v in vals]) for op, vals in rows]
    series = [(label, COLORS[i]) for i, label in enumerate(report.labels)]
    svg = hbars_svg(bars, series, stacked=False, x_label="kB", value_fmt=lambda v: f"{v:,.1f} kB")
    caption = ("Bytes of the weights each op type reads (a weight behind DequantizeLinear counts for the op that"
               " reads it, with its scales), and the rest of the file (graph structure, metadata).")  # fmt: skip
    return "<h2>Size by op type</h2>" + _figure(svg, caption)


def _fallbacks_section(report: Report) -> str:
    if not report.float_fallbacks:
        return ""
    rows = [
        [str(f["count"]), escape(f["op_type"]),
         escape(f["reason"] + (f" (e.g. {', '.join(f['examples'])})" if f.get("examples") else ""))]
        for f in report.float_fallbacks
    ]  # fmt: skip
    return "<h2>Float fallbacks</h2>" + _table(["nodes", "op type", "why it runs float"], rows, (0,))
