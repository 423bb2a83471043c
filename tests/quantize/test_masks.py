"""Additive attention masks stay float: found structurally, kept out of ranges, padded batches still agree."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ptq
from ptq.quantize import masks

FINFO_MIN = float(np.finfo(np.float32).min)
HIDDEN, T = 16, 6


def attention(fill: float, style: str = "mul", seed: int = 0) -> onnx.ModelProto:
    """One self-attention head over x[N, T, 16] with mask[N, T] (int64), as transformers exports it.

    ``style``: "mul" adds ``(1 - Cast(mask)) * fill`` to the scores (eager BERT), "where" adds
    ``Where(Cast(mask, bool), 0, fill)``, "masked_fill" replaces scores by ``Where(mask, scores, fill)``.
    """
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.normal(size=(HIDDEN, HIDDEN)) * 0.4).astype(np.float32), name)
        for name in ("wq", "wk", "wv", "wo")
    ]
    inits += [
        numpy_helper.from_array(np.array(fill, dtype=np.float32), "fill"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(0.25, dtype=np.float32), "inv_sqrt_d"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v"),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"], name="qk"),
        helper.make_node("Mul", ["qk", "inv_sqrt_d"], ["scores"], name="scale"),
        helper.make_node("Unsqueeze", ["mask", "axis1"], ["m3"], name="mask_unsqueeze"),
    ]
    if style == "mul":
        nodes += [
            helper.make_node("Cast", ["m3"], ["mf"], name="mask_cast", to=TensorProto.FLOAT),
            helper.make_node("Sub", ["one", "mf"], ["inv"], name="mask_invert"),
            helper.make_node("Mul", ["inv", "fill"], ["bias"], name="mask_fill"),
            helper.make_node("Add", ["scores", "bias"], ["masked"], name="mask_add"),
        ]
    elif style == "where":
        nodes += [
            helper.make_node("Cast", ["m3"], ["mb"], name="mask_cast", to=TensorProto.BOOL),
            helper.make_node("Where", ["mb", "zero", "fill"], ["bias"], name="mask_fill"),
            helper.make_node("Add", ["scores", "bias"], ["masked"], name="mask_add"),
        ]
    else:
        nodes += [
            helper.make_node("Cast", ["m3"], ["mb"], name="mask_cast", to=TensorProto.BOOL),
            helper.make_node("Where", ["mb", "scores", "fill"], ["masked"], name="mask_add"),
        ]
    nodes += [
        helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["ctx"], name="ctx"),
        helper.make_node("MatMul", ["ctx", "wo"], ["y"], name="out"),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", HIDDEN]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", "T"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", HIDDEN])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def padded_batch(rng: np.random.Generator, lengths: tuple[int, ...]) -> dict[str, np.ndarray]:
    x = rng.normal(size=(len(lengths), T, HIDDEN)).astype(np.float32)
    mask = np.array([[1] * n + [0] * (T - n) for n in lengths], dtype=np.int64)
    x[mask == 0] = 0.0  # padded positions embed a pad token: its own value, masked out anyway
    return {"x": x, "mask": mask}


def run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


@pytest.mark.parametrize("fill", [FINFO_MIN, -10000.0, -1e9, -np.inf])
@pytest.mark.parametrize("style", ["mul", "where", "masked_fill"])
def test_mask_path_found_from_fill_to_softmax(fill, style):
    path = masks.find_mask_path(attention(fill, style))
    expected = {"mask_add", "softmax"} | ({"mask_fill"} if style != "masked_fill" else set())
    assert expected <= set(path.nodes)
    assert "masked" in path.tensors
    assert all(reason.startswith("attention-mask") for reason in path.nodes.values())
    # The scores and the weighted layers are not part of it.
    assert not {"q", "k", "v", "qk", "scale", "ctx", "out", "kt"} & set(path.nodes)
    if style == "mul":
        assert {"mask_invert", "mask_cast", "mask_unsqueeze"} <= set(path.nodes)


def test_no_fill_no_path_and_clip_bounds_are_not_fills():
    model = attention(-1.0)  # a small constant is no fill
    assert not masks.find_mask_path(model)
    clip = helper.make_graph(
        [helper.make_node("Clip", ["x", "lo", ""], ["y"], name="clip"), helper.make_node("Softmax", ["y"], ["z"], name="sm")],
        "clip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array(FINFO_MIN, dtype=np.float32), "lo")],
    )
    assert not masks.find_mask_path(helper.make_model(clip))


@pytest.mark.parametrize("style", ["mul", "where", "masked_fill"])
def test_static_int8_agrees_on_padded_and_unpadded_batches(style, tmp_path):
    model_path = tmp_path / "attention.onnx"
    onnx.save(attention(FINFO_MIN, style), model_path)
    rng = np.random.default_rng(1)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(8):  # padded batches only
        np.savez(calib / f"sample_{i:03d}.npz", **padded_batch(rng, (T, 3, 5, 2)))
    ranges = tmp_path / "ranges.json"
    result = ptq.convert(
        model_path,
        ptq.Config(output=tmp_path / "attention.int8.onnx", calibration_data=calib, save_ranges=ranges, write_ort=False),
    )
    kernels = {e.name: e for e in result.oplist.nodes}
    assert kernels["mask_add"].kernel == "float" and kernels["mask_add"].reason.startswith("attention-mask")
    assert kernels["softmax"].kernel == "float" and kernels["softmax"].reason.startswith("attention-mask")
    assert kernels["qk"].kernel == "int8" and kernels["ctx"].kernel == "int8" and kernels["out"].kernel == "int8"
    # No saved range holds the fill: it never set a quantized range.
    saved = json.loads(ranges.read_text())
    bounds = [abs(v) for lo_hi in saved["ranges"].values() for v in lo_hi]
    assert bounds and max(bounds) < 1e3
    held_out = np.random.default_rng(2)
    for lengths in [(T, 2, 4, 1), (T,), (3,)]:  # padded batches, an unpadded sentence, a short one alone
        feed = padded_batch(held_out, lengths)
        if len(lengths) == 1:
            feed = {"x": feed["x"][:, : lengths[0]], "mask": feed["mask"][:, : lengths[0]]}
        want, got = run(model_path, feed), run(result.outputs.onnx, feed)
        valid = feed["mask"].astype(bool)
        a, b = want[valid].ravel(), got[valid].ravel()
        assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


def attention_with_mask_input(softmax: bool = True, scores_from_weights: bool = False) -> onnx.ModelProto:
    """``attention`` whose additive mask is computed outside: a float input ``mask_bias[N, T]`` of 0 and a fill,
    unsqueezed and added to the scores (``scores_from_weights``: added to ``x @ wq`` instead, no attention)."""
    model = attention(FINFO_MIN, "mul")
    graph = model.graph
    keep = [n for n in graph.node if n.name not in ("mask_unsqueeze", "mask_cast", "mask_invert", "mask_fill", "mask_add")]
    add_to = "q" if scores_from_weights else "scores"
    mask_nodes = [
        helper.make_node("Unsqueeze", ["mask_bias", "axis1"], ["bias"], name="mask_unsqueeze"),
        helper.make_node("Add", [add_to, "bias"], ["masked"], name="mask_add"),
    ]
    if not softmax:
        keep = [helper.make_node("Relu", ["masked"], ["probs"], name="softmax") if n.name == "softmax" else n for n in keep]
    position = next(i for i, n in enumerate(keep) if n.name == "softmax")
    del graph.node[:]
    graph.node.extend(keep[:position] + mask_nodes + keep[position:])
    graph.input[1].CopyFrom(helper.make_tensor_value_info("mask_bias", TensorProto.FLOAT, ["N", "T"]))
    graph.initializer.remove(next(t for t in graph.initializer if t.name == "fill"))
    onnx.checker.check_model(model, full_check=True)
    return model


def bias_feed(feed: dict[str, np.ndarray], fill: float = FINFO_MIN) -> dict[str, np.ndarray]:
    """``padded_batch``'s feed with the mask as an additive bias: 0 where set, ``fill`` on padding."""
    return {"x": feed["x"], "mask_bias": np.where(feed["mask"] == 1, 0.0, fill).astype(np.float32)}


