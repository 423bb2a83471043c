"""Turn benchmark rows into text: the console table, the headline, the environment, RESULTS.md.

Pure formatting: rows in, strings out. Nothing here measures or prints.
"""

from __future__ import annotations

import math
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata

INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


@dataclass
class Row:
    """One model quantized by one tool (or the float reference, ``tool == "float"``)."""

    model: str
    tool: str
    error: str | None = None  # "failed: ..." / "skipped: ..." text; None when measured
    size_ratio: float | None = None  # int8 bytes / float bytes
    latency_ms: dict[int, float] = field(default_factory=dict)  # by intra-op thread count
    speedup: dict[int, float] = field(default_factory=dict)  # float latency / this latency
    ptq_ratio: dict[int, float] = field(default_factory=dict)  # ptq latency / this latency (peers only)
    cosine: float | None = None
    sqnr_db: float | None = None
    task_name: str | None = None
    task_value: float | None = None
    convert_s: float | None = None
    peak_rss_mib: float | None = None
    notes: list[str] = field(default_factory=list)  # what the conversion had to do (fallbacks)

    @property
    def ok(self) -> bool:
        return self.error is None


# --- formatting helpers ------------------------------------------------------------------------


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return ""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}"


def _cosine(value: float | None) -> str:
    """Cosine with enough digits to tell 0.9999 from 0.99999."""
    if value is None:
        return ""
    return f"{value:.5f}"


def _task(row: Row) -> str:
    if row.task_value is None:
        return ""
    return f"{row.task_name} {row.task_value:.4f}"


def table_columns(threads: Sequence[int]) -> list[str]:
    """Column headers of the results table."""
    columns = ["model", "tool", "status", "size"]
    for t in threads:
        columns += [f"ms@{t}t", f"x@{t}t"]
    columns += [f"ptq/peer@{t}t" for t in threads]
    columns += ["cosine", "SQNR dB", "task metric", "convert s", "peak RSS MiB"]
    return columns


def status_cell(row: Row, footnote: int | None) -> str:
    """ "ok", "ok*" (converted with a note), or "failed [n]" / "skipped [n]" pointing at footnote n."""
    if row.error is None:
        return "ok*" if row.notes else "ok"
    return f"{row.error.split(':')[0]} [{footnote}]"


def table_cells(row: Row, threads: Sequence[int], footnote: int | None = None) -> list[str]:
    """One row of the results table as strings."""
    cells = [row.model, row.tool, status_cell(row, footnote), _num(row.size_ratio, 3)]
    for t in threads:
        cells += [_num(row.latency_ms.get(t), 2), _num(row.speedup.get(t), 2)]
    cells += [_num(row.ptq_ratio.get(t), 2) for t in threads]
    cells += [_cosine(row.cosine), _num(row.sqnr_db, 1), _task(row), _num(row.convert_s, 1), _num(row.peak_rss_mib, 0)]
    return cells


def render_text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A fixed-width text table; text columns left-aligned, numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def numeric(i: int) -> bool:
        return all(_looks_numeric(r[i]) for r in rows if r[i])

    align = [numeric(i) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if a else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(r) for r in rows)])


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- headline ----------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class ToolSummary:
    """One tool across the real models."""

    tool: str
    converted: int
    attempted: int
    median_size_ratio: float | None
    median_speedup: dict[int, float | None]
    median_cosine: float | None
    median_sqnr_db: float | None


def summarize(
    rows: Sequence[Row], tools: Sequence[str], models: Sequence[str], threads: Sequence[int]
) -> list[ToolSummary]:
    """Per tool: how many of ``models`` it converted and the medians of its figures over those."""
    summaries = []
    for tool in tools:
        mine = [r for r in rows if r.tool == tool and r.model in models and not (r.error or "").startswith("skipped")]
        ok = [r for r in mine if r.ok]
        summaries.append(
            ToolSummary(
                tool=tool,
                converted=len(ok),
                attempted=len(mine),
                median_size_ratio=_median([r.size_ratio for r in ok]),
                median_speedup={t: _median([r.speedup.get(t) for r in ok]) for t in threads},
                median_cosine=_median([r.cosine for r in ok]),
                median_sqnr_db=_median([r.sqnr_db for r in ok]),
            )
        )
    return summaries


