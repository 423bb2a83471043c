"""External data: legitimate layouts load (and read only the bytes each tensor declares); models
over protobuf's 2 GB limit are read and written with external data (exercised on small models by
lowering the thresholds; the real thing is a ``models``-tier test)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ptq
from ptq import loader
from ptq.runtime import inference_session
from ptq.write import onnx_file
from tests import tiny
from tests.robustness.helpers import SESSIONS_TAKE_EXTERNAL_DATA, initializer, listing, set_external, vi


def run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


X = {"x": np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)}


def external_cnn(folder, layout: str):
    """small_cnn with w1 and w2 in external files laid out as ``layout``."""
    model = tiny.small_cnn()
    w1 = numpy_helper.to_array(initializer(model, "w1")).tobytes()
    w2 = numpy_helper.to_array(initializer(model, "w2")).tobytes()
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "one_file_no_lengths":  # offsets only: each tensor's size comes from its shape
        (folder / "weights.bin").write_bytes(w1 + b"\0" * 100 + w2 + b"\0" * 10_000_000)
        set_external(initializer(model, "w1"), "weights.bin", offset=0)
        set_external(initializer(model, "w2"), "weights.bin", offset=len(w1) + 100)
    elif layout == "subfolder":
        (folder / "data").mkdir()
        (folder / "data" / "w1.bin").write_bytes(w1)
        (folder / "data" / "w2.bin").write_bytes(w2)
        set_external(initializer(model, "w1"), "data/w1.bin", length=len(w1))
        set_external(initializer(model, "w2"), "./data/../data/w2.bin")
    elif layout == "symlink_inside":
        (folder / "real.bin").write_bytes(w1 + w2)
        os.symlink("real.bin", folder / "alias.bin")
        set_external(initializer(model, "w1"), "alias.bin", offset=0, length=len(w1))
        set_external(initializer(model, "w2"), "real.bin", offset=len(w1), length=len(w2))
    path = folder / "ext.onnx"
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("layout", ["one_file_no_lengths", "subfolder", "symlink_inside"])
def test_external_data_layouts_convert(layout, tmp_path):
    path = external_cnn(tmp_path / "m", layout)
    reference = run(tiny.save(tiny.small_cnn(), tmp_path / "plain.onnx"), X)
    assert np.allclose(run(path, X), reference)  # onnxruntime agrees the layout is valid
    before = {p: p.read_bytes() for p in (tmp_path / "m").rglob("*") if p.is_file()}
    calib = tiny.image_samples(tmp_path / "calib", n=2)
    result = ptq.convert(path, ptq.Config(calibration_data=calib, output=tmp_path / "q.onnx"))
    plain = ptq.convert(tmp_path / "plain.onnx", ptq.Config(calibration_data=calib, output=tmp_path / "p.onnx"))
    assert result.float_size_bytes > path.stat().st_size  # the data files count
    assert (tmp_path / "q.onnx").read_bytes() == (tmp_path / "p.onnx").read_bytes()  # as if the weights were inline
    assert [(e.name, e.kernel) for e in result.oplist.nodes] == [(e.name, e.kernel) for e in plain.oplist.nodes]
    assert {p: p.read_bytes() for p in (tmp_path / "m").rglob("*") if p.is_file()} == before  # input untouched


def test_loader_reads_only_the_declared_bytes(tmp_path):
    """A tensor without ``length`` in a shared 10 MB file: onnx's own helper would read to the end of
    the file for each tensor; ptq reads the shape's worth."""
    import tracemalloc

    path = external_cnn(tmp_path, "one_file_no_lengths")
    tracemalloc.start()
    try:
        model = loader.read(path)
        loader.load_external_data(model, path.parent)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(initializer(model, "w1").raw_data) == 8 * 3 * 3 * 3 * 4
    assert peak < 2_000_000, peak


def small_thresholds(monkeypatch):
    """The large-model code paths, on models of a few kB."""
    monkeypatch.setattr(loader, "LARGE_MODEL_BYTES", 1000)
    monkeypatch.setattr(loader, "PAYLOAD_MIN_BYTES", 256)
    monkeypatch.setattr(onnx_file, "EXTERNAL_DATA_THRESHOLD", 1000)
    monkeypatch.setattr(onnx_file, "EXTERNAL_MIN_TENSOR_BYTES", 256)


def test_loader_large_model_path_prepares_the_same_model(tmp_path, monkeypatch):
    """Over LARGE_MODEL_BYTES the loader hands onnxruntime external data and runs onnx's version
    converter and shape inference on a copy without the weights: same prepared model."""
    path = tiny.save(tiny.small_cnn(opset=11), tmp_path / "cnn.onnx")
    normal = loader.load(path)
    monkeypatch.setattr(loader, "LARGE_MODEL_BYTES", 1000)
    monkeypatch.setattr(loader, "PAYLOAD_MIN_BYTES", 256)
    large = loader.load(path)
    assert large.notes == normal.notes and "opset 11 -> 13" in large.notes[0]
    strip = lambda m: sorted((t.name, t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes()) for t in m.graph.initializer)
    assert strip(large.model) == strip(normal.model)
    assert [(n.op_type, list(n.input)) for n in large.model.graph.node] == [(n.op_type, list(n.input)) for n in normal.model.graph.node]
    assert {v.name for v in large.model.graph.value_info} == {v.name for v in normal.model.graph.value_info}
    assert all(t.data_location != TensorProto.EXTERNAL for t in large.model.graph.initializer)


