"""Calibration memory and time: ptq vs onnxruntime's ``quantize_static`` with 16 and 256 samples.

    python -m bench.calib            # ppocr-det, yolov8n-nudenet (and minilm-l6 if cached): 16 vs 256
    python -m bench.calib --quick    # ppocr-det only, 16 vs 64

Each conversion runs in a child process (``bench.convert_one``: the recipes of ``bench.peers``,
``ptq-static`` with ptq's defaults and ``ort-static``, onnxruntime's recommended recipe), which
reports its own peak RSS (VmHWM) and the wall time of the recipe call. Both tools get the same
samples: the zoo's first N calibration samples (sample i is the same whatever N), one ``.npz``
each. Where the zoo has fewer than N (minilm-l6: 123 sentences), the available samples are
repeated with a deterministic light augmentation (float inputs scaled by 1 +/- a few percent;
integer inputs, token ids, repeated unchanged) and the table says so.

The issue's targets, checked in the output: ptq's peak RSS with 256 samples within 15% of its
peak with 16, and ptq's wall time no slower than the peer's. The table goes to bench/CALIB_RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import zoo
from bench.convert_one import VERDICT_PREFIX, Conversion, _error_of, _read_verdict, _wait_with_timeout, one_line, peak_rss_kib, run_conversion

HERE = Path(__file__).resolve().parent
MODELS = ("ppocr-det", "yolov8n-nudenet")
OPTIONAL = ("minilm-l6",)  # only when already in the cache (its export needs torch)
# ptq-static: ptq.convert with its defaults (bench.peers); ptq-percentile: the same with the
# calibration method fixed to percentile (one calibration pass, no method search), run by this
# module's own child entry; ort-static: onnxruntime's recommended recipe (bench.peers).
TOOLS = ("ptq-static", "ptq-percentile", "ort-static")
PEER = "ort-static"
RSS_TARGET = 1.15  # ptq RSS(256) / RSS(16)
TIMEOUT_S = 3600


@dataclass(frozen=True)
class Row:
    model: str
    tool: str
    small: Conversion
    large: Conversion

    @property
    def rss_ratio(self) -> float:
        return self.large.peak_rss_kib / self.small.peak_rss_kib


def write_samples(model: str, folder: Path, n: int) -> str:
    """The zoo's first ``n`` calibration samples of ``model`` in ``folder``; a note if augmented."""
    try:
        zoo.write_calibration_dir(model, folder, "calib", n)
        return ""
    except ValueError:
        pass
    base = zoo.inputs(model, "calib", None if model != "minilm-l6" else 123)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("sample_*.npz"):
        old.unlink()
    for i in range(n):
        feed, round_ = base[i % len(base)], i // len(base)
        scale = 1.0 + 0.02 * ((round_ % 5) - 2) if round_ else 1.0
        augmented = {k: (v * np.float32(scale)).astype(v.dtype) if v.dtype.kind == "f" else v for k, v in feed.items()}
        np.savez(folder / f"sample_{i:03d}.npz", **augmented)
    return f"{model}: the zoo has {len(base)} calib samples; {n} made by repeating them (float inputs scaled by 0.96-1.04, integer inputs unchanged)"


def run_percentile(tool: str, model: Path, output: Path, calibration_dir: Path, timeout_s: float, log_path: Path) -> Conversion:
    """``bench.convert_one.run_conversion`` for ptq with ``calibration_method="percentile"``,
    through this module's child entry (``python -m bench.calib --child MODEL OUTPUT DIR``)."""
    import os
    import subprocess

    command = [sys.executable, "-m", "bench.calib", "--child", str(model), str(output), str(calibration_dir)]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parent)
        status, rusage, timed_out = _wait_with_timeout(child.pid, timeout_s)
    child.returncode = os.waitstatus_to_exitcode(status)
    verdict = _read_verdict(log_path)
    error = _error_of(verdict, child.returncode, timed_out, timeout_s, log_path)
    return Conversion(tool, output if error is None else None, error, float(verdict.get("convert_s", float("nan"))),
                      time.perf_counter() - started, int(verdict.get("peak_rss_kib") or rusage.ru_maxrss))  # fmt: skip


def _child(model: Path, output: Path, calibration_dir: Path) -> int:
    import json

    import ptq

    started = time.perf_counter()
    try:
        ptq.convert(model, ptq.Config(output=output, calibration_data=calibration_dir, calibration_method="percentile"))
        verdict = {"error": None}
    except BaseException as error:  # noqa: BLE001 - a failure is a result
        verdict = {"error": one_line(error)}
    verdict["convert_s"] = time.perf_counter() - started
    verdict["peak_rss_kib"] = peak_rss_kib()
    print(VERDICT_PREFIX + json.dumps(verdict), flush=True)
    return 0


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run(models: list[str], sizes: tuple[int, int], work: Path, log) -> tuple[list[Row], list[str]]:
    rows, notes = [], []
    for model in models:
        path = zoo.fetch_model(model)
        folders = {}
        for n in sizes:
            folders[n] = work / model / f"calib{n}"
            note = write_samples(model, folders[n], n)
            if note and note not in notes:
                notes.append(note)
        for tool in TOOLS:
            done = {}
            for n in sizes:
                out = work / model / f"{tool}-{n}.onnx"
                log(f"{model} {tool} {n} samples ...")
                convert = run_conversion if tool != "ptq-percentile" else run_percentile
                done[n] = convert(tool, path, out, folders[n], TIMEOUT_S, work / model / f"{tool}-{n}.log")
                c = done[n]
                log(f"  {'ok' if c.ok else c.error}: {c.convert_s:.1f} s, peak RSS {c.peak_rss_kib / 1024:.0f} MiB")
            rows.append(Row(model, tool, done[sizes[0]], done[sizes[1]]))
    return rows, notes


