"""HardSwish/HardSigmoid chains into HardSigmoid (+ Mul): exact in float through onnxruntime,
fused into the Conv by onnxruntime afterwards, declined with a reason where the chain is not
one."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from ptq.rewrites import fuse_hardswish
from tests.rewrites.helpers import assert_close, copy, model_of, optimized_ops, run

RNG = np.random.default_rng(7)
WEIGHT = RNG.normal(size=(8, 4, 3, 3)).astype(np.float32)
BIAS = RNG.normal(size=8).astype(np.float32)
NEXT = RNG.normal(size=(8, 8, 1, 1)).astype(np.float32)


def chain(variant: str, opset: int = 13):
    """Conv -> the exported HardSwish/HardSigmoid ``variant`` -> y -> Conv -> z (onnxruntime
    fuses no activation whose output is a graph output)."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])
    add = helper.make_node("Add", ["three", "c"] if variant == "div_then_mul" else ["c", "three"], ["a"], name="add")
    clip = helper.make_node("Clip", ["a", "zero", "six"], ["r"], name="clip")
    nodes = {
        "mul_then_div": [helper.make_node("Mul", ["c", "r"], ["m"], name="mul"), helper.make_node("Div", ["m", "six"], ["y"], name="div")],
        "div_then_mul": [helper.make_node("Div", ["r", "six"], ["d"], name="div"), helper.make_node("Mul", ["d", "c"], ["y"], name="mul")],
        "mul_sixth": [helper.make_node("Mul", ["r", "c"], ["m"], name="mul"), helper.make_node("Mul", ["sixth", "m"], ["y"], name="sixth_mul")],
        "gate": [helper.make_node("Div", ["r", "six"], ["y"], name="div")],
    }[variant]
    inits = {"w": WEIGHT, "b": BIAS, "three": np.float32(3), "zero": np.float32(0), "six": np.float32(6), "sixth": np.float32(1 / 6), "w2": NEXT}
    last = helper.make_node("Conv", ["y", "w2"], ["z"], name="next")
    return model_of([conv, add, clip, *nodes, last], [("x", [1, 4, 8, 8])], [("z", [1, 8, 8, 8])], inits, opset=opset)


def feeds():
    # values spread over both knees (-3, 3) of relu6(x + 3) and beyond
    return {"x": (RNG.normal(size=(1, 4, 8, 8)) * 2).astype(np.float32)}


@pytest.mark.parametrize("variant", ["mul_then_div", "div_then_mul", "mul_sixth", "gate"])
def test_rewrite_is_exact_and_onnxruntime_fuses_it(variant, tmp_path):
    model = chain(variant)
    rewritten = copy(model)
    result = fuse_hardswish.apply(rewritten)
    assert result.applied == tuple(n.name for n in model.graph.node[1:-1]) and not result.declined  # the chain
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops == (["Conv", "HardSigmoid", "Conv"] if variant == "gate" else ["Conv", "HardSigmoid", "Mul", "Conv"])
    hardsigmoid = rewritten.graph.node[1]
    assert [a.f for a in hardsigmoid.attribute if a.name == "alpha"] == [pytest.approx(1 / 6)]
    assert [a.f for a in hardsigmoid.attribute if a.name == "beta"] == [0.5]
    for _ in range(3):
        x = feeds()
        assert_close(run(model, x), run(rewritten, x), rel=1e-6)
    # What the rewrite is for: onnxruntime leaves the exported chain as separate elementwise
    # passes, but folds HardSigmoid (and x * HardSigmoid(x)) into the Conv's activation.
    before = optimized_ops(model, tmp_path)
    after = optimized_ops(rewritten, tmp_path)
    assert any(op == "Clip" for _, op, _ in before)
    assert [op for _, op, _ in after if op not in ("ReorderInput", "ReorderOutput")] == ["Conv", "Conv"]
    assert after[[op for _, op, _ in after].index("Conv")][2] == ("HardSigmoid" if variant == "gate" else "HardSwish")


def test_opset_11_chain_is_rewritten_too():
    model = chain("mul_then_div", opset=11)
    rewritten = copy(model)
    assert fuse_hardswish.apply(rewritten).applied == ("add", "clip", "mul", "div")
    x = feeds()
    assert_close(run(model, x), run(rewritten, x), rel=1e-6)


def test_declines_a_clip_that_is_not_relu6():
    model = chain("mul_then_div")
    for init in model.graph.initializer:
        if init.name == "six":
            init.float_data[:] = []
            init.raw_data = np.float32(5).tobytes()
    result = fuse_hardswish.apply(model)
    assert not result.applied
    assert [d.site for d in result.declined] == ["clip"]
    assert "not relu6" in result.declined[0].reason
    assert [n.op_type for n in model.graph.node] == ["Conv", "Add", "Clip", "Mul", "Div", "Conv"]


def test_declines_when_an_inner_tensor_is_read_elsewhere():
    model = chain("mul_then_div")
    model.graph.output.append(helper.make_tensor_value_info("r", 1, None))  # relu6(x + 3) is an output too
    result = fuse_hardswish.apply(model)
    assert not result.applied and "read elsewhere" in result.declined[0].reason


def test_relu6_not_divided_is_declined():
    model = chain("mul_then_div")
    del model.graph.node[-2]  # the Div
    model.graph.node[-1].input[0] = "m"
    result = fuse_hardswish.apply(model)
    assert not result.applied and result.declined[0].reason == "relu6(x + 3) is not divided by 6"


def test_real_ppocr_cls(tmp_path):
    """PP-OCR cls exports its 18 HardSwish as Add/Clip/Mul/Div: all rewritten, outputs kept on
    real held-out images, and no Clip or Div left for onnxruntime to run."""
    from bench import zoo
    from ptq import loader

    prepared = loader.load(zoo.fetch_model("ppocr-cls")).model
    rewritten = copy(prepared)
    result = fuse_hardswish.apply(rewritten)
    assert len(result.applied) == 18 * 4 and not result.declined  # 18 chains of Add, Clip, Mul, Div
    assert not {"Clip", "Div"} & {n.op_type for n in rewritten.graph.node}
    for feed in zoo.inputs("ppocr-cls", "eval", 4):
        assert_close(run(prepared, feed), run(rewritten, feed), rel=1e-5)


def test_the_op_list_says_ptq_rewrote_the_chain(tmp_path):
    import ptq
    from tests import tiny

    model = tiny.save(chain("mul_then_div"), tmp_path / "chain.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):
        np.savez(calib / f"sample_{i:03d}.npz", **feeds())
    result = ptq.convert(model, ptq.Config(calibration_data=calib, output=tmp_path / "int8.onnx"))
    entries = {e.name: e for e in result.oplist.nodes}
    assert any("rewrote 1 HardSwish" in n for n in result.notes)
    for name in ("add", "clip", "mul", "div"):
        assert entries[name].reason.startswith(fuse_hardswish.DESCRIPTION), (name, entries[name].reason)
    assert entries["div"].kernel == "int8" and "now Mul 'div/HardSwish'" in entries["div"].reason
    assert entries["clip"].kernel == "folded"
