"""Do the off-by-default recipes pay held out, and does the validation split predict it? (issue 14)

For each model: ``ptq.convert`` with the defaults (latency search off: this is about fidelity) and with each
switch added on its own. Every variant fits ranges on the same fitting part and reports its figures on the
same held-out validation samples; the written model is scored there (what a scored choice would see) and on
the eval split (never calibrated on), both with the bench's pooled output SQNR. A switch the search could pick must
gain on validation where it gains on eval: the last columns say whether the signs agree.

    python -m bench.switches ppocr-cls silero-vad ... [--switches 'bias correction,equalize']

SQNRs do not depend on machine load.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from bench.heldout import model_and_data, outputs_of
from ptq import loader
from ptq.api import convert
from ptq.calibrate.data import input_specs
from ptq.calibrate.samples import Samples
from ptq.tuning import validation
from ptq.config import Config, WeightRange
from ptq.tuning.scoring import output_score

SWITCHES = {
    "bias correction": {"bias_correction": True},
    "no bias correction": {"bias_correction": False},
    "equalize": {"equalize": True},
    "equalize activations": {"equalize_activations": True},
    "smoothquant 0.5": {"smoothquant": 0.5},
    "auto fallback": {"auto_fallback": True},
    "weight range auto": {"weight_range": WeightRange.AUTO},
    "HardSigmoid float": {"exclude": ("HardSigmoid",)},  # instead of its exact int8 table
}


def rows(name: str, root: Path, switches: dict) -> list[str]:
    model_path, folder, eval_feeds = model_and_data(name, root)
    reference = outputs_of(model_path, eval_feeds)
    specs = input_specs(loader.load(model_path).model)
    val_feeds = list(Samples(folder, specs, indices=validation.split(len(Samples(folder, specs))).validation))
    val_reference = outputs_of(model_path, val_feeds)
    base = Config(calibration_data=folder, write_ort=False, latency_search=False)
    figures = {}
    for label, changes in {"defaults": {}, **switches}.items():
        out = root / f"{name}.{label.replace(' ', '_')}.onnx"
        started = time.perf_counter()
        try:
            result = convert(model_path, dataclasses.replace(base, output=out, **changes))
        except Exception as error:  # a switch that does not apply to this model (e.g. needs a pattern)
            print(f"  {name} {label}: {error}", file=sys.stderr)
            continue
        on_validation = output_score(val_reference, outputs_of(out, val_feeds))
        figures[label] = (on_validation, output_score(reference, outputs_of(out, eval_feeds)))
        print(f"  {name} {label}: validation {on_validation:.2f}, eval {figures[label][1]:.2f} dB"
              f" ({time.perf_counter() - started:.0f} s)", file=sys.stderr)  # fmt: skip
    base_val, base_eval = figures["defaults"]
    lines = [f"| {name} | defaults | {base_val:.2f} | {base_eval:.2f} | | | |"]
    for label, (val, ev) in figures.items():
        if label == "defaults":
            continue
        agree = "yes" if (val - base_val > 0) == (ev - base_eval > 0) else "**no**"
        lines.append(f"| {name} | {label} | {val:.2f} | {ev:.2f} | {val - base_val:+.2f} | {ev - base_eval:+.2f} | {agree} |")
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--switches", default=",".join(SWITCHES), help="comma-separated, from: " + ", ".join(SWITCHES))
    args = parser.parse_args(argv)
    switches = {label: SWITCHES[label] for label in args.switches.split(",")}
    print("| model | variant | validation SQNR (dB) | eval SQNR (dB) | validation gain | eval gain | signs agree |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="ptq-switches-") as tmp:
        for name in args.models:
            for line in rows(name, Path(tmp), switches):
                print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
