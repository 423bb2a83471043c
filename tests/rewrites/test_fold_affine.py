"""Constant affine ops folded into neighbouring Convs: exact in float through onnxruntime
(borders of padded Convs included), declined with a reason where a fold would not be exact."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from ptq.rewrites import fold_affine, fuse_hardswish
from tests.rewrites.helpers import assert_close, copy, model_of, run

RNG = np.random.default_rng(3)
C = 8


def conv(name, x, y, w, b=None, **kw):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], name=name, **kw)


def weights(cout=C, cin=C, k=3, scale=0.3):
    return (RNG.normal(size=(cout, cin, k, k)) * scale).astype(np.float32)


def x_feed(cin=C):
    return {"x": RNG.normal(size=(1, cin, 9, 9)).astype(np.float32)}


def check(model, *, folded, left):
    """Apply the pass; ``folded`` node names applied; ``left`` the op types remaining."""
    rewritten = copy(model)
    result = fold_affine.apply(rewritten)
    assert sorted(result.applied) == sorted(folded)
    assert [n.op_type for n in rewritten.graph.node] == left
    for _ in range(2):
        x = x_feed(model.graph.input[0].type.tensor_type.shape.dim[1].dim_value)
        assert_close(run(model, x), run(rewritten, x), rel=2e-6)
    return result, rewritten


def test_scalar_mul_first_input_and_add_fold_into_the_conv_before():
    """PP-LCNetV3's learnable affine block: Mul(const [1], x) then Add(x, const [1])."""
    nodes = [
        conv("conv", "x", "c", "w", "b", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["a", "c"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "b2"], ["y"], name="add"),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    inits = {"w": weights(), "b": RNG.normal(size=C), "a": [0.94], "b2": [0.5]}
    check(model_of(nodes, [("x", [1, C, 9, 9])], ["z"], inits), folded=["mul", "add"], left=["Conv", "Relu"])


@pytest.mark.parametrize(
    "op, order, shape",
    [("Mul", 0, (1, C, 1, 1)), ("Mul", 1, (C, 1, 1)), ("Add", 0, (C, 1, 1)), ("Sub", 1, (1, C, 1, 1)),
     ("Sub", 0, (1, C, 1, 1)), ("Div", 1, (C, 1, 1)), ("Add", 1, ())],
)  # fmt: skip
def test_per_channel_and_either_order_after_a_conv(op, order, shape):
    constant = (RNG.uniform(0.5, 2, size=shape) * RNG.choice([-1, 1], size=shape)).astype(np.float32)
    inputs = ["k", "c"] if order == 0 else ["c", "k"]
    nodes = [conv("conv", "x", "c", "w", pads=[1, 1, 1, 1]), helper.make_node(op, inputs, ["y"], name="affine"),
             helper.make_node("Relu", ["y"], ["z"], name="relu")]  # fmt: skip
    check(model_of(nodes, [("x", [1, C, 9, 9])], ["z"], {"w": weights(), "k": constant}), folded=["affine"], left=["Conv", "Relu"])


def test_add_and_batchnorm_after_a_conv_transpose():
    """PP-OCR det's head: ConvTranspose -> Add(bias [1,C,1,1]) -> BatchNormalization -> Relu."""
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["t"], name="up", strides=[2, 2]),
        helper.make_node("Add", ["t", "bias"], ["a"], name="add"),
        helper.make_node("BatchNormalization", ["a", "g", "beta", "mean", "var"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["z"], name="relu"),
    ]
    inits = {"w": RNG.normal(size=(C, 4, 2, 2)), "bias": RNG.normal(size=(1, 4, 1, 1)), "g": RNG.uniform(0.5, 2, 4),
             "beta": RNG.normal(size=4), "mean": RNG.normal(size=4), "var": RNG.uniform(0.5, 2, 4)}  # fmt: skip
    check(model_of(nodes, [("x", [1, C, 9, 9])], ["z"], inits), folded=["add", "bn"], left=["ConvTranspose", "Relu"])


