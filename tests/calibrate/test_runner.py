"""Calibration runs: batching where the model allows, with exactly the observations of an unbatched run."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ptq.calibrate import runner
from ptq.calibrate.observers import HistogramObserver
from tests import tiny


def _tensors(model):
    return [o for n in model.graph.node for o in n.output]


def _state(observers):
    out = {}
    for name, obs in observers.items():
        if isinstance(obs, HistogramObserver):
            out[name] = (obs.lo, obs.hi, obs.minmax.range(), obs.minmax.count, obs.counts.tobytes())
        else:
            out[name] = (obs.range(), obs.count)
    return out


@pytest.fixture
def batches(monkeypatch):
    """Sizes of the batches onnxruntime ran (samples concatenated along axis 0)."""
    sizes = []
    concat = runner._concat

    def recording(feeds):
        sizes.append(len(feeds))
        return concat(feeds)

    monkeypatch.setattr(runner, "_concat", recording)
    return sizes


def _samples(folder, shapes, seed=0):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i, shape in enumerate(shapes):
        np.save(folder / f"s{i:02d}.npy", (rng.normal(size=shape) * (1 + i)).astype(np.float32))
    return folder


@pytest.mark.parametrize("histogram", [True, False], ids=["histogram", "minmax"])
def test_batched_observers_equal_unbatched(tmp_path, batches, histogram):
    model = tiny.small_cnn()
    data = _samples(tmp_path / "c", [(1, 3, 16, 16)] * 11 + [(2, 3, 16, 16)] * 3 + [(1, 3, 16, 16)] * 2)
    one, used_one = runner.observe(model, _tensors(model), data, histogram, batch_budget=0)
    assert batches == []
    many, used_many = runner.observe(model, _tensors(model), data, histogram)
    assert used_one == used_many == 16
    # the probe pair (alone, then together), 8, the 11th alone (the next shape differs), 3, 2
    assert batches == [2, 8, 3, 2]
    assert _state(many) == _state(one)


def test_batches_stay_within_the_budget_and_the_progress_counts_samples(tmp_path, batches):
    model = tiny.small_cnn()
    data = _samples(tmp_path / "c", [(1, 3, 16, 16)] * 12)
    one_sample = 0
    with runner.with_outputs(model, _tensors(model)) as observed:
        sess = runner.session(observed)
    feed = {"x": np.load(data / "s00.npy")}
    one_sample = sum(o.nbytes for o in sess.run(None, feed)) + feed["x"].nbytes
    seen = []
    runner.observe(model, _tensors(model), data, batch_budget=3 * one_sample, progress=lambda d, t: seen.append((d, t)))
    assert batches == [2, 3, 3, 3]  # the probe pair, then at most 3 per run (the 12th runs alone)
    assert seen == [(i, 12) for i in range(1, 13)]


def test_no_batching_on_a_fixed_batch_axis(tmp_path, batches):
    model = tiny.small_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    data = _samples(tmp_path / "c", [(1, 3, 16, 16)] * 6)
    runner.observe(model, _tensors(model), data)
    assert batches == []


def test_a_model_that_mixes_its_batch_items_runs_one_by_one(tmp_path, batches):
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], name="mean", axes=[0], keepdims=1),
        helper.make_node("Sub", ["x", "m"], ["y"], name="sub"),
    ]
    graph = helper.make_graph(
        nodes, "mix", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = _samples(tmp_path / "c", [(1, 8)] * 6)
    one, _ = runner.observe(model, ["m", "y"], data, batch_budget=0)
    many, _ = runner.observe(model, ["m", "y"], data)
    assert batches == [2]  # the probe saw different values: no batch after it
    assert _state(many) == _state(one)
    assert many["y"].range() == (0.0, 0.0)  # each sample minus its own mean


def test_batched_ranges_equal_unbatched_on_a_real_model(tmp_path, batches):
    from bench import zoo
    from ptq import loader
    from ptq.config import CalibrationMethod, Config
    from ptq.quantize.plan import make_plan

    model = loader.load(zoo.fetch_model("ppocr-cls")).model
    data = tmp_path / "calib"
    zoo.write_calibration_dir("ppocr-cls", data, "calib", n=12)
    tensors = make_plan(model, Config(calibration_data=data)).activations
    one, _ = runner.observe(model, tensors, data, batch_budget=0)
    assert batches == []
    many, _ = runner.observe(model, tensors, data)
    assert batches[0] == 2 and max(batches[1:]) > 2
    assert _state(many) == _state(one)
    for method in (CalibrationMethod.MINMAX, CalibrationMethod.PERCENTILE):  # the others: same histograms
        assert {k: runner.choose_range(o, method, 99.99) for k, o in many.items()} == {
            k: runner.choose_range(o, method, 99.99) for k, o in one.items()
        }


@pytest.mark.parametrize("histogram", [True, False], ids=["histogram", "minmax"])
def test_reshaped_copies_share_their_source_observer_with_the_same_state(tmp_path, monkeypatch, histogram):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["a"], name="reshape"),
        helper.make_node("Transpose", ["a"], ["b"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("Identity", ["b"], ["c"], name="identity"),
        helper.make_node("Mul", ["c", "c"], ["y"], name="square"),
    ]
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [0, 4, -1])
    graph = helper.make_graph(
        nodes, "copies", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None), helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
        initializer=[shape],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    data = _samples(tmp_path / "c", [(1, 8, 6)] * 5 + [(3, 8, 6)] * 4)
    tensors = ["x", "r", "a", "b", "c", "y"]
    assert runner.same_values(model, tensors) == {"a": "r", "b": "r", "c": "r"}
    shared, _ = runner.observe(model, tensors, data, histogram)
    assert shared["a"] is shared["r"] and shared["c"] is shared["r"] and shared["y"] is not shared["r"]
    monkeypatch.setattr(runner, "SAME_VALUES_OPS", frozenset())
    alone, _ = runner.observe(model, tensors, data, histogram)
    assert len({id(o) for o in alone.values()}) == len(tensors)
    assert _state(shared) == _state(alone)
    assert list(shared) == tensors


def _derived_model():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"),
        helper.make_node("Tanh", ["c"], ["t"], name="tanh"),
        helper.make_node("Mul", ["c", "s"], ["m"], name="silu"),
        helper.make_node("Concat", ["m", "c"], ["y"], name="concat", axis=1),
        helper.make_node("Add", ["three", "c"], ["a"], name="plus3"),
        helper.make_node("Div", ["a", "six"], ["d"], name="div6"),
        helper.make_node("Mul", ["d", "minus"], ["n"], name="negate"),  # negative slope: observed
    ]
    rng = np.random.default_rng(3)
    w = onnx.numpy_helper.from_array((rng.normal(size=(4, 3, 3, 3)) * 0.7).astype(np.float32), "w")
    graph = helper.make_graph(
        nodes, "derived", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 20, 20])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "t", "n")],
        initializer=[w] + [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("three", 3.0), ("six", 6.0), ("minus", -2.0))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("histogram", [True, False], ids=["histogram", "minmax"])
def test_sigmoid_tanh_and_concat_observers_derived_from_their_inputs_give_the_ranges_of_their_values(tmp_path, monkeypatch, histogram):
    from ptq.config import CalibrationMethod

    model = _derived_model()
    tensors = ["x", "c", "s", "t", "m", "y", "a", "d", "n"]
    from ptq.calibrate.observers import MONOTONE

    derived_from = runner.derived_values(model, tensors, {})
    assert {k: v for k, v in derived_from.items() if k in "sty"} == {"s": (["c"], MONOTONE["Sigmoid"]), "t": (["c"], MONOTONE["Tanh"]), "y": (["m", "c"], None)}
    assert derived_from["a"][0] == ["c"] and derived_from["d"][0] == ["a"] and "n" not in derived_from
    data = _samples(tmp_path / "c", [(1, 3, 20, 20)] * 12)
    derived, used = runner.observe(model, tensors, data, histogram)
    assert used == 12 and list(derived) == tensors
    monkeypatch.setattr(runner, "derived_values", lambda *args: {})
    seen, _ = runner.observe(model, tensors, data, histogram)
    methods = list(CalibrationMethod)[:4] if histogram else [CalibrationMethod.MINMAX]
    for name in ("s", "t", "y", "a", "d"):
        assert derived[name].range() == pytest.approx(seen[name].range(), rel=1e-6, abs=1e-6)  # float32 rounding of f
        for method in methods:
            if method == CalibrationMethod.ENTROPY and name in "ad":
                continue  # symmetric thresholds on an offset histogram: sensitive to where the bins fall
            lo, hi = runner.choose_range(seen[name], method, 99.9)
            d_lo, d_hi = runner.choose_range(derived[name], method, 99.9)
            step = (hi - lo) / 255
            assert abs(d_lo - lo) <= step and abs(d_hi - hi) <= step, (name, method)
    for method in [m for m in methods if m != CalibrationMethod.ENTROPY]:
        # an affine image has the source's histogram, bin for bin: the range maps through (up to
        # where the MSE search puts zero, which an offset moves)
        c_lo, c_hi = runner.choose_range(derived["c"], method, 99.9)
        d_lo, d_hi = runner.choose_range(derived["d"], method, 99.9)
        step = (c_hi - c_lo) / 6 / 255
        assert abs(d_lo - (c_lo + 3) / 6) <= step / 4 and abs(d_hi - (c_hi + 3) / 6) <= step / 4, method


def test_mse_and_entropy_observe_sigmoid_outputs_instead_of_deriving_them(tmp_path, monkeypatch):
    from ptq.config import CalibrationMethod

    model = _derived_model()
    tensors = ["x", "c", "s", "t", "m", "y"]
    data = _samples(tmp_path / "c", [(1, 3, 20, 20)] * 6)
    calls = []
    original = runner.derived_values
    monkeypatch.setattr(runner, "derived_values", lambda *args: calls.append(args[-1]) or original(*args))
    for method in CalibrationMethod:
        if method == CalibrationMethod.AUTO:
            continue
        calls.clear()
        runner.calibrate(model, tensors, data, method=method)
        assert calls == [method not in (CalibrationMethod.MSE, CalibrationMethod.ENTROPY)], method
    derived_from = original(model, tensors, {}, False)
    assert "s" not in derived_from and "t" not in derived_from and "y" in derived_from  # the union stays derived
