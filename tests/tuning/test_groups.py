"""--auto-fallback (ptq.tuning.groups): groups are computing elementwise op types; choices are recorded."""

from __future__ import annotations

import json

import ptq
from bench import zoo
from ptq.tuning.groups import COMPUTING_OPS, fallback_groups
from ptq.loader import load
from ptq.quantize.plan import make_plan


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
    note = next(n for n in result.notes if n.startswith("float fallback by op type:"))
    kept = note.split("kept float: ")[1].split(" (")[0]
    saved = json.loads(ranges.read_text())["exclude"]
    layer = ("first layer: ", "last layer: ")  # kept by node name
    assert saved == ([] if kept == "none" else [k.split(": ", 1)[1] if k.startswith(layer) else k for k in kept.split(", ")])
    replay = ptq.convert(model, ptq.Config(output=tmp_path / "b.onnx", load_ranges=ranges))
    assert replay.outputs.onnx.read_bytes() == result.outputs.onnx.read_bytes()
