"""Fidelity targets (issue 14): ptq's search against the per-layer-SQNR baseline, on real models where plain int8
misses a strict target.

For each ``model:target`` (target ``cos=C`` or ``sqnr=DB``): plain int8 (ptq's defaults), ptq with the target, and a
baseline that takes the same regions out of int8 in order of their per-layer SQNR (each region op's output in the
plain int8 model against float, on the same validation samples, worst first: the ranking of onnxruntime's
``qdq_loss_debug`` and of per-layer tables) until the target holds, by the same prefix search without pruning. All
three are converted from the same calibration folder with the same validation split; their figures are then measured
on the eval split (never calibrated on), and their latency interleaved with the float model (1 thread, median of
``--runs`` rounds; the machine is shared and noisy: ratios within one run are what to compare).

    python -m bench.targets minilm-l6:cos=0.999 ppocr-det:sqnr=30 ...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from bench import heldout
from ptq.api import convert
from ptq.config import Config
from ptq.report.measure import _probes, _with_outputs, open_session, time_models
from ptq.tuning.scoring import Scoring
from ptq.tuning import sensitivity, targets
from ptq.tuning.figures import Figures, figures_of
from ptq.tuning.sensitivity import FLOAT, Placement


def layer_sqnr(scoring: Scoring, candidate: onnx.ModelProto) -> dict[str, float]:
    """SQNR of every tensor of the float model found in ``candidate`` (int8 values dequantized), on the scoring samples."""
    probes = _probes(scoring.model, candidate)
    ref = open_session(_with_outputs(onnx.ModelProto.FromString(scoring.model.SerializeToString()), [p.tensor for p, _, _ in probes]))
    cand = open_session(_with_outputs(candidate, [p.read for p, _, _ in probes]))
    ref_names, cand_names = [o.name for o in ref.get_outputs()], [o.name for o in cand.get_outputs()]
    signal, noise = {}, {}
    for feed in scoring.feeds:
        r = {**feed, **dict(zip(ref_names, ref.run(None, feed)))}
        c = {**feed, **dict(zip(cand_names, cand.run(None, feed)))}
        for probe, _, _ in probes:
            value = np.asarray(c[probe.read], dtype=np.float64)
            if probe.scale is not None:
                value = (value - probe.zero_point) * probe.scale
            reference = np.asarray(r[probe.tensor], dtype=np.float64)
            if reference.shape != value.shape:
                continue
            signal[probe.tensor] = signal.get(probe.tensor, 0.0) + float(np.sum(reference**2))
            noise[probe.tensor] = noise.get(probe.tensor, 0.0) + float(np.sum((reference - value) ** 2))
    return {t: 10 * np.log10(signal[t] / noise[t]) if noise[t] > 0 else 200.0 for t in signal if signal[t] > 0}


def baseline_order(scoring: Scoring, plan, ranges, config) -> list[Placement]:
    """Region ops worst per-layer SQNR first (an op whose output is not probed: its single reader's, e.g. a Relu
    folded into its QuantizeLinear; ops with neither last)."""
    sqnr = layer_sqnr(scoring, scoring.candidate(plan, ranges, config))
    readers: dict[str, list] = {}
    for node in scoring.model.graph.node:
        for t in node.input:
            readers.setdefault(t, []).append(node)
    nodes = {n.name: n for n in scoring.model.graph.node}
    keyed = []
    for index, (name, _) in enumerate(sensitivity.region_ops(scoring.model, plan)):
        out = nodes[name].output[0]
        value = sqnr.get(out)
        if value is None and len(readers.get(out, [])) == 1:
            value = sqnr.get(readers[out][0].output[0])
        keyed.append((value if value is not None else np.inf, index, Placement(name, FLOAT, 0.0)))
    return [p for _, _, p in sorted(keyed, key=lambda k: (k[0], k[1]))]


def parse_target(text: str) -> dict:
    kind, _, value = text.partition("=")
    return {"cos": {"target_cosine": float(value)}, "sqnr": {"target_sqnr": float(value)}}[kind]


def run(spec: str, root: Path, runs: int) -> str:
    name, _, target_text = spec.partition(":")
    goal = parse_target(target_text)
    model_path, folder, eval_feeds = heldout.model_and_data(name, root)
    reference = heldout.outputs_of(model_path, eval_feeds)
    names = [o.name for o in open_session(model_path).get_outputs() if o.type == "tensor(float)"]
    rows, paths = {}, {"float": model_path}

    def measure(label: str, result, seconds: float) -> None:
        got = heldout.outputs_of(result.outputs.onnx, eval_feeds)
        search = result.accuracy
        rows[label] = (figures_of(names, reference, got), len(search.placements) if search else 0, seconds, search)
        paths[label] = result.outputs.onnx
        print(f"  {name} {label}: {rows[label][0].describe()}, {rows[label][1]} regions, {seconds:.0f} s", file=sys.stderr)

    started = time.perf_counter()
    measure("int8", convert(model_path, Config(calibration_data=folder, output=root / f"{name}.int8.onnx", write_ort=False)), time.perf_counter() - started)
    started = time.perf_counter()
    ours = convert(model_path, Config(calibration_data=folder, output=root / f"{name}.target.onnx", write_ort=False, **goal))
    measure("ptq search", ours, time.perf_counter() - started)

    original = targets.search

    def by_layer_sqnr(scoring, plan, ranges, config, recipe, target, *args, **kwargs):
        kwargs.update(ranked=baseline_order(scoring, plan, ranges, config), prune=False)
        return original(scoring, plan, ranges, config, recipe, target, *args, **kwargs)

    targets.search = by_layer_sqnr
    try:
        started = time.perf_counter()
        base = convert(model_path, Config(calibration_data=folder, output=root / f"{name}.baseline.onnx", write_ort=False, **goal))
        measure("per-layer SQNR order", base, time.perf_counter() - started)
    finally:
        targets.search = original
    latency = time_models(list(paths.items()), eval_feeds[0], runs=runs, warmup=3)
    medians = {s.label: s.median_ms for s in latency.models}
    lines = []
    for label, (fig, count, seconds, search) in rows.items():
        on_val = f"{search.figures.describe()} ({'met' if search.met else 'NOT met'})" if search else "-"
        chosen = search.chosen_trial() if search else None
        margin = f"{chosen.margin_db:.2f} (spread {chosen.spread_db:.2f})" if chosen else "-"
        held = "met" if search and search.target.met(fig) else ("MISSED" if search else "-")
        trials = f"{search.trials} in {search.seconds:.0f} s" if search else "-"
        lines.append(
            f"| {name} | {target_text} | {label} | {count} | {on_val} | {margin} | {fig.describe()} ({held}) | {medians[label]:.2f} "
            f"({medians[label] / medians['float']:.2f}x float) | {trials} | {seconds:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.targets", description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", help="model:cos=C or model:sqnr=DB")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    print("| model | target | recipe | regions out of int8 | on validation | margin dB (spread) | held out (eval split) |"
          " latency ms (1 thread, median) | search: trials, s | convert s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="ptq-targets-") as tmp:
        for spec in args.specs:
            print(run(spec, Path(tmp), args.runs), flush=True)


if __name__ == "__main__":
    main()
