"""The .ort file: onnxruntime's own ORT-format serializer, computing what the .onnx computes, and
the same bytes every time the same model is written (in one process and across processes)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import ptq
from bench import zoo
from ptq.write.ort_file import write_ort
from tests import tiny


def test_the_ort_file_computes_what_the_onnx_computes(tmp_path):
    model = tiny.small_cnn()
    data = model.SerializeToString()
    write_ort(data, tmp_path / "m.ort")
    assert (tmp_path / "m.ort").read_bytes()[4:8] == b"ORTM"  # the ORT format's flatbuffer identifier
    x = {i.name: np.random.default_rng(1).normal(size=[d.dim_value or 1 for d in i.type.tensor_type.shape.dim]).astype(np.float32)
         for i in model.graph.input}  # fmt: skip
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, x)
    got = ort.InferenceSession(str(tmp_path / "m.ort"), providers=["CPUExecutionProvider"]).run(None, x)
    for a, b in zip(want, got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ort"]  # no temp file left


@pytest.fixture(scope="module")
def cls_int8(tmp_path_factory):
    """PP-OCR cls quantized in dynamic mode (no .ort): a real int8 model with fused kernels."""
    out = tmp_path_factory.mktemp("cls") / "cls.int8.onnx"
    ptq.convert(zoo.fetch_model("ppocr-cls"), ptq.Config(output=out, write_ort=False))
    return out


WRITE_IN_A_FRESH_PROCESS = "import sys; from pathlib import Path; from ptq.write.ort_file import write_ort; write_ort(Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]))"


def test_the_same_model_gives_the_same_ort_bytes_in_one_process_and_across_processes(cls_int8, tmp_path):
    data = cls_int8.read_bytes()
    for i in range(3):
        write_ort(data, tmp_path / f"same-process-{i}.ort")
    for i in range(2):
        subprocess.run([sys.executable, "-c", WRITE_IN_A_FRESH_PROCESS, cls_int8, tmp_path / f"process-{i}.ort"], check=True)
    written = {p.name: p.read_bytes() for p in sorted(tmp_path.glob("*.ort"))}
    assert len(written) == 5
    first = written["same-process-0.ort"]
    assert all(b == first for b in written.values()), {name: len(b) for name, b in written.items()}


def test_the_written_ort_computes_exactly_what_onnxruntimes_own_save_computes(cls_int8, tmp_path):
    """The file ptq writes (onnxruntime's save, re-serialized in a fixed order) gives the same
    outputs, bit for bit, as the file onnxruntime saved, on real held-out inputs."""
    from ptq.runtime import inference_session, session_options

    raw = tmp_path / "onnxruntime.ort"
    inference_session(cls_int8.read_bytes(), session_options(threads=1, optimization="ORT_ENABLE_EXTENDED", save_optimized_to=raw, ort_format=True))
    write_ort(cls_int8.read_bytes(), tmp_path / "ptq.ort")
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (raw, tmp_path / "ptq.ort")]
    for feed in zoo.inputs("ppocr-cls", "eval", 4):
        want, got = (s.run(None, feed) for s in sessions)
        assert len(want) == len(got)
        for a, b in zip(want, got):
            assert a.dtype == b.dtype and np.array_equal(a, b)