def test_mask_input_added_to_scores_is_on_the_path():
    path = masks.find_mask_path(attention_with_mask_input())
    assert path.inputs == ("mask_bias",) and not path.fills
    assert {"mask_unsqueeze", "mask_add", "softmax"} <= set(path.nodes)
    assert "mask_bias" in path.nodes["mask_unsqueeze"]
    assert not {"q", "k", "v", "qk", "scale", "ctx", "out", "kt"} & set(path.nodes)


@pytest.mark.parametrize("kind", ["no softmax", "added to a weighted layer"])
def test_a_float_input_added_elsewhere_is_no_mask(kind):
    model = attention_with_mask_input(softmax=kind != "no softmax", scores_from_weights=kind != "no softmax")
    assert not masks.find_mask_path(model)


@pytest.mark.parametrize("calibrated_on", ["padded", "unpadded"])
def test_static_int8_with_a_mask_input_agrees_on_padded_and_unpadded_batches(calibrated_on, tmp_path):
    model_path = tmp_path / "attention.onnx"
    onnx.save(attention_with_mask_input(), model_path)
    rng = np.random.default_rng(1)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(8):  # unpadded: every mask bias 0, so the samples never show the fill
        lengths = (T, 3, 5, 2) if calibrated_on == "padded" else (T, T, T, T)
        np.savez(calib / f"sample_{i:03d}.npz", **bias_feed(padded_batch(rng, lengths)))
    ranges = tmp_path / "ranges.json"
    result = ptq.convert(
        model_path,
        ptq.Config(output=tmp_path / "attention.int8.onnx", calibration_data=calib, save_ranges=ranges, write_ort=False),
    )
    kernels = {e.name: e for e in result.oplist.nodes}
    for name in ("mask_add", "softmax"):
        assert kernels[name].kernel == "float" and kernels[name].reason.startswith("attention-mask")
    assert kernels["qk"].kernel == "int8" and kernels["ctx"].kernel == "int8" and kernels["out"].kernel == "int8"
    saved = json.loads(ranges.read_text())
    assert "mask_bias" not in saved["ranges"] and "masked" not in saved["ranges"]
    bounds = [abs(v) for lo_hi in saved["ranges"].values() for v in lo_hi]
    assert bounds and max(bounds) < 1e3
    held_out = np.random.default_rng(2)
    for lengths in [(T, 2, 4, 1), (T,), (3,)]:
        feed = padded_batch(held_out, lengths)
        if len(lengths) == 1:
            feed = {"x": feed["x"][:, : lengths[0]], "mask": feed["mask"][:, : lengths[0]]}
        want, got = run(model_path, bias_feed(feed)), run(result.outputs.onnx, bias_feed(feed))
        valid = feed["mask"].astype(bool)
        a, b = want[valid].ravel(), got[valid].ravel()
        assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


def test_dynamic_int8_with_a_mask_input_agrees_on_padded_batches(tmp_path):
    model_path = tmp_path / "attention.onnx"
    onnx.save(attention_with_mask_input(), model_path)
    result = ptq.convert(model_path, ptq.Config(output=tmp_path / "attention.dyn.onnx", write_ort=False))
    kernels = {e.name: e for e in result.oplist.nodes}
    assert kernels["mask_add"].kernel == "float" and kernels["q"].kernel == "hybrid"  # dynamic mode quantizes weights only
    feed = bias_feed(padded_batch(np.random.default_rng(3), (T, 2, 4, 1)))
    want, got = run(model_path, feed), run(result.outputs.onnx, feed)
    valid = feed["mask_bias"] == 0
    a, b = want[valid].ravel(), got[valid].ravel()
    assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.99
