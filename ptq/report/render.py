"""Reports as text: the terminal table and the Markdown for a pull-request comment.

Pure formatting: a ``Report`` in, a string out.
"""

from __future__ import annotations

import math
import re
import textwrap

from ptq import __version__
from ptq.report.build import Report

KIB = 1024


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.2f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_cosine(value: float | None) -> str:
    return "-" if value is None else f"{value:.5f}"


def fmt_db(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf dB (identical)" if value > 0 else "-inf dB"
    return f"{value:.1f} dB"


def fmt_err(value: float | None) -> str:
    """4 significant digits, more when those would round a fraction to a whole number (0.999998, not 1)."""
    if value is None:
        return "-"
    text = f"{value:.4g}"
    if float(text) != value and float(text).is_integer():
        text = f"{value:.6g}"
    return text


def fmt_top1(value: float | None, rows: int | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{100 * value:.1f}%"
    return f"{text} of {rows}" if rows else text


def top1_text(fid) -> str:
    """The headline top-1 agreement with the output it was computed on: "93.8% of 16 on prob
    (softmax rows)", or "n/a" when no output looks like class scores."""
    o = fid.top1_output
    if o is None:
        return "n/a"
    basis = f" ({o.top1_basis})" if o.top1_basis else ""
    return f"{fmt_top1(o.top1, o.top1_rows)} on {o.name}{basis}"


def fidelity_line(report: Report) -> str:
    fid = report.fidelity
    if fid is None:
        return "not measured"
    return (
        f"cosine {fmt_cosine(fid.cosine)} (worst sample {fmt_cosine(fid.cosine_min)}), SQNR {fmt_db(fid.sqnr_db)},"
        f" max abs error {fmt_err(fid.max_abs_error)}, top-1 {top1_text(fid)}"
    )


def executed_text(e: dict) -> str:
    return f"{e['int8']} int8, {e['hybrid']} hybrid, {e['float']} float"


def oplist_nodes_text(k: dict, executed: dict | None) -> str:
    """What runs int8 after a conversion: the compute nodes onnxruntime runs (the figure ptq inspect
    and ptq compare give for the written model), then how the source model's nodes (and the
    nodes ptq's rewrites inserted, ``k["inserted"]``) map onto them."""
    ran = k.get("int8", 0) + k.get("hybrid", 0) + k.get("float", 0)
    inserted = k.get("inserted", 0)
    folded = f", {k['folded']} folded away before quantization" if k.get("folded") else ""
    added = f" and {inserted} inserted by ptq" if inserted else ""
    source = (
        f"{ran + k.get('folded', 0) - inserted} source nodes{added}: {k.get('int8', 0)} run in int8 kernels,"
        f" {k.get('hybrid', 0)} hybrid, {k.get('float', 0)} float{folded}"
    )
    if executed is None:
        return source
    return f"{executed_text(executed)} (compute nodes onnxruntime runs); {source}"


def nodes_line(report: Report) -> str | None:
    k = report.kernels
    if isinstance(k, dict):
        return oplist_nodes_text(k, report.models[1].executed)
    executed = [m.executed for m in report.models]
    if any(e is not None for e in executed):
        parts = []
        for label, counts in zip(report.labels, executed):
            if counts is None:
                parts.append(f"{label}: unknown")
            else:
                parts.append(f"{label}: {executed_text(counts)}")
        return ";  ".join(parts) + "  (compute nodes onnxruntime runs)"
    return None


def _speedup_text(report: Report) -> str:
    s = report.speedup
    if s is None:
        return ""
    return f"{s:.2f}x speedup" if s >= 1 else f"{s:.2f}x ({1 / s:.2f}x slower)"


def text_table(report: Report, shown_notes: tuple[str, ...] = ()) -> str:
    """The table printed at the end of ``convert`` and by ``compare``."""
    a, b = report.labels[0], report.labels[1]
    lines = []
    if report.kind == "compare":
        lines.append(f"  A  {report.models[0].path}")
        lines.append(f"  B  {report.models[1].path}")
    if report.data is not None and (report.fidelity or report.latency):
        lines.append(f"  measured on {report.data.describe()}")
    w = 16

    def row(name: str, x: str, y: str, z: str = "") -> str:
        return f"  {name:<{w}}{x:>12}  {y:>12}   {z}".rstrip()

    lines.append(row("", a, b))
    lines.append(row("size", fmt_bytes(report.sizes[0]), fmt_bytes(report.sizes[1]), fmt_ratio(report.size_ratio)))
    lat = report.latency
    if lat is not None:
        ma, mb = lat.models[0], lat.models[1]
        lines.append(row("latency median", fmt_ms(ma.median_ms), fmt_ms(mb.median_ms), _speedup_text(report)))
        lines.append(row("latency p90", fmt_ms(ma.p90_ms), fmt_ms(mb.p90_ms)))
        lines.append(f"  {'':<{w}}{lat.describe()}")
    else:
        lines.append(f"  {'latency':<{w}}not measured (--no-bench)")
    lines.append(f"  {'fidelity':<{w}}{fidelity_line(report)}")
    if report.fidelity and len(report.fidelity.outputs) > 1:
        for o in report.fidelity.outputs:
            lines.append(
                f"  {'':<{w}}  {o.name}: cosine {fmt_cosine(o.cosine)}, SQNR {fmt_db(o.sqnr_db)},"
                f" max abs error {fmt_err(o.max_abs_error)}, top-1 {fmt_top1(o.top1, o.top1_rows)}"
            )
    nodes = nodes_line(report)
    if nodes:
        lines.append(f"  {'nodes':<{w}}{nodes}")
    for note in report.notes:
        if note not in shown_notes:  # the conversion summary printed it already
            lines.append(f"  {'note':<{w}}{note}")
    for i, g in enumerate(report.gates):
        lines.append(f"  {'gates' if i == 0 else '':<{w}}{'pass' if g.passed else 'FAIL'}  {g.message}")
    return "\n".join(lines)


# Rows of the per-layer table printed by --per-layer and put in the Markdown report; the JSON and
# HTML reports hold every layer.
LAYER_ROWS = 15


def worst_layers(report: Report) -> list:
    """The compared tensors, lowest SQNR first (ties: graph order)."""
    tensors = report.layers.tensors if report.layers else []
    return sorted(tensors, key=lambda t: t.sqnr_db if math.isfinite(t.sqnr_db) else math.inf)


def layer_table(report: Report, rows: int = LAYER_ROWS) -> str:
    """``--per-layer``: SQNR, cosine and max abs error of each layer's output vs the reference,
    worst first: where accuracy is lost."""
    layers = report.layers
    if layers is None:
        return "  per-layer error: not measured (no samples to run)"
    if not layers.tensors:
        return f"  per-layer error: {layers.note or 'no tensor of the reference has a namesake in the candidate'}"
    worst = worst_layers(report)
    a = report.labels[0]
    lines = [f"  per-layer error vs {a}, worst first ({len(worst)} tensors, {layers.samples} samples):"]
    lines.append(f"    {'SQNR':>8}  {'cosine':>8}  {'max abs':>9}  {'kernel':<6}  {'op type':<18}  tensor")
    for t in worst[:rows]:
        lines.append(
            f"    {fmt_db(t.sqnr_db):>8}  {t.cosine:>8.5f}  {fmt_err(t.max_abs_error):>9}  {kernel_label(t):<6}"
            f"  {t.op_type:<18}  {t.tensor}"
        )
    if len(worst) > rows:
        lines.append(f"    ... and {len(worst) - rows} more, every one in a .json or .html --report")
    if layers.note:
        lines.append(f"    note: {layers.note}")
    return "\n".join(lines)


def written_files(result) -> list:
    """The files a conversion wrote, in the order the summary names them."""
    outputs = result.outputs
    return [outputs.onnx] + ([outputs.ort] if result.ort_size_bytes is not None else []) + [outputs.ops]


def _accuracy_lines(result, measured: Report | None) -> list[str]:
    """What the accuracy search (``ptq.tuning.targets``) kept out of int8 and why, and the
    figures on the measured data."""
    search = getattr(result, "accuracy", None)
    if search is None or not search.placements and search.met:
        return []
    why = "fidelity collapsed" if search.collapse else search.target.describe()
    lines = [f"  kept out of int8 for accuracy ({why}, on {search.scored_on}):"]
    lines += [f"    {p.node}: {p.kind}, {p.gain_db:+.1f} dB alone ({len(p.nodes)} node(s) left int8)" for p in search.placements]
    lines.append(f"    target {'met' if search.met else 'NOT met'}: {search.base.describe()} -> {search.figures.describe()}")
    fidelity = measured.fidelity if measured is not None else None
    if fidelity is not None and fidelity.cosine is not None:
        top1 = f", top-1 {fidelity.top1:.3f}" if fidelity.top1 is not None else ""
        lines.append(f"    on the measured data: SQNR {fidelity.sqnr_db:.1f} dB, cosine {fidelity.cosine:.4f}{top1}")
    return lines + tradeoff_lines(search.to_json())


TRADEOFF_TIMING = "run ms: median of one run per validation sample, 1 thread, fresh session, not interleaved (rough)"


def tradeoff_note(trial: dict) -> str:
    """What a trade-off row is: the plan as given, the written placement, or a candidate."""
    step = {"as planned": "int8 as planned", "prefix": "first regions of the order", "prune": "one chosen region back in int8"}
    note = step.get(trial["step"], trial["step"])
    if trial["written"]:
        note += ", written"
    return note + (f"; met with {trial['margin_db']:.1f} dB margin" if trial["met"] else "")


def tradeoff_lines(accuracy: dict) -> list[str]:
    """The trade-off of an accuracy search (``SearchResult.to_json``): per count of regions out of
    int8, the best candidate it ran, its figures on the validation samples and its run time;
    every number measured by the search itself."""
    rows = accuracy.get("tradeoff") or []
    if len(rows) < 2:
        return []
    lines = [f"  trade-off on {accuracy['scored_on']} (per count of regions out of int8, the best candidate run; {TRADEOFF_TIMING}):"]
    lines.append(f"    {'regions':>7}  {'SQNR dB':>7}  {'cosine':>8}  {'spread dB':>9}  {'run ms':>7}  candidate")
    for t in rows:
        f = t["figures"]
        sqnr = "inf" if math.isinf(f["sqnr_db"]) and f["sqnr_db"] > 0 else f"{f['sqnr_db']:.1f}"
        lines.append(
            f"    {t['regions']:>7}  {sqnr:>7}  {f['cosine']:>8.5f}  {t['spread_db']:>9.2f}  {t['run_ms']:>7.2f}  {tradeoff_note(t)}"
        )
    return lines


def conversion_summary(result, verbose: bool = False, measured: Report | None = None) -> str:
    """Terminal summary of a conversion (a ``ptq.ConvertResult``): files, sizes, kernels, float
    fallbacks; with ``measured`` (``ptq.measure``'s report) the size/latency/fidelity table."""
    mode = "static int8" if result.mode == "static" else "dynamic int8 (hybrid, no calibration data)"
    latency = getattr(result, "latency", None)
    if result.mode == "dynamic" and latency is not None and latency.weights_only:
        mode = "int8 weights, float kernels (the latency placement's fallback: see its note)"
    mode = "float16 weights, float32 kernels (--fp16)" if result.mode == "fp16" else mode
    lines = [f"ptq {__version__}: {result.source} -> {result.outputs.onnx}  [{mode}]"]
    lines += [f"  note: {n}" for n in result.notes]
    if result.mode == "static":
        split = getattr(result, "split", None)
        held = f", {len(split.validation)} more held out to validate" if split and split.held_out else ""
        lines.append(f"  calibrated on {result.calibration_samples} samples{held} ({result.calibration_method})")
    if measured is None:
        lines.append(
            f"  size   float {fmt_bytes(result.float_size_bytes)} -> int8 {fmt_bytes(result.int8_size_bytes)}"
            f"  ({result.size_ratio:.2f}x)"
            + (f";  .ort {fmt_bytes(result.ort_size_bytes)}" if result.ort_size_bytes is not None else "")
        )
        lines.append(f"  nodes  {oplist_nodes_text(result.oplist.summary(), result.oplist.executed)}")
    else:
        lines.append(text_table(measured, tuple(result.notes)))
    lines += _accuracy_lines(result, measured)
    fallbacks = result.oplist.float_fallbacks() if result.mode != "fp16" else []  # --fp16: every node is float
    if fallbacks:
        lines.append("  float fallbacks:")
        if verbose:
            lines += [f"    {e.name} ({e.op_type}): {e.reason}" for e in fallbacks]
        else:
            for group in result.oplist.grouped_fallbacks():  # by op type and reason template
                lines.append(f"    {group.count:>4} x {group.describe()}")
    lines.append("  wrote  " + ", ".join(str(p) for p in written_files(result)))
    lines.append(f"  took   {result.seconds:.1f} s")
    return "\n".join(lines)


# The hanging indent of a wrapped line: its leading spaces, then a label ("note", "fidelity",
# "12 x") and the run of spaces after it, when there is one.
_LABEL = re.compile(r"^(\s*)(?:(?:\S+ )?\S+?:? {2,}|\d+ x |note: |- )?")


def fit(text: str, width: int) -> str:
    """``text`` with every line longer than ``width`` wrapped at spaces, continuation lines indented
    under the text after the line's label; a word longer than the line (a path) is kept whole."""
    width = max(width, 40)
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        hang = len(_LABEL.match(line).group(0))
        if hang > width // 2 or hang == 0:
            hang = len(line) - len(line.lstrip()) + 4
        out.extend(
            textwrap.wrap(line, width, subsequent_indent=" " * hang, break_long_words=False, break_on_hyphens=False,
                          drop_whitespace=True) or [line]
        )  # fmt: skip
    return "\n".join(out)


def kernel_label(t) -> str:
    """The per-layer table's kernel column: the op list's kernel for the producing node, else
    whether the candidate's int8 tensor was read ("input" for a graph input)."""
    if t.kernel:
        return t.kernel
    if not t.node:
        return "input"
    return "int8" if t.int8 else "float"


def bench_table(report: Report) -> str:
    """The table of ``ptq bench``."""
    lat = report.latency
    lines = [f"  {lat.describe()}", f"  inputs: {report.data.describe()}" if report.data else ""]
    width = max(len(m.label) for m in lat.models)
    lines.append(f"  {'model':<{width}}  {'median':>10}  {'p90':>10}  {'min':>10}  {'vs first':>8}")
    base = lat.models[0].median_ms
    for m in lat.models:
        lines.append(
            f"  {m.label:<{width}}  {fmt_ms(m.median_ms):>10}  {fmt_ms(m.p90_ms):>10}  {fmt_ms(m.min_ms):>10}"
            f"  {base / m.median_ms:>7.2f}x"
        )
    for note in report.notes:
        lines.append(f"  note: {note}")
    return "\n".join(line for line in lines if line)


# ----------------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(report: Report) -> str:
    """A compact Markdown report, ready to post as a pull-request comment."""
    env = report.environment
    cpu = env.get("cpu", {})
    flags = ", ".join(f for f, on in cpu.get("flags", {}).items() if on) or "none of avx2/avx512_vnni/avx_vnni"
    lat = report.latency
    if report.kind == "bench":
        out = ["### ptq bench", "", "| model | median | p90 | min | speedup vs first |", "|---|---:|---:|---:|---:|"]
        base = lat.models[0].median_ms
        for m in lat.models:
            out.append(f"| `{_md_escape(m.label)}` | {fmt_ms(m.median_ms)} | {fmt_ms(m.p90_ms)} | {fmt_ms(m.min_ms)}"
                       f" | {base / m.median_ms:.2f}x |")  # fmt: skip
        out += ["", f"{lat.describe()}.", "", _md_env(env, cpu, flags)]
        return "\n".join(out) + "\n"

    status = (
        "all gates passed"
        if report.gates and report.gates_passed
        else (f"{len(report.failed_gates)} gate(s) failed" if report.gates else "no gates set")
    )
    icon = "✅" if report.gates_passed else "❌"
    a, b = report.labels[0], report.labels[1]
    names = f"`{_md_escape(_name(report.models[0].path))}` → `{_md_escape(_name(report.models[1].path))}`"
    mode = f" ({report.conversion['mode']} int8)" if report.conversion else ""
    out = [f"### {icon} ptq {report.kind}: {names}{mode} — {status}", ""]
    out += [f"| | {a} | {b} | |", "|---|---:|---:|---|"]
    out.append(
        f"| size | {fmt_bytes(report.sizes[0])} | {fmt_bytes(report.sizes[1])} | **{fmt_ratio(report.size_ratio)}** |"
    )
    if lat is not None:
        out.append(f"| latency median | {fmt_ms(lat.models[0].median_ms)} | {fmt_ms(lat.models[1].median_ms)} |"
                   f" **{_speedup_text(report)}** |")  # fmt: skip
        out.append(f"| latency p90 | {fmt_ms(lat.models[0].p90_ms)} | {fmt_ms(lat.models[1].p90_ms)} | |")
    else:
        out.append("| latency | | not measured (`--no-bench`) | |")
    fid = report.fidelity
    if fid is not None:
        out.append(f"| cosine (worst sample) | | {fmt_cosine(fid.cosine)} ({fmt_cosine(fid.cosine_min)}) | |")
        out.append(f"| SQNR | | {fmt_db(fid.sqnr_db)} | |")
        out.append(f"| max abs error | | {fmt_err(fid.max_abs_error)} | |")
        out.append(f"| top-1 agreement | | {_md_escape(top1_text(fid))} | |")
    nodes = nodes_line(report)
    if nodes:
        out.append(f"| nodes | | {_md_escape(nodes)} | |")
    out.append("")
    if report.gates:
        out += ["| gate | threshold | value | |", "|---|---:|---:|---|"]
        for g in report.gates:
            value = "not measured" if g.value is None else _gate_value(g)
            out.append(f"| `{g.option}` | {g.threshold:g} | {value} | {'✅ pass' if g.passed else '❌ **FAIL**'} |")
        out.append("")
    details = []
    if report.data is not None:
        details.append(f"Fidelity on {_md_escape(report.data.describe())}.")
    if lat is not None:
        details.append(f"Latency: {_md_escape(lat.describe())}.")
    details += [_md_escape(n[:1].upper() + n[1:]) + "." for n in report.notes]
    out += [" ".join(details), ""]
    if report.layers and report.layers.tensors:
        worst = worst_layers(report)
        out += [f"<details><summary>Per-layer error vs {a}, worst {min(LAYER_ROWS, len(worst))} of {len(worst)}</summary>", "",
                "| tensor | op type | kernel | SQNR | cosine | max abs error |", "|---|---|---|---:|---:|---:|"]  # fmt: skip
        for t in worst[:LAYER_ROWS]:
            out.append(f"| `{_md_escape(t.tensor)}` | {t.op_type} | {kernel_label(t)} | {fmt_db(t.sqnr_db)}"
                       f" | {t.cosine:.5f} | {fmt_err(t.max_abs_error)} |")  # fmt: skip
        out += ["", "</details>", ""]
    out += [_md_env(env, cpu, flags)]
    return "\n".join(out) + "\n"


def _gate_value(g) -> str:
    v = g.value
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if g.key in ("min_cosine",):
        return f"{v:.5f}"
    if g.key == "min_top1":
        return f"{v:.4f}"
    if g.key == "min_sqnr":
        return f"{v:.2f} dB"
    return f"{v:.3f}x"


def _name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _md_env(env: dict, cpu: dict, flags: str) -> str:
    return (
        f"<sub>ptq {env.get('ptq')} · onnxruntime {env.get('onnxruntime')} · onnx {env.get('onnx')} ·"
        f" {_md_escape(str(cpu.get('model')))} ({cpu.get('logical_cores')} logical cores; {flags})</sub>"
    )


# ------------------------------------------------------------------------------------ inspect


def inspect_text(info) -> str:
    """``ptq inspect``'s output for a ``ModelInfo``."""
    opsets = ", ".join(f"{d} {v}" for d, v in sorted(info.opsets.items()))
    lines = [f"ptq inspect: {info.path}"]
    lines.append(
        f"  format     ONNX IR {info.ir_version}, opset {opsets}"
        + (f"; produced by {info.producer}" if info.producer else "")
    )
    lines.append(
        f"  size       {fmt_bytes(info.size_bytes)} on disk; {info.parameters:,} parameters,"
        f" {fmt_bytes(info.weight_bytes)} of weights"
    )
    if info.quantized:
        ops = ", ".join(f"{n} {op}" for op, n in info.quantization_ops.items())
        lines.append(f"  quantized  yes: {ops}")
    else:
        lines.append("  quantized  no")
    lines.append("  inputs     " + ("\n             ".join(v.describe() for v in info.inputs) or "(none)"))
    lines.append("  outputs    " + ("\n             ".join(v.describe() for v in info.outputs) or "(none)"))
    if info.executed is not None:
        e = info.executed
        lines.append(f"  runs       {e['int8']} int8, {e['hybrid']} hybrid, {e['float']} float: {info.executed_note}")
    elif info.executed_note:
        lines.append(f"  runs       {info.executed_note}")
    lines.append(f"  ops        {info.nodes} nodes of {sum(1 for s in info.op_types if s.count)} types")
    width = max((len(s.op_type) for s in info.op_types), default=8)
    lines.append(f"    {'count':>5}  {'op type':<{width}}  {'params':>10}  {'bytes':>10}  int8 in onnxruntime")
    for s in info.op_types:
        params = f"{s.parameters:,}" if s.parameters else ""
        nbytes = fmt_bytes(s.bytes) if s.bytes else ""
        lines.append(f"    {s.count:>5}  {s.op_type:<{width}}  {params:>10}  {nbytes:>10}  {s.int8_support}")
    return "\n".join(lines)
