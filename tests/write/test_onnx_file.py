"""Serializing the quantized model: same model, same bytes; splats stored compactly; checked."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ptq.write.onnx_file import SPLAT_MIN_ELEMENTS, data_path, serialize, write_onnx
from tests import tiny


def test_serialize_is_deterministic_and_stamps_the_producer(tmp_path):
    model = tiny.small_cnn()
    first, second = serialize(copy.deepcopy(model), "9.9"), serialize(copy.deepcopy(model), "9.9")
    assert first == second and first.external is None
    loaded = onnx.load_from_string(bytes(first))
    assert (loaded.producer_name, loaded.producer_version) == ("ptq", "9.9")
    write_onnx(first, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == bytes(first)
    assert data_path(tmp_path / "m.onnx").parent == tmp_path


def test_a_large_constant_initializer_becomes_a_constant_of_shape_with_the_same_outputs():
    model = tiny.small_cnn()
    bias = next(t for t in model.graph.initializer if len(t.dims) == 1)
    splat = numpy_helper.from_array(np.full((SPLAT_MIN_ELEMENTS * 2,), 0.25, np.float32), "splat")
    model.graph.initializer.append(splat)
    model.graph.output.append(onnx.helper.make_tensor_value_info("splat", onnx.TensorProto.FLOAT, [SPLAT_MIN_ELEMENTS * 2]))
    data = serialize(copy.deepcopy(model), "0")
    written = onnx.load_from_string(bytes(data))
    assert "splat" not in {t.name for t in written.graph.initializer}
    assert any(n.op_type == "ConstantOfShape" and n.output[0] == "splat" for n in written.graph.node)
    assert bias.name in {t.name for t in written.graph.initializer}  # ordinary weights stay
    feed = {i.name: np.random.default_rng(0).normal(size=[d.dim_value or 1 for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}  # fmt: skip
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["splat"], feed)
    after = ort.InferenceSession(bytes(data), providers=["CPUExecutionProvider"]).run(["splat"], feed)
    np.testing.assert_array_equal(before[0], after[0])