def summary_table(summaries: Sequence[ToolSummary], threads: Sequence[int]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the per-tool summary."""
    headers = ["tool", "converted", "median size"] + [f"median x@{t}t" for t in threads]
    headers += ["median cosine", "median SQNR dB"]
    cells = []
    for s in summaries:
        cells.append(
            [s.tool, f"{s.converted}/{s.attempted}", _num(s.median_size_ratio, 3)]
            + [_num(s.median_speedup[t], 2) for t in threads]
            + [_cosine(s.median_cosine), _num(s.median_sqnr_db, 1)]
        )
    return headers, cells


def _describe(summary: ToolSummary, threads: Sequence[int]) -> str:
    """Median size, speedups and fidelity of one tool, or why there are none."""
    if summary.converted == 0:
        return f"{summary.tool} converted none"
    text = f"{summary.tool} median size {_num(summary.median_size_ratio, 3)}x"
    text += "".join(f", speedup {_num(summary.median_speedup[t], 2)}x@{t}t" for t in threads)
    return text + f", cosine {_cosine(summary.median_cosine)}, SQNR {_num(summary.median_sqnr_db, 1)} dB"


def headline(summaries: Sequence[ToolSummary], n_models: int, threads: Sequence[int]) -> str:
    """One sentence: how many models each tool converted, then ptq's median size, speedup and fidelity."""
    converted = ", ".join(f"{s.tool} {s.converted}" for s in summaries)
    parts = [f"On {n_models} real models, converted and running: {converted}"]
    parts += [_describe(s, threads) for s in summaries if s.tool.startswith("ptq")]
    return "; ".join(parts) + "."


def head_to_head(
    rows: Sequence[Row], references: dict[str, str], models: Sequence[str], threads: Sequence[int]
) -> list[str]:
    """Per peer, on the models both it and its ptq tool converted: median ptq/peer latency and both SQNRs."""
    by_key = {(r.model, r.tool): r for r in rows if r.ok}
    lines = []
    for peer, mine in references.items():
        pairs = [(by_key[(m, mine)], by_key[(m, peer)]) for m in models if (m, mine) in by_key and (m, peer) in by_key]
        if not any(r.tool == peer for r in rows):
            continue
        if not pairs:
            lines.append(f"{mine} vs {peer}: no model converted by both")
            continue
        ratios = ", ".join(f"{_num(_median([p.ptq_ratio.get(t) for _, p in pairs]), 2)}@{t}t" for t in threads)
        lines.append(
            f"{mine} vs {peer} on the {len(pairs)} models both convert ({', '.join(m.model for m, _ in pairs)}):"
            f" median ptq/peer latency {ratios}; median SQNR {_num(_median([m.sqnr_db for m, _ in pairs]), 1)}"
            f" vs {_num(_median([p.sqnr_db for _, p in pairs]), 1)} dB; median size"
            f" {_num(_median([m.size_ratio for m, _ in pairs]), 3)} vs {_num(_median([p.size_ratio for _, p in pairs]), 3)}"
        )
    return lines


# --- environment -------------------------------------------------------------------------------


def cpu_description(cpuinfo_text: str) -> tuple[str, list[str]]:
    """The CPU model name and the int8-relevant flags present, from the text of /proc/cpuinfo."""
    name, flags = platform.processor() or "unknown", set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name in ("unknown", platform.processor()):
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name, [f for f in INT8_CPU_FLAGS if f in flags]


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of ``names`` ("not installed" if absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --- ptq's losses ------------------------------------------------------------------------------

# Latency differences below this fraction are within run-to-run noise on a shared 2-core machine.
LATENCY_NOISE = 0.03
SIZE_NOISE = 0.01  # a file less than 1% smaller differs by metadata, not by what is quantized
SQNR_NOISE_DB = 0.1
LOWER_IS_BETTER = {"CER"}


def ptq_losses(rows: Sequence[Row], references: dict[str, str], threads: Sequence[int]) -> list[str]:
    """Every case where a peer beats the ptq tool it is compared with, one line each.

    ``references`` maps peer tool -> ptq tool. Counted: ptq failed where the peer converted; the
    peer's file is smaller by more than ``SIZE_NOISE``; the peer is faster by more than
    ``LATENCY_NOISE``; its SQNR is higher by more than ``SQNR_NOISE_DB``; its task metric is better.
    """
    by_key = {(r.model, r.tool): r for r in rows}
    losses = []
    for peer in (r for r in rows if r.tool in references and r.ok):
        mine = by_key.get((peer.model, references[peer.tool]))
        if mine is None:
            continue
        where = f"{peer.model}: {peer.tool} vs {mine.tool}"
        if not mine.ok:
            losses.append(f"{where}: {mine.tool} {mine.error}, {peer.tool} converted")
            continue
        if (
            peer.size_ratio is not None
            and mine.size_ratio is not None
            and peer.size_ratio < mine.size_ratio * (1 - SIZE_NOISE)
        ):
            losses.append(f"{where}: smaller file ({peer.size_ratio:.3f} vs {mine.size_ratio:.3f} of float)")
        for t in threads:
            ratio = peer.ptq_ratio.get(t)
            if ratio is not None and ratio > 1 + LATENCY_NOISE:
                losses.append(
                    f"{where}: faster at {t} thread(s) ({peer.latency_ms[t]:.2f} vs {mine.latency_ms[t]:.2f} ms,"
                    f" ptq/peer {ratio:.2f})"
                )
        if peer.sqnr_db is not None and mine.sqnr_db is not None and peer.sqnr_db > mine.sqnr_db + SQNR_NOISE_DB:
            losses.append(
                f"{where}: higher SQNR ({peer.sqnr_db:.1f} vs {mine.sqnr_db:.1f} dB;"
                f" cosine {peer.cosine:.5f} vs {mine.cosine:.5f})"
            )
        if peer.task_value is not None and mine.task_value is not None and peer.task_value != mine.task_value:
            better = (
                peer.task_value < mine.task_value
                if peer.task_name in LOWER_IS_BETTER
                else peer.task_value > mine.task_value
            )
            if better:
                losses.append(f"{where}: better {peer.task_name} ({peer.task_value:.4f} vs {mine.task_value:.4f})")
    return losses


# --- whole reports -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """What a report needs to say about the run besides its rows."""

    command: str
    started_at: str  # ISO date-time, UTC
    elapsed_s: float
    models: tuple[str, ...]
    real_models: tuple[str, ...]
    tools: tuple[str, ...]
    references: dict[str, str]  # peer tool -> ptq tool it is compared with
    threads: tuple[int, ...]
    settings_lines: tuple[str, ...]  # how many samples, rounds...: one markdown bullet each
    tool_lines: tuple[str, ...]  # what each tool ran exactly
    cpu_name: str
    cpu_flags: tuple[str, ...]
    cores: int
    versions: dict[str, str]


def results_table(rows: Sequence[Row], threads: Sequence[int]) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, cells and footnotes (one per failed or skipped row, "[n] model tool: error")."""
    cells, footnotes = [], []
    for row in rows:
        footnote = None
        if row.error is not None:
            footnotes.append(f"[{len(footnotes) + 1}] {row.model} {row.tool}: {row.error}")
            footnote = len(footnotes)
        cells.append(table_cells(row, threads, footnote))
    return table_columns(threads), cells, footnotes


def note_lines(rows: Sequence[Row]) -> list[str]:
    """The notes behind every "ok*" status, one line each."""
    return [f"{r.model} {r.tool}: {note}" for r in rows for note in r.notes]


def render_console(rows: Sequence[Row], info: RunInfo) -> str:
    """The text printed at the end of a run: command, table, notes, summary, headline."""
    summaries = summarize(rows, info.tools, info.real_models, info.threads)
    s_headers, s_cells = summary_table(summaries, info.threads)
    headers, cells, footnotes = results_table(rows, info.threads)
    notes = note_lines(rows)
    return "\n\n".join(
        [
            f"$ {info.command}    ({info.elapsed_s / 60:.1f} min)",
            render_text_table(headers, cells),
            *(["\n".join(footnotes)] if footnotes else []),
            *(["ok* " + "\nok* ".join(notes)] if notes else []),
            render_text_table(s_headers, s_cells),
            "Headline: " + headline(summaries, len(info.real_models), info.threads),
            "\n".join(head_to_head(rows, info.references, info.real_models, info.threads)),
        ]
    )


def reading_guide() -> list[str]:
    """What each column of the results table means, as markdown bullets."""
    return [
        (
            "- size: int8 file bytes / float file bytes (external data included). The light-* float files hold"
            " no weights (ConstantOfShape nodes make them at load time), so a converter that stores the folded"
            " weights, even as int8, writes a larger file."
        ),
        (
            "- ms@Nt: median latency in ms with N intra-op threads (sequential execution, ORT_ENABLE_ALL, CPU"
            " provider, no spin-waiting) on the first eval sample; x@Nt: float latency / this latency."
        ),
        (
            "- ptq/peer@Nt: latency of the ptq tool in the same mode (ptq-static for static peers, ptq-dynamic"
            " for ort-dynamic) / the peer's latency: below 1 means ptq is faster."
        ),
        (
            "- cosine, SQNR dB: all outputs of all eval samples concatenated, vs the float model's;"
            " SQNR = 10 log10(sum f^2 / sum (f - q)^2)."
        ),
        (
            "- task metric, vs the float model's own results (not ground truth): CER = character error rate of"
            " the greedy CTC decode (lower is better); top1 = top-1 agreement; IoU = IoU of the probability map"
            " binarised at 0.3; boxF1 = F1 of boxes (score > 0.25, NMS 0.45) matched at IoU >= 0.5 with the"
            " same class; embcos = mean cosine of mean-pooled sentence embeddings; VADagree = share of 32 ms"
            " frames whose speech decision (probability > 0.5) agrees. light-* models: cosine/SQNR"
            " only (their weights are constants, so their outputs carry no accuracy)."
        ),
        (
            "- convert s: the conversion call in a fresh child process (its imports excluded); peak RSS MiB:"
            " the peak resident set (VmHWM) of that child process, interpreter and imports included."
        ),
        (
            f"- Where ptq loses: a peer file smaller by more than {SIZE_NOISE:.0%}, a peer faster by more than"
            f" {LATENCY_NOISE:.0%}, SQNR higher by more than {SQNR_NOISE_DB} dB, or a better task metric."
        ),
    ]


def render_results_md(rows: Sequence[Row], info: RunInfo) -> str:
    """The whole of RESULTS.md."""
    summaries = summarize(rows, info.tools, info.real_models, info.threads)
    s_headers, s_cells = summary_table(summaries, info.threads)
    headers, cells, footnotes = results_table(rows, info.threads)
    losses = ptq_losses(rows, info.references, info.threads)
    notes = note_lines(rows)
    versions = ", ".join(f"{name} {version}" for name, version in info.versions.items())
    lines = [
        "# ptq vs onnxruntime's quantizer (and NNCF)",
        "",
        "Generated by the command below; every figure in this file comes from that one run.",
        "",
        "```",
        info.command,
        "```",
        "",
        f"- Date: {info.started_at} (run took {info.elapsed_s / 60:.1f} min)",
        f"- CPU: {info.cpu_name}, {info.cores} cores visible; int8-relevant flags: {', '.join(info.cpu_flags) or 'none'}",
        f"- Versions: {versions}",
        "",
        "## Headline",
        "",
        headline(summaries, len(info.real_models), info.threads),
        "",
        *[f"- {line}" for line in head_to_head(rows, info.references, info.real_models, info.threads)],
        "",
        f"Per tool over the real models ({', '.join(info.real_models)}); medians over the models each tool converted:",
        "",
        render_markdown_table(s_headers, s_cells),
        "",
        "## Results",
        "",
        render_markdown_table(headers, cells),
        "",
        *(["Failed or skipped:", "", *[f"- {line}" for line in footnotes], ""] if footnotes else []),
        *(["ok* = converted, with a note:", "", *[f"- {line}" for line in notes], ""] if notes else []),
        "## Where ptq loses to a peer",
        "",
        *([f"- {line}" for line in losses] or ["- nowhere in this run"]),
        "",
        "## How to read the table",
        "",
        *reading_guide(),
        *[f"- {line}" for line in info.settings_lines],
        "",
        "## Tools",
        "",
        *[f"- {line}" for line in info.tool_lines],
        "",
    ]
    return "\n".join(lines)
