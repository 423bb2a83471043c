"""SmoothQuant (ptq.smooth): the rescaling is exact in float, and only applied where it is free."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ptq.rewrites import smoothquant as smooth


def _model(shared_constant: bool = False, extra_reader: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "w2")
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Mul", ["h", "half"], ["g"], name="act"),
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="fc2"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared_constant:  # a second Mul reading the same constant (as after onnxruntime's folding)
        nodes.append(helper.make_node("Mul", ["y", "half"], ["y2"], name="other"))
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, None))
    if extra_reader:  # g also feeds a non-MatMul: rescaling g would change that output
        nodes.append(helper.make_node("Relu", ["g"], ["r"], name="relu"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])], outputs, [w1, w2, half]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def test_smoothing_scales_follow_the_formula_and_guard_zeros():
    s = smooth.smoothing_scales(np.array([4.0, 9.0, 0.0]), np.array([1.0, 4.0, 2.0]), 0.5)
    np.testing.assert_allclose(s, [2.0, 1.5, 1.0])


def test_rescaling_is_exact_in_float_even_with_a_shared_constant():
    model = _model(shared_constant=True)
    x = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32) * 10
    before = _run(model, x)
    groups = smooth.find_groups(model)
    assert [g.activation for g in groups] == ["g"]
    absmax = {"g": np.abs(_intermediate(model, x)).max(axis=0)}
    applied = smooth.apply(model, groups, absmax, 0.5)
    assert not np.allclose(applied["g"], 1.0)
    after = _run(model, x)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_not_applied_where_another_op_reads_the_activation():
    assert smooth.find_groups(_model(extra_reader=True)) == []


def _intermediate(model, x):
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["g"], {"x": x})[0]


def _saved_model_and_samples(tmp_path):
    path = tmp_path / "mlp.onnx"
    model = _model()
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4]))
    onnx.save(model, str(path))
    data = tmp_path / "calib"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        x = rng.normal(size=(2, 8)).astype(np.float32)
        x[:, 3] *= 30  # an outlier channel for smoothing to move
        np.save(data / f"s{i}.npy", x)
    return path, data


def test_ranges_saved_from_a_smoothed_model_are_refused_without_the_same_smoothing(tmp_path):
    import pytest

    from ptq import Config, convert
    from ptq.errors import UsageError

    path, data = _saved_model_and_samples(tmp_path)
    ranges = tmp_path / "ranges.json"
    first = tmp_path / "first.onnx"
    convert(path, Config(output=first, calibration_data=data, smoothquant=0.5, save_ranges=ranges, write_ort=False))
    with pytest.raises(UsageError, match="needs -c"):
        Config(output=tmp_path / "x.onnx", load_ranges=ranges, smoothquant=0.5)
    with pytest.raises(UsageError, match="calibrated with --smoothquant 0.5, this run has no --equalize, --equalize-activations or --smoothquant"):
        convert(path, Config(output=tmp_path / "y.onnx", load_ranges=ranges, write_ort=False))
    with pytest.raises(UsageError, match="this run has --smoothquant 0.8"):
        convert(path, Config(output=tmp_path / "z.onnx", calibration_data=data, load_ranges=ranges, smoothquant=0.8, write_ort=False))
    again = tmp_path / "again.onnx"
    convert(path, Config(output=again, calibration_data=data, load_ranges=ranges, smoothquant=0.5, write_ort=False))
    assert again.read_bytes() == first.read_bytes()
    assert not (tmp_path / "y.onnx").exists() and not (tmp_path / "z.onnx").exists()


def test_ranges_saved_without_smoothing_are_refused_by_a_smoothing_run(tmp_path):
    import pytest

    from ptq import Config, convert
    from ptq.errors import UsageError

    path, data = _saved_model_and_samples(tmp_path)
    ranges = tmp_path / "ranges.json"
    convert(path, Config(output=tmp_path / "plain.onnx", calibration_data=data, save_ranges=ranges, write_ort=False))
    # the plain run either smoothed nothing or chose its own smoothing by score (ptq.tuning.smoothing): neither is 0.5 on every group
    with pytest.raises(UsageError, match="calibrated with (no --equalize, --equalize-activations or --smoothquant|--smoothquant 0.5 \\(chosen by ptq's scoring\\)), this run has --smoothquant 0.5"):
        convert(path, Config(output=tmp_path / "s.onnx", calibration_data=data, load_ranges=ranges, smoothquant=0.5, write_ort=False))


def test_inserted_where_another_op_reads_the_activation_and_exact_in_float():
    model = _model(extra_reader=True)
    groups = smooth.find_groups(model, insert=True)
    assert [(g.activation, g.inserted, g.readers) for g in groups] == [("x", True, ("fc1",)), ("g", True, ("fc2",))]
    x = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32) * 10
    before = _run(model, x)
    absmax = {"x": np.abs(x).max(axis=0), "g": np.abs(_intermediate(model, x)).max(axis=0)}
    inserted: dict[str, str] = {}
    applied = smooth.apply(model, groups, absmax, 0.5, inserted)
    assert set(applied) == {"x", "g"} and set(inserted) == {"x", "g"}
    nodes = {n.name: n for n in model.graph.node}
    assert nodes["fc2"].input[0] == "g/smoothed" and nodes["relu"].input[0] == "g"  # the other reader reads g as it was
    assert nodes[inserted["g"]].op_type == "Mul" and nodes[inserted["g"]].output[0] == "g/smoothed"
    defined = {"x"} | {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # still in topological order
        assert set(node.input) <= defined, node.name
        defined.update(node.output)
    for a, b in zip(before, _run(model, x)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
