"""How many validation samples does a scored choice need to be stable? (issue 14)

Per model: ranges fitted once on the fitting part of the zoo's calibration split (``ptq.tuning.validation``), the
three candidates of ``--calibration-method auto`` built from them, each run on the eval split (never calibrated on).
Then, for V validation samples, 200 random draws of V eval samples (seeded): the candidate scoring best on the draw
(``ptq.tuning.scoring.output_score``) is compared with the best on the whole eval split. Printed: how often the pick agrees and
the mean and worst held-out loss (dB on the whole eval split) of picking by V samples.

    python -m bench.stability ppocr-cls ppocr-det ...

SQNRs only: the figures do not depend on the machine's load.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import heldout
from ptq import loader
from ptq.calibrate.data import input_specs
from ptq.calibrate.samples import Samples
from ptq.calibrate.runner import choose_range, observe
from ptq.config import Config
from ptq.quantize.plan import make_plan
from ptq.quantize.static import calibrated_tensors
from ptq.tuning.method import CANDIDATES
from ptq.tuning.scoring import Scoring
from ptq.tuning import validation

SIZES = (2, 4, 8, 16)
DRAWS = 200


def pooled_score(signal: np.ndarray, noise: np.ndarray, rows: np.ndarray) -> float:
    """``output_score`` over the samples ``rows``: mean over outputs of the pooled SQNR (capped at 200 dB)."""
    s, n = signal[rows].sum(axis=0), noise[rows].sum(axis=0)
    return float(np.mean(np.minimum(200.0, 10 * np.log10(np.maximum(s, 1e-300) / np.maximum(n, 1e-300)))))


def per_sample_score(signal: np.ndarray, noise: np.ndarray, rows: np.ndarray) -> float:
    """The alternative aggregate: mean over samples and outputs of each sample's SQNR in dB (capped at 200 dB), so
    one borderline sample (a flipped 2-class softmax) weighs as one sample, not as the whole pool's noise."""
    db = 10 * np.log10(np.maximum(signal[rows], 1e-300) / np.maximum(noise[rows], 1e-300))
    return float(np.mean(np.minimum(200.0, db)))


def run(name: str, root: Path) -> list[str]:
    model_path, folder, eval_feeds = heldout.model_and_data(name, root)
    model = loader.load(model_path).model
    config = Config(calibration_data=folder)
    plan = make_plan(model, config)
    split = validation.split(len(Samples(folder, input_specs(model))))
    observers, _ = observe(model, calibrated_tensors(model, plan), folder, indices=split.fit)
    scoring = Scoring(model, config, folder, split)
    reference = heldout.outputs_of(model.SerializeToString(), eval_feeds)
    per_method = {}
    for method in CANDIDATES:
        ranges = {n: choose_range(o, method, config.percentile) for n, o in observers.items()}
        got = heldout.outputs_of(scoring.candidate(plan, ranges, config).SerializeToString(), eval_feeds)
        signal = np.array([[float(np.sum(np.square(r, dtype=np.float64))) for r in sample] for sample in reference])
        noise = np.array([[float(np.sum(np.square(r.astype(np.float64) - g))) for r, g in zip(rs, gs)] for rs, gs in zip(reference, got)])
        per_method[method.value] = (signal, noise)
    everything = np.arange(len(eval_feeds))
    full = {m: pooled_score(*sn, everything) for m, sn in per_method.items()}
    best = max(full, key=full.get)
    rng = np.random.default_rng(0)
    lines = []
    for size in SIZES:
        if size > len(eval_feeds):
            continue
        losses, alt_losses = [], []
        for _ in range(DRAWS):
            rows = rng.choice(len(eval_feeds), size=size, replace=False)
            pick = max(per_method, key=lambda m: pooled_score(*per_method[m], rows))
            losses.append(full[best] - full[pick])
            alt = max(per_method, key=lambda m: per_sample_score(*per_method[m], rows))
            alt_losses.append(full[best] - full[alt])
        agree = np.mean(np.array(losses) == 0.0)
        lines.append(
            f"| {name} | {size} | {agree:.0%} | {np.mean(losses):.2f} | {np.max(losses):.2f} | {np.mean(np.array(alt_losses) == 0.0):.0%},"
            f" {np.mean(alt_losses):.2f} | {best} ({', '.join(f'{m} {v:.1f}' for m, v in full.items())}) |"
        )
    return lines


def main(names: list[str]) -> None:
    print("| model | validation samples | pick = best on all eval | mean loss dB | worst loss dB | per-sample-dB aggregate: agree, mean loss | best on all eval samples (dB) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="ptq-stability-") as tmp:
        for name in names:
            print("\n".join(run(name, Path(tmp))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
