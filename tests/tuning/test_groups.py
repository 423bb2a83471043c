"""--auto-fallback (ptq.tuning.groups): groups are computing elementwise op types; choices are recorded."""

from __future__ import annotations

from itertools import pairwise

import ptq
from bench import zoo
from ptq.calibrate.range_file import read_ranges
from ptq.loader import load
from ptq.quantize.plan import ACCURACY_GROUP, make_plan
from ptq.recipe import ACCURACY, FLOAT
from ptq.tuning.groups import COMPUTING_OPS, FALLBACK_GAIN_DB, fallback_groups


def test_groups_are_int8_computing_ops_of_the_plan():
    model = load(zoo.fetch_model("ppocr-det")).model
    plan = make_plan(model, ptq.Config(calibration_data="unused"))
    groups = fallback_groups(model, plan)
    weighted = [n.name for n in model.graph.node if plan.decisions.get(n.name) and plan.decisions[n.name].quantize
                and plan.decisions[n.name].role == "weighted"]  # fmt: skip
    assert groups.pop(f"first layer: {weighted[0]}") == (weighted[0],)
    assert groups.pop(f"last layer: {weighted[-1]}") == (weighted[-1],)
    assert groups and set(groups) <= COMPUTING_OPS
    assert len(groups["Add"]) == sum(
        1 for n in model.graph.node if n.op_type == "Add" and plan.decisions[n.name].quantize and plan.decisions[n.name].role == "elementwise"
    )


def test_fallback_choice_is_noted_recorded_and_replayed(tmp_path):
    model = zoo.fetch_model("ppocr-cls")
    calib = tmp_path / "calib"
    zoo.write_calibration_dir("ppocr-cls", calib, "calib", n=8)
    ranges = tmp_path / "ranges.json"
    result = ptq.convert(model, ptq.Config(output=tmp_path / "a.onnx", calibration_data=calib, auto_fallback=True, save_ranges=ranges))
    # the fallback groups' placements: not auto-hybrid's (held out, it keeps the Reshape-fed
    # MatMul hybrid here) nor the accuracy search's (ptq.tuning.targets: each region's gain alone)
    fallback = [p for p in result.recipe.placements if p.reason == ACCURACY and p.runs == FLOAT and p.group != ACCURACY_GROUP]
    assert all(p.score_db is not None for p in fallback)
    # each kept group scored at least FALLBACK_GAIN_DB above the one kept before it
    scores = [result.recipe.method_scores and max(s.score_db for s in result.recipe.method_scores)]
    for group in dict.fromkeys(p.group for p in fallback):
        scores.append(next(p.score_db for p in fallback if p.group == group))
    assert all(b >= a + FALLBACK_GAIN_DB for a, b in pairwise(scores))
    layer = ("first layer: ", "last layer: ")  # kept by node name, op types by type
    assert all(p.target == (p.group.split(": ", 1)[1] if p.group.startswith(layer) else p.group) for p in fallback)
    assert read_ranges(ranges).recipe == result.recipe
    assert {p.target for p in fallback} <= set(result.recipe.float_targets)
    replay = ptq.convert(model, ptq.Config(output=tmp_path / "b.onnx", load_ranges=ranges))
    assert replay.outputs.onnx.read_bytes() == result.outputs.onnx.read_bytes()