def test_mul_and_add_before_an_unpadded_conv_fold_into_it():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Mul", ["c1", "r"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "d"], ["y"], name="add"),
        conv("conv", "y", "z", "w", "b"),
    ]
    inits = {"c1": RNG.uniform(0.5, 2, (1, C, 1, 1)), "d": RNG.normal(size=(C, 1, 1)), "w": weights(), "b": RNG.normal(size=C)}
    check(model_of(nodes, [("x", [1, C, 9, 9])], ["z"], inits), folded=["mul", "add"], left=["Relu", "Conv"])


@pytest.mark.parametrize("group", [1, 2, C])
def test_before_a_padded_conv_the_scale_moves_in_and_one_add_stays(group):
    """HardSwish -> Mul(c) -> Add(d) -> padded (depthwise) Conv: a zero-padded border sees 0,
    not d, so the offset cannot enter the bias; c x + d = c (x + d / c) still moves c."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Mul", ["c1", "r"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "d"], ["y"], name="add"),
        conv("dw", "y", "z", "w", "b", pads=[1, 1, 1, 1], group=group),
    ]
    scale = RNG.uniform(0.5, 2, (C, 1, 1)) * RNG.choice([-1, 1], (C, 1, 1))
    inits = {"c1": scale, "d": [0.7], "w": weights(cin=C // group), "b": RNG.normal(size=C)}
    result, rewritten = check(model_of(nodes, [("x", [1, C, 9, 9])], ["z"], inits), folded=["mul"], left=["Relu", "Add", "Conv"])
    assert [d.site for d in result.declined] == ["add"] and "pads with zeros" in result.declined[0].reason
    add = rewritten.graph.node[1]
    assert add.input[0] == "r" and add.output[0] != "y"  # new values, new name


def test_a_shared_weight_is_copied():
    nodes = [
        conv("conv1", "x", "c", "w"),
        helper.make_node("Mul", ["c", "k"], ["m"], name="mul"),
        conv("conv2", "x", "z2", "w"),
        helper.make_node("Add", ["m", "z2"], ["z"], name="sum"),
    ]
    check(model_of(nodes, [("x", [1, C, 9, 9])], ["z"], {"w": weights(), "k": [3.0]}), folded=["mul"], left=["Conv", "Conv", "Add"])


def test_declines_what_is_not_exact_or_not_next_to_a_conv():
    nodes = [
        conv("conv", "x", "c", "w"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),  # the Conv output is read twice
        helper.make_node("Mul", ["c", "k"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "r"], ["s"], name="sum"),
        helper.make_node("Mul", ["s", "row"], ["z"], name="rowmul"),  # broadcast along the last axis
    ]
    inits = {"w": weights(), "k": [2.0], "row": RNG.normal(size=7)}
    result, _ = check(model_of(nodes, [("x", [1, C, 9, 9])], ["z"], inits), folded=[], left=["Conv", "Relu", "Mul", "Add", "Mul"])
    assert [d.site for d in result.declined] == ["mul"]
    assert "read elsewhere" in result.declined[0].reason


@pytest.mark.models
def test_real_ppocr_det():
    """PP-OCRv4 det (PP-LCNetV3): after the HardSwish rewrite, the affine Mul/Add pairs fold
    into the Convs on both sides; outputs kept on real held-out images."""
    from bench import zoo
    from ptq import loader

    prepared = loader.load(zoo.fetch_model("ppocr-det")).model
    rewritten = copy(prepared)
    fuse_hardswish.apply(rewritten)
    result = fold_affine.apply(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert len(result.applied) >= 90, len(result.applied)
    assert ops.count("Mul") + ops.count("Add") <= 60 < sum(n.op_type in ("Mul", "Add") for n in prepared.graph.node) - 90
    assert all("pads with zeros" in d.reason or "not a Conv output" in d.reason for d in result.declined)
    for feed in zoo.inputs("ppocr-det", "eval", 2):
        assert_close(run(prepared, feed), run(rewritten, feed), rel=1e-4)
