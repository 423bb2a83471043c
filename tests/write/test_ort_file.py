"""The .ort file: onnxruntime's own ORT-format serializer, computing what the .onnx computes.

onnxruntime does not write the same bytes twice for the same model (measured: ``bench.identity``
hashes the .ort's outputs for that reason), so this checks what the file computes, not its bytes.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

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
