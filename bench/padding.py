"""Padded and unpadded sentence batches through int8 MiniLM: what an additive attention mask does to quantization.

    python -m bench.padding                 # ptq static + dynamic, onnxruntime's quantize_static
    python -m bench.padding --tools ptq-static

Model ``minilm-l6-padded`` (bench.zoo): all-MiniLM-L6-v2 exported with transformers' eager attention, whose padded
positions get ``(1 - mask) * finfo(float32).min`` added to the attention scores, and mean pooling + L2 normalization
in the graph. Static tools calibrate on the zoo's calib split in padded batches of 4 sentences; every figure is
measured on the eval split (held out: no sentence of it was calibrated on), once in padded batches of 4 and once
one sentence at a time, as per-sentence cosine of ``sentence_embedding`` with the float model's (mean and worst).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from bench import peers, zoo
from bench.measure import rowwise_cosine

MODEL = "minilm-l6-padded"
CALIB_BATCHES = 16  # 64 calib sentences
EVAL_BATCHES = 30  # 120 eval sentences
TOOLS = ("ptq-static", "ptq-dynamic", "ort-static")


def embeddings(model: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """``sentence_embedding`` rows of every sentence in ``feeds``, in order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["sentence_embedding"], feed)[0] for feed in feeds])


def int8_matmuls(model: Path) -> tuple[int, int]:
    """(MatMuls whose operands come out of DequantizeLinear or that run as integer kernels, all MatMuls)."""
    graph = onnx.load(str(model), load_external_data=False).graph
    produced = {o: n.op_type for n in graph.node for o in n.output}
    integer = {"MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "MatMulIntegerToFloat"}
    count = total = 0
    for node in graph.node:
        if node.op_type == "MatMul" or node.op_type in integer:
            total += 1
            if node.op_type in integer or all(produced.get(t) == "DequantizeLinear" for t in node.input[:2]):
                count += 1
    return count, total


def measure(tools: tuple[str, ...], work: Path) -> list[str]:
    """One line of figures per tool."""
    model = zoo.fetch_model(MODEL)
    calib = work / "calib"
    zoo.write_calibration_dir(MODEL, calib, "calib", CALIB_BATCHES)
    padded = zoo.inputs(MODEL, "eval", EVAL_BATCHES)
    single = zoo.unpadded_inputs(MODEL, "eval", EVAL_BATCHES)
    reference = {"padded": embeddings(model, padded), "unpadded": embeddings(model, single)}
    lines = [
        (
            f"{MODEL}: calibrated on {CALIB_BATCHES} padded batches of {zoo.SENTENCE_BATCH} calib sentences; "
            f"held out: {len(single)} eval sentences in {len(padded)} padded batches and one at a time"
        ),
        f"float padded vs unpadded: cosine mean {rowwise_cosine(reference['padded'], reference['unpadded']).mean():.6f}",
    ]
    for tool in tools:
        out = work / f"{tool}.onnx"
        start = time.perf_counter()
        peers.RECIPES[tool](model, out, calib if peers.TOOLS[tool].needs_calibration else None)
        seconds = time.perf_counter() - start
        figures = []
        for name, feeds in (("padded", padded), ("unpadded", single)):
            cos = rowwise_cosine(reference[name], embeddings(out, feeds))
            figures.append(f"{name} mean {cos.mean():.4f} worst {cos.min():.4f}")
        count, total = int8_matmuls(out)
        lines.append(f"{tool:12} {'; '.join(figures)}; int8 MatMuls {count}/{total}; convert {seconds:.1f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.padding", description=__doc__.splitlines()[0])
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ptq-padding-") as tmp:
        for line in measure(tuple(args.tools), Path(tmp)):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
