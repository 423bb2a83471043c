"""ptq.external_data's functions directly: location confinement, byte ranges, loading, sizes.
(Converting models with external data end to end: tests/robustness/test_external_data.py.)"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq.errors import InvalidModelError
from ptq.external_data import (
    all_tensors,
    check_external_data,
    external_tensors,
    load_external_data,
    stored_size_bytes,
    tensor_nbytes,
)

W = np.arange(6, dtype=np.float32).reshape(2, 3)


def _model(location: str, offset: int = 0, length: int | None = None) -> onnx.ModelProto:
    w = numpy_helper.from_array(W, "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        w.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _write(folder, name="w.bin", prefix=b"") -> None:
    (folder / name).write_bytes(prefix + W.tobytes() + b"TAIL")


def test_load_reads_exactly_the_declared_range_and_runs(tmp_path):
    _write(tmp_path, prefix=b"1234")
    model = _model("w.bin", offset=4)
    refs = check_external_data(model, tmp_path)
    assert [(r.offset, r.length, r.target) for r in refs] == [(4, 24, (tmp_path / "w.bin").resolve())]
    load_external_data(model, tmp_path)
    assert list(external_tensors(model)) == []
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), W)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": np.array([[1.0, 1.0]], np.float32)})
    np.testing.assert_array_equal(y, [[3.0, 5.0, 7.0]])


@pytest.mark.parametrize(
    "location, match",
    [
        ("/etc/passwd", "not a relative path"),
        ("../w.bin", "leaves the model's folder"),
        ("", "not a relative path"),
        ("missing.bin", "is missing"),
        (".", "is not a file"),
    ],
)
def test_bad_locations_are_refused(tmp_path, location, match):
    sub = tmp_path / "model"
    sub.mkdir()
    _write(tmp_path)  # a real file just outside the model's folder
    with pytest.raises(InvalidModelError, match=match):
        check_external_data(_model(location), sub)


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    sub = tmp_path / "model"
    sub.mkdir()
    _write(tmp_path)
    os.symlink(tmp_path / "w.bin", sub / "link.bin")
    with pytest.raises(InvalidModelError, match="leaves the model's folder"):
        check_external_data(_model("link.bin"), sub)


def test_truncated_file_and_wrong_length_are_refused(tmp_path):
    (tmp_path / "short.bin").write_bytes(W.tobytes()[:20])
    with pytest.raises(InvalidModelError, match="truncated"):
        check_external_data(_model("short.bin"), tmp_path)
    _write(tmp_path)
    with pytest.raises(InvalidModelError, match="needs 24"):
        check_external_data(_model("w.bin", length=28), tmp_path)


def test_tensor_nbytes_by_type():
    assert tensor_nbytes(numpy_helper.from_array(W)) == 24
    assert tensor_nbytes(helper.make_tensor("h", TensorProto.FLOAT16, [3, 5], np.zeros(15, np.float16))) == 30
    if hasattr(TensorProto, "INT4"):
        assert tensor_nbytes(helper.make_tensor("i4", TensorProto.INT4, [3], [1, 2, 3])) == 2  # 12 bits -> 2 bytes
    assert tensor_nbytes(helper.make_tensor("s", TensorProto.STRING, [1], [b"a"])) is None


def test_all_tensors_finds_attribute_and_subgraph_tensors():
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(2, np.float32), "cv"))
    inner = helper.make_graph(
        [helper.make_node("Identity", ["k"], ["o"])], "then", [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "k")],
    )
    branch = helper.make_node("If", ["cond"], ["r"], then_branch=inner, else_branch=inner)
    graph = helper.make_graph([const, branch], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [],
                              [numpy_helper.from_array(W, "w")])
    names = {t.name for t in all_tensors(helper.make_model(graph))}
    assert {"w", "cv", "k"} <= names


def test_stored_size_counts_each_data_file_once(tmp_path):
    _write(tmp_path)
    model = _model("w.bin")
    second = onnx.TensorProto()
    second.CopyFrom(model.graph.initializer[0])
    second.name = "w2"
    model.graph.initializer.append(second)  # both tensors in the same file
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert stored_size_bytes(path, model) == path.stat().st_size + 28
