"""Hybrid LSTM (com.microsoft DynamicQuantizeLSTM): tiny LSTM graphs convert in both modes, match
float closely, and the op list says hybrid only when onnxruntime keeps the kernel."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import ptq
from ptq import qmath
from ptq.quantize import lstm
from ptq.write.oplist import FLOAT, HYBRID, build_oplist
from tests.robustness.graphs import feeds, recurrent_model
from tests.robustness.helpers import make_model, vi

MODES = ["static", "dynamic"]


def _w(seed, *shape, scale=0.3):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def full_lstm_model(direction: str = "bidirectional", layout: int = 0) -> onnx.ModelProto:
    """LSTM with bias, initial states, peepholes and every output, then a head; input [S, B, 24]."""
    d, hidden, size = (2 if direction == "bidirectional" else 1), 32, 24
    seq_axis = ["B", "S"] if layout else ["S", "B"]
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0", "P"], ["Y", "Yh", "Yc"], hidden_size=hidden,
                         direction=direction, layout=layout, name="rnn"),  # fmt: skip
        helper.make_node("ReduceMean", ["Y"], ["y"], keepdims=0, axes=[1 if layout == 0 else 2], name="mean"),
    ]
    state = ["B", d, hidden] if layout else [d, "B", hidden]
    inits = {"W": _w(1, d, 4 * hidden, size), "R": _w(2, d, 4 * hidden, hidden), "B": _w(3, d, 8 * hidden, scale=0.1),
             "P": _w(4, d, 3 * hidden, scale=0.1)}  # fmt: skip
    return make_model(nodes, [vi("x", shape=[*seq_axis, size]), vi("h0", shape=state), vi("c0", shape=state)],
                      [vi("y", shape=[*seq_axis, hidden]), vi("Yh", shape=state), vi("Yc", shape=state)], inits,
                      opset=17)  # fmt: skip


def _convert(model, tmp_path, mode, samples=None, **options):
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path))
    samples = samples if samples is not None else feeds(model, 4)
    calib = None
    if mode == "static":
        calib = tmp_path / "calib"
        calib.mkdir(exist_ok=True)
        for i, feed in enumerate(samples):
            np.savez(calib / f"s{i:03d}.npz", **feed)
    config = ptq.Config(calibration_data=calib, output=tmp_path / f"{mode}.onnx", auto_hybrid=False, **options)
    return path, ptq.convert(path, config), samples


def _cosines(reference, candidate, samples):
    a = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])
    result = []
    for feed in samples:
        for x, y in zip(a.run(None, feed), b.run(None, feed)):
            assert x.shape == y.shape
            result.append(qmath.cosine(x.ravel().astype(np.float64), y.ravel().astype(np.float64)))
    return result


def _entry(result, name):
    return next(e for e in result.oplist.nodes if e.name == name)


@pytest.mark.parametrize("mode", MODES)
def test_robustness_lstm_graph_runs_hybrid_and_matches_float(mode, tmp_path):
    path, result, samples = _convert(recurrent_model("LSTM"), tmp_path, mode)
    rnn = _entry(result, "rnn")
    assert (rnn.kernel, rnn.runs_as) == (HYBRID, "DynamicQuantizeLSTM"), rnn
    ops = [n.op_type for n in onnx.load(str(result.outputs.onnx)).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 1 and "LSTM" not in ops
    assert min(_cosines(path, result.outputs.onnx, samples)) > (0.999 if mode == "dynamic" else 0.99)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_with_states_peepholes_and_directions_matches_float(mode, direction, tmp_path):
    model = full_lstm_model(direction)
    rng = np.random.default_rng(7)
    d = 2 if direction == "bidirectional" else 1
    samples = [{"x": rng.normal(size=(s, b, 24)).astype(np.float32), "h0": rng.normal(size=(d, b, 32)).astype(np.float32) * 0.5,
                "c0": rng.normal(size=(d, b, 32)).astype(np.float32) * 0.5} for s, b in ((5, 1), (9, 3), (2, 2))]  # fmt: skip
    path, result, _ = _convert(model, tmp_path, mode, samples)
    assert _entry(result, "rnn").kernel == HYBRID
    cos = _cosines(path, result.outputs.onnx, samples)  # y, Yh, Yc of every sample
    assert len(cos) == 9 and min(cos) > 0.999, cos


@pytest.mark.parametrize("options", [{"per_channel": False}, {"reduce_range": False},
                                     {"weights": ptq.config.Scheme.ASYMMETRIC}])  # fmt: skip
def test_lstm_weight_options(options, tmp_path):
    path, result, samples = _convert(full_lstm_model(), tmp_path, "dynamic", **options)
    assert _entry(result, "rnn").kernel == HYBRID
    # 8-bit weights measured cosine 0.994 on an AVX2 CPU without VNNI (u8 x s8 pairs can saturate int16)
    floor = 0.99 if options.get("reduce_range") is False else 0.998
    assert min(_cosines(path, result.outputs.onnx, samples_for(full_lstm_model()))) > floor
    q = onnx.load(str(result.outputs.onnx))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    for n in q.graph.node:  # the writer stores large all-zero tensors as ConstantOfShape
        if n.op_type == "ConstantOfShape":
            value = onnx.numpy_helper.to_array(n.attribute[0].t)
            inits[n.output[0]] = np.full(inits[n.input[0]], value[0], value.dtype)
    (node,) = [n for n in q.graph.node if n.op_type == "DynamicQuantizeLSTM"]
    w_q, w_scale, w_zp = inits[node.input[1]], inits[node.input[8]], inits[node.input[9]]
    assert w_q.dtype == np.int8 and w_q.shape == (2, 24, 128)  # [D, input, 4H]: transposed
    assert inits[node.input[2]].shape == (2, 32, 128)
    assert w_scale.shape == ((2,) if options.get("per_channel") is False else (2, 128))
    assert w_zp.dtype == np.int8 and not w_zp.any()  # symmetric whatever --weights says
    limit = 127 if options.get("reduce_range") is False else 63
    assert np.abs(w_q).max() == limit


def samples_for(model):
    rng = np.random.default_rng(3)
    return [{"x": rng.normal(size=(4, 2, 24)).astype(np.float32), "h0": np.zeros((2, 2, 32), np.float32),
             "c0": np.zeros((2, 2, 32), np.float32)}]  # fmt: skip


def test_excluded_or_batch_first_lstm_stays_float_with_a_reason(tmp_path):
    _, result, _ = _convert(recurrent_model("LSTM"), tmp_path, "dynamic", exclude=("LSTM",))
    assert (_entry(result, "rnn").kernel, _entry(result, "rnn").reason) == (FLOAT, "excluded by the user (--exclude)")
    # onnxruntime has no batch-first (layout=1) LSTM at all; ptq would keep it float
    node = full_lstm_model("forward", layout=1).graph.node[0]
    inits = {t.name: t for t in full_lstm_model("forward", layout=1).graph.initializer}
    assert "layout=1" in lstm.why_float(node, inits)
    assert lstm.why_float(full_lstm_model("forward").graph.node[0], inits) is None
    assert "not a constant" in lstm.why_float(full_lstm_model("forward").graph.node[0], {})


def test_off_by_default_switch_and_hybrid_option(tmp_path, monkeypatch):
    monkeypatch.setattr(lstm, "DEFAULT_ON", False)
    _, result, _ = _convert(recurrent_model("LSTM"), tmp_path, "dynamic")
    assert _entry(result, "rnn").kernel == FLOAT and "--hybrid LSTM" in _entry(result, "rnn").reason
    _, result, _ = _convert(recurrent_model("LSTM"), tmp_path, "dynamic", hybrid=("rnn",))
    assert _entry(result, "rnn").kernel == HYBRID


def test_op_list_says_hybrid_only_when_onnxruntime_keeps_the_kernel(tmp_path):
    """Built from an optimized graph where the DynamicQuantizeLSTM is gone (a float LSTM of the same
    name in its place), the op list must say float."""
    from ptq.loader import SourceNode, load
    from ptq.quantize.dynamic import quantize_dynamic
    from ptq.write.oplist import optimized_graph

    path = tmp_path / "m.onnx"
    onnx.save_model(recurrent_model("LSTM"), str(path))
    loaded = load(path)
    prepared = [SourceNode(n.name, n.op_type, tuple(n.output)) for n in loaded.model.graph.node]
    result = quantize_dynamic(loaded.model, ptq.Config())
    optimized = optimized_graph(result.model.SerializeToString())
    kept = build_oplist(loaded.source_nodes, prepared, result.decisions, optimized)
    assert next(e for e in kept.nodes if e.name == "rnn").kernel == HYBRID
    for node in optimized.graph.node:
        if node.op_type == "DynamicQuantizeLSTM":
            node.op_type, node.domain = "LSTM", ""
    replaced = build_oplist(loaded.source_nodes, prepared, result.decisions, optimized)
    rnn = next(e for e in replaced.nodes if e.name == "rnn")
    assert rnn.kernel == FLOAT and "did not keep its hybrid kernel" in rnn.reason


@pytest.mark.parametrize("mode", MODES)
def test_hybrid_lstm_outputs_are_byte_deterministic(mode, tmp_path):
    outputs = []
    for run in range(2):
        folder = tmp_path / str(run)
        folder.mkdir()
        _, result, _ = _convert(recurrent_model("LSTM"), folder, mode)
        outputs.append((result.outputs.onnx.read_bytes(), result.outputs.ops.read_bytes()))
    assert outputs[0] == outputs[1]


def test_silero_vad_lstm_runs_hybrid(tmp_path):
    from bench import zoo

    result = ptq.convert(zoo.fetch_model("silero-vad"), ptq.Config(output=tmp_path / "vad.onnx", write_ort=False))
    (entry,) = [e for e in result.oplist.nodes if e.op_type == "LSTM"]
    assert (entry.kernel, entry.runs_as) == (HYBRID, "DynamicQuantizeLSTM")


@pytest.mark.models
@pytest.mark.parametrize("mode", MODES)
def test_silero_vad_fidelity_holds_with_the_hybrid_lstm(mode, tmp_path):
    """The bar for keeping the hybrid LSTM on by default: on the held-out speech, VAD frame
    decisions agree with float on >= 98% of frames and speech_probs cosine >= 0.99."""
    from bench import measure as bm
    from bench import zoo

    model = zoo.fetch_model("silero-vad")
    calib = tmp_path / "calib"
    zoo.write_calibration_dir("silero-vad", calib, "calib")
    evals = zoo.write_calibration_dir("silero-vad", tmp_path / "eval", "eval")
    config = ptq.Config(output=tmp_path / "vad.onnx", write_ort=False, calibration_data=calib if mode == "static" else None)
    result = ptq.convert(model, config)
    assert next(e for e in result.oplist.nodes if e.op_type == "LSTM").kernel == HYBRID
    a = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(result.outputs.onnx), providers=["CPUExecutionProvider"])
    samples = [dict(np.load(p)) for p in evals]
    ref, got = [a.run(None, f)[0] for f in samples], [b.run(None, f)[0] for f in samples]
    assert bm.frame_agreement(ref, got, bm.VAD_THRESHOLD) >= 0.98
    assert bm.cosine_similarity(ref, got) >= 0.99
