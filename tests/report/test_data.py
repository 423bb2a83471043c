"""Measured inputs: folders checked against the model, synthesized inputs valid for the model."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ptq.errors import CalibrationDataError
from ptq.report import build, data
from tests import tiny


def test_eval_folder_is_labelled_and_checked(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    folder = tiny.image_samples(tmp_path / "eval", n=3)
    d = build.choose_data(model, eval_data=folder)
    assert d.source == "eval" and d.samples == 3
    assert d.describe().startswith("3 eval samples from")
    assert [f["x"].shape for f in d.feeds()] == [(1, 3, 16, 16)] * 3
    d = build.choose_data(model, calibration_data=folder, samples=2)
    assert d.source == "calibration" and d.samples == 2 and "not held out" in d.describe()


def test_eval_folder_mismatch_names_the_option(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    (tmp_path / "bad").mkdir()
    np.savez(tmp_path / "bad" / "s.npz", image=np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(CalibrationDataError, match="--eval-data .*missing input"):
        build.choose_data(model, eval_data=tmp_path / "bad")
    with pytest.raises(CalibrationDataError, match="no such folder"):
        build.choose_data(model, eval_data=tmp_path / "nope")


def test_synthesized_inputs_run_and_are_deterministic(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "cnn.onnx")
    d = build.choose_data(model)
    assert d.source == "synthesized" and d.samples == data.SYNTHESIZED_SAMPLES
    assert "synthesized" in d.describe()
    feeds = list(d.feeds())
    assert feeds[0]["x"].shape == (1, 3, 16, 16) and feeds[0]["x"].dtype == np.float32
    again = list(build.choose_data(model).feeds())
    np.testing.assert_array_equal(feeds[1]["x"], again[1]["x"])
    assert not np.array_equal(feeds[0]["x"], feeds[1]["x"])


def test_synthesized_integer_inputs_are_valid_indices(tmp_path):
    m = tiny.embedding_mlp()
    path = tiny.save(m, tmp_path / "emb.onnx")
    d = build.choose_data(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for feed in d.feeds():
        ids = feed["ids"]
        assert ids.dtype == np.int64 and ids.shape == (1, data.SEQUENCE)
        assert 0 <= ids.min() and ids.max() < data.MAX_TOKEN
        sess.run(None, feed)


def test_small_table_bounds_the_indices():
    m = tiny.embedding_mlp()
    table = next(t for t in m.graph.initializer if t.name == "table")
    table.CopyFrom(onnx.numpy_helper.from_array(np.ones((3, 32), np.float32), "table"))
    specs = data.input_specs(m)
    d = data.synthesize(m, specs, n=8)
    assert max(int(f["ids"].max()) for f in d.feeds()) <= 2


def test_masks_and_token_types():
    def spec(name):
        return data.InputSpec(name, np.dtype(np.int64), ("batch", "sequence"))

    graph = onnx.helper.make_graph([], "g", [], [])
    d = data.synthesize(onnx.helper.make_model(graph), [spec("attention_mask"), spec("token_type_ids"), spec("flags")])
    feed = d.first()
    assert feed["attention_mask"].shape == (1, data.SEQUENCE) and (feed["attention_mask"] == 1).all()
    assert (feed["token_type_ids"] == 0).all()
    assert set(np.unique(feed["flags"])) <= {0, 1}
