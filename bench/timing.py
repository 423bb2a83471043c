"""Latency and outputs of models under onnxruntime, measured fairly side by side.

All variants of one model (float and every int8 file) are loaded in this one process with the
same session options, then run round robin: each round runs every variant ``runs_per_round``
times, starting with a different variant each round so no variant always follows the same one.
The reported figure is the median over all timed runs, after a warm-up of every variant.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ptq.report.measure import session_options  # time exactly as `ptq convert` reports


@dataclass(frozen=True)
class TimingPlan:
    """How much to run: warm-up runs per variant, rounds, timed runs per variant per round."""

    warmup_runs: int = 3
    rounds: int = 10
    runs_per_round: int = 3


def open_session(path: Path, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``path``."""
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def run_outputs(session: ort.InferenceSession, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """The session's outputs for each feed, in graph output order."""
    return [session.run(None, feed) for feed in feeds]


def interleaved_latency_ms(
    sessions: Mapping[str, ort.InferenceSession],
    feed: dict[str, np.ndarray],
    plan: TimingPlan,
    clock=time.perf_counter_ns,
) -> dict[str, float]:
    """Median latency in milliseconds of each session on ``feed``, runs interleaved round robin.

    ``clock``: wall time by default; ``time.thread_time_ns`` counts the CPU time of this thread
    only, all of a run's work at 1 intra-op thread, without the time other processes held the core."""
    names = list(sessions)
    for name in names:
        for _ in range(plan.warmup_runs):
            sessions[name].run(None, feed)
    samples_ms: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(plan.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            session = sessions[name]
            for _ in range(plan.runs_per_round):
                started = clock()
                session.run(None, feed)
                samples_ms[name].append((clock() - started) / 1e6)
    return {name: statistics.median(values) for name, values in samples_ms.items()}


def _busy_cpu_s() -> float | None:
    """CPU seconds all processes have spent busy since boot (from /proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / 100.0  # USER_HZ is 100 on Linux


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class BackgroundLoad:
    """Average number of cores other processes kept busy while the block ran (``cores``, None if unknown).

    Latency on a shared machine is only as good as the machine is quiet; this says how quiet it was.
    """

    def __enter__(self) -> BackgroundLoad:  # noqa: PYI034 - a plain class, not meant for subclassing
        self.cores: float | None = None
        self._start = (time.perf_counter(), _busy_cpu_s(), _own_cpu_s())
        return self

    def __exit__(self, *exc_info) -> None:
        wall_start, busy_start, own_start = self._start
        busy_end = _busy_cpu_s()
        wall_s = time.perf_counter() - wall_start
        if busy_start is None or busy_end is None or wall_s <= 0:
            return
        others_s = (busy_end - busy_start) - (_own_cpu_s() - own_start)
        self.cores = max(0.0, others_s / wall_s)