def render(rows: list[Row], sizes: tuple[int, int], notes: list[str], command: str, seconds: float) -> str:
    small, large = sizes
    mib = lambda c: f"{c.peak_rss_kib / 1024:.0f}"  # noqa: E731
    lines = [
        "# Calibration memory and time: ptq vs onnxruntime's quantize_static",
        "",
        "Generated by the command below; every figure comes from that one run.",
        "",
        "```",
        command,
        "```",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC (run took {seconds / 60:.1f} min)",
        f"- CPU: {cpu_name()}, {len(__import__('os').sched_getaffinity(0))} cores visible; other work may have shared the machine",
        f"- Versions: {versions()}",
        "- Each conversion in its own child process (`bench.convert_one`): peak RSS is the child's VmHWM, time the"
        " recipe call (load, calibrate, quantize, write). ptq-static: ptq's defaults at the time of the run"
        " (writes .onnx, .ort and .ops.json); ptq-percentile: the same with `calibration_method=\"percentile\"`"
        " (one calibration pass, no method search); ort-static: `quant_pre_process` + `quantize_static(QDQ, per-channel, U8S8, MinMax)` (bench/peers.py).",
        "",
        f"| model | tool | peak RSS {small} | peak RSS {large} | RSS {large}/{small} | time {small} | time {large} |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        def cell(c: Conversion, text: str) -> str:
            return text if c.ok else f"failed: {c.error}"
        lines.append(
            f"| {r.model} | {r.tool} | {cell(r.small, mib(r.small) + ' MiB')} | {cell(r.large, mib(r.large) + ' MiB')}"
            f" | {r.rss_ratio:.2f} | {cell(r.small, f'{r.small.convert_s:.1f} s')} | {cell(r.large, f'{r.large.convert_s:.1f} s')} |"
        )
    lines += ["", f"Ratios ({large} samples unless marked):", "",
              f"| model | ptq RSS {large}/{small} | peer RSS {large}/{small} | ptq/peer time {small} | ptq/peer time {large} | ptq/peer peak RSS {large} |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    verdicts = []
    for model in dict.fromkeys(r.model for r in rows):
        peer = next(r for r in rows if r.model == model and r.tool == PEER)
        for ptq_row in (r for r in rows if r.model == model and r.tool != PEER):
            lines.append(
                f"| {model} ({ptq_row.tool}) | {ptq_row.rss_ratio:.2f} | {peer.rss_ratio:.2f}"
                f" | {ptq_row.small.convert_s / peer.small.convert_s:.2f} | {ptq_row.large.convert_s / peer.large.convert_s:.2f}"
                f" | {ptq_row.large.peak_rss_kib / peer.large.peak_rss_kib:.2f} |"
            )
            rss_ok = ptq_row.rss_ratio <= RSS_TARGET
            time_ok = ptq_row.large.convert_s <= peer.large.convert_s
            verdicts.append(
                f"- {model}, {ptq_row.tool}: peak RSS({large}) within 15% of RSS({small}): {'met' if rss_ok else 'NOT met'}"
                f" ({(ptq_row.rss_ratio - 1) * 100:+.1f}%); no slower than {PEER} with {large} samples:"
                f" {'met' if time_ok else 'NOT met'} ({ptq_row.large.convert_s:.1f} s vs {peer.large.convert_s:.1f} s)"
            )
    lines += ["", "Targets:", "", *verdicts]
    if notes:
        lines += ["", "Samples:", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def versions() -> str:
    from importlib import metadata

    parts = [f"python {platform.python_version()}"]
    for package in ("ptq", "onnxruntime", "onnx", "numpy"):
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calib", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="ppocr-det only, 16 vs 64 samples")
    parser.add_argument("--output", type=Path, default=HERE / "CALIB_RESULTS.md")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "OUTPUT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(*(Path(a) for a in args.child))
    sizes = (16, 64) if args.quick else (16, 256)
    models = ["ppocr-det"] if args.quick else [*MODELS, *(m for m in OPTIONAL if (zoo.CACHE_DIR / "models" / f"{m}.onnx").exists())]
    command = "python -m bench.calib" + (" --quick" if args.quick else "")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ptq-bench-calib-"))
    try:
        rows, notes = run(models, sizes, work, lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = render(rows, sizes, notes, command, time.perf_counter() - started)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