def test_writer_splits_weights_beside_the_onnx(tmp_path, monkeypatch):
    small_thresholds(monkeypatch)
    model = tiny.small_cnn()
    expected = run(tiny.save(tiny.small_cnn(), tmp_path / "plain.onnx"), X)
    model_bytes = onnx_file.serialize(model, "test")
    assert model_bytes.external is not None and model_bytes.total_size > len(model_bytes)
    assert np.allclose(inference_session(model_bytes).run(None, X)[0], expected)  # in memory
    out = tmp_path / "out"
    out.mkdir()
    onnx_file.write_onnx(model_bytes, out / "q.onnx")
    assert listing(out) == ["q.onnx", "q.onnx.data"]
    assert np.allclose(run(out / "q.onnx", X), expected)  # from disk, data file beside it
    again = onnx_file.serialize(tiny.small_cnn(), "test")
    assert bytes(again) == bytes(model_bytes) and again.external == model_bytes.external  # deterministic


def test_writer_leaves_nothing_when_the_data_file_cannot_be_written(tmp_path, monkeypatch):
    small_thresholds(monkeypatch)
    model_bytes = onnx_file.serialize(tiny.small_cnn(), "test")
    out = tmp_path / "out"
    out.mkdir()
    (out / "q.onnx.data").mkdir()  # in the way
    with pytest.raises(ptq.errors.OutputError, match="q.onnx.data"):
        onnx_file.write_onnx(model_bytes, out / "q.onnx")
    assert listing(out) == ["q.onnx.data"]


@pytest.mark.xfail(not SESSIONS_TAKE_EXTERNAL_DATA, strict=True,
                   reason="runner/oplist/ort_file/api do not take external data yet (see the robustness report)")  # fmt: skip
@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_convert_large_model_path_end_to_end(tmp_path, monkeypatch, static):
    """The whole conversion with the thresholds lowered gives the same model and op list as the
    normal path, its weights in ``q.onnx.data``, and no .ort (the format's 2 GB limit), with a note."""
    path = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    calib = tiny.image_samples(tmp_path / "calib", n=2) if static else None
    (tmp_path / "normal").mkdir()
    (tmp_path / "large").mkdir()
    normal = ptq.convert(path, ptq.Config(calibration_data=calib, output=tmp_path / "normal" / "q.onnx"))
    small_thresholds(monkeypatch)
    large = ptq.convert(path, ptq.Config(calibration_data=calib, output=tmp_path / "large" / "q.onnx"))
    assert listing(tmp_path / "large") == ["q.onnx", "q.onnx.data", "q.ops.json"]
    assert any(".ort not written" in n for n in large.notes)
    assert large.int8_size_bytes == sum(p.stat().st_size for p in (tmp_path / "large").glob("q.onnx*"))
    assert np.array_equal(run(large.outputs.onnx, X), run(normal.outputs.onnx, X))
    assert large.outputs.ops.read_bytes() == normal.outputs.ops.read_bytes()


# ------------------------------------------------------------------------------ a real 2 GB model


@pytest.mark.models
@pytest.mark.xfail(not SESSIONS_TAKE_EXTERNAL_DATA, strict=True,
                   reason="runner/oplist/ort_file/api do not take external data yet (see the robustness report)")  # fmt: skip
def test_model_over_2gb_round_trip(tmp_path):
    """A 2.1 GB float model stored with external data (an embedding table kept float with
    --exclude, and a MatMul): read, quantized (dynamic), written with its weights beside the
    .onnx, and the output runs in onnxruntime."""
    rows, dim = 2**31 // (4 * 256) + 4096, 256  # just over 2 GiB of float32
    table = np.lib.stride_tricks.as_strided(np.arange(dim, dtype=np.float32) / dim, (rows, dim), (0, 4))
    w = (np.random.default_rng(0).normal(size=(dim, 64)) * 0.1).astype(np.float32)
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big.onnx.data", "wb") as f:
        f.writelines(np.ascontiguousarray(table[start:start + 65536]).tobytes() for start in range(0, rows, 65536))
    big = TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[rows, dim])
    set_external(big, "big.onnx.data", offset=0, length=rows * dim * 4)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"), helper.make_node("MatMul", ["e", "w"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "big", [vi("ids", TensorProto.INT64, ["B", "T"])], [vi("y", shape=["B", "T", 64])],
                              [big, numpy_helper.from_array(w, "w")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (src / "big.onnx").write_bytes(model.SerializeToString())
    ids = {"ids": np.array([[0, 5, rows - 1]], np.int64)}

    result = ptq.convert(src / "big.onnx", ptq.Config(output=tmp_path / "q.onnx", exclude=("embed",)))
    assert (tmp_path / "q.onnx.data").stat().st_size > 2**31
    got = run(tmp_path / "q.onnx", ids)
    want = np.asarray(table[[0, 5, rows - 1]]) @ w
    assert np.allclose(got[0], want, atol=0.05)
    assert [e.name for e in result.oplist.nodes] == ["embed", "fc"]
