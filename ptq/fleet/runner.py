"""Convert every model of a project: each in its own process (or Ray task), ``jobs`` at a time;
one model's failure is recorded and the others go on.

A worker gets a plain dict (``ModelEntry.job``: paths, options, gates), converts, measures and
writes that model's outputs and its own reports (``<output stem>.report.json`` and ``.md``
beside the output), and returns a plain dict of figures (``run_one``). The driver only gathers
those dicts: no model or sample goes through it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ptq.errors import EXIT_GATE_FAILED, EXIT_INTERNAL, EXIT_OK, PtqError

CONFIG_KEYS = (
    "output", "calibration_data", "calibration_samples", "calibration_method", "percentile", "weights", "activations",
    "per_channel", "reduce_range", "exclude", "hybrid", "weight_range", "equalize", "equalize_activations",
    "smoothquant", "bias_correction", "auto_fallback", "auto_hybrid", "auto_smoothquant", "write_ort", "workers",
)  # fmt: skip
MEASURE_KEYS = ("threads", "runs", "warmup")

# A model's status: converted and every gate passed; converted with a failed gate; not converted.
OK, GATE_FAILED, FAILED = "ok", "gate failed", "failed"


def run_one(job: dict) -> dict:
    """Convert, measure and report one model (``ModelEntry.job``); never raises: a failure comes
    back as ``status: failed`` with the error line and its exit code."""
    from ptq import report as reporting
    from ptq.api import convert
    from ptq.config import Config, OutputPaths

    started = time.perf_counter()
    options = job["options"]
    out: dict = {"name": job["name"], "path": job["path"], "status": FAILED, "error": None, "exit_code": EXIT_INTERNAL}
    try:
        path = Path(job["path"])
        config = Config(**{k: options[k] for k in CONFIG_KEYS if k in options})
        outputs = OutputPaths.for_output(config.output) if config.output else OutputPaths.default_for(path)
        stem = outputs.onnx.name.removesuffix(".onnx")
        reports = [outputs.onnx.with_name(stem + ".report.json"), outputs.onnx.with_name(stem + ".report.md")]
        measure = reporting.MeasureOptions(
            latency=options.get("latency", True), samples=options.get("eval_samples"), thresholds=dict(job["gates"]),
            **{k: options[k] for k in MEASURE_KEYS if k in options},
        )  # fmt: skip
        result = convert(path, config)
        out["outputs"] = [str(p) for p in (result.outputs.onnx, result.outputs.ort, result.outputs.ops) if p.exists()]
        data = reporting.choose_data(
            path, eval_data=Path(options["eval_data"]) if options.get("eval_data") else None,
            calibration_data=config.calibration_data, samples=measure.samples, image_format=config.image_format,
        )  # fmt: skip
        report = reporting.report_conversion(result, data, measure)
        for report_path in reports:
            reporting.write_report(report, report_path)
        summary = report.summary()
        out.update(
            status=OK if report.gates_passed else GATE_FAILED,
            exit_code=EXIT_OK if report.gates_passed else EXIT_GATE_FAILED,
            mode=result.mode,
            calibration_method=result.calibration_method,
            calibration_samples=result.calibration_samples,
            float_size_bytes=result.float_size_bytes,
            int8_size_bytes=result.int8_size_bytes,
            size_ratio=summary.get("size_ratio"),
            float_ms=summary.get("reference_median_ms"),
            int8_ms=summary.get("candidate_median_ms"),
            speedup=summary.get("speedup"),
            cosine=summary.get("cosine"),
            sqnr_db=summary.get("sqnr_db"),
            top1=summary.get("top1"),
            data=report.data.describe() if report.data is not None else None,
            gates=[g.to_json() for g in report.gates],
            reports=[str(p) for p in reports],
        )
    except PtqError as exc:
        out.update(error=str(exc), exit_code=exc.exit_code)
    except Exception as exc:  # a bug: one line, the others go on
        out.update(error=f"internal error: {type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8))
    out["seconds"] = time.perf_counter() - started
    return _plain(out)


def _plain(value):
    """Floats that JSON can carry (non-finite as strings), for the worker's answer line."""
    from ptq.report.build import json_safe

    return json_safe(value)


@dataclass
class FleetResult:
    """Every model's result dict (in project order) and the fleet's wall time."""

    models: list[dict]
    seconds: float
    jobs: int
    backend: str  # "processes" | "ray"
    file: str = ""
    created: str = ""
    totals: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [m for m in self.models if m["status"] == FAILED]

    @property
    def gate_failed(self) -> list[dict]:
        return [m for m in self.models if m["status"] == GATE_FAILED]


def run_fleet(
    jobs_list: list[dict], jobs: int = 1, ray_address: str | None = None, progress: Callable[[dict, int, int], None] | None = None
) -> tuple[list[dict], str]:
    """``run_one`` for every job, ``jobs`` processes at a time (or as Ray tasks); results in job
    order. ``progress(result, done, total)`` as each model finishes."""
    if ray_address is not None:
        from ptq import cluster

        results = cluster.run_tasks("ptq.fleet.runner", "run_one", jobs_list, ray_address)
        if progress is not None:
            for i, r in enumerate(results):
                progress(r, i + 1, len(results))
        return results, "ray"
    lock = threading.Lock()
    done = 0
    running: set[subprocess.Popen] = set()

    def one(job: dict) -> dict:
        nonlocal done
        result = _in_process(job, running, lock)
        with lock:
            done += 1
            if progress is not None:
                progress(result, done, len(jobs_list))
        return result

    pool = ThreadPoolExecutor(max(1, jobs))
    try:
        futures = [pool.submit(one, job) for job in jobs_list]
        return [f.result() for f in futures], "processes"
    except BaseException:  # Ctrl-C or SIGTERM: stop the workers, start no more
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            for process in running:
                process.kill()
        raise
    finally:
        pool.shutdown(wait=True)


def _in_process(job: dict, running: set, lock) -> dict:
    """``run_one(job)`` in a fresh ``python -m ptq.fleet.runner`` (JSON in on stdin, out on the
    last stdout line); a crashed worker (killed, out of memory) is recorded as that model's failure."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ptq.fleet.runner"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with lock:
        running.add(process)
    try:
        stdout, stderr = process.communicate(json.dumps(job))
    finally:
        with lock:
            running.discard(process)
    for line in reversed(stdout.splitlines()):
        if line.startswith("result "):
            return json.loads(line[len("result ") :])
    last = (stderr.strip().splitlines() or [f"exit code {process.returncode}"])[-1]
    return {"name": job["name"], "path": job["path"], "status": FAILED, "exit_code": EXIT_INTERNAL,
            "error": f"the worker process died: {last}", "seconds": 0.0}  # fmt: skip


if __name__ == "__main__":
    print("result " + json.dumps(run_one(json.loads(sys.stdin.read()))), flush=True)
