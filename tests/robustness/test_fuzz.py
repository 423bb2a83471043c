"""Fuzzing the loader and the calibration reader with hypothesis: mutated bytes of small valid
files must either load or fail with a PtqError subclass (one clear line), never another exception.

The default tier runs a few seconds of examples; ``pytest -m fuzz`` runs the long campaign (and
also pushes whatever loads through the whole conversion).
"""

from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("hypothesis")  # a test extra (pyproject: test = [..., "hypothesis"])

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptq
from ptq import loader
from ptq.calibrate.data import InputSpec
from ptq.calibrate.samples import read_sample
from ptq.errors import PtqError
from tests import tiny
from tests.robustness.graphs import feeds, if_model, multi_input_model, shared_weight_model
from tests.robustness.helpers import nested_if_bytes

SHORT = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
LONG = settings(max_examples=20000, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _long_run_selected(request) -> None:
    if "fuzz" not in (request.config.getoption("-m") or ""):
        pytest.skip("long fuzz campaign: run with -m fuzz")


# --------------------------------------------------------------------------------------- mutations


def _apply(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op, a, b in ops:
        n = len(buf)
        if n == 0:
            buf += bytes([a % 256])
            continue
        i = a % n
        if op == "flip":
            buf[i] ^= (b % 255) + 1
        elif op == "set":
            buf[i] = b % 256
        elif op == "cut":
            del buf[i:]
        elif op == "delete":
            del buf[i : i + 1 + b % 64]
        elif op == "dup":
            buf[i:i] = buf[i : i + 1 + b % 64]
        elif op == "varint":  # a huge varint where a length or a dimension may be
            buf[i : i + 1] = bytes([0xFF] * (1 + b % 9)) + b"\x01"
        elif op == "insert":
            buf[i:i] = bytes([b % 256]) * (1 + b % 8)
    return bytes(buf)


OPS = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "cut", "delete", "dup", "varint", "insert"]), st.integers(0, 2**20), st.integers(0, 2**16)),
    min_size=1, max_size=5,
)  # fmt: skip


def _seed_models() -> list[bytes]:
    """Small valid models with little weight data, so mutations mostly hit the structure."""
    seeds = [if_model(), multi_input_model(), shared_weight_model(opset=11), tiny.small_mlp()]
    out = [m.SerializeToString() for m in seeds]
    out.append(nested_if_bytes(4))
    return out


SEEDS = _seed_models()


OP_TYPES = ["Relu", "Conv", "MatMul", "Gemm", "Add", "If", "Loop", "Reshape", "Gather", "Concat", "Softmax", "Cast",
            "QuantizeLinear", "Identity", "Bogus", "ConstantOfShape", "Expand", "Shape", "LSTM", "Transpose"]  # fmt: skip
TYPES = [onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT64,
         onnx.TensorProto.INT8, onnx.TensorProto.BOOL, onnx.TensorProto.STRING, 0, 99]  # fmt: skip


def _mutate_fields(data: bytes, edits) -> bytes:
    """Field-level edits of a parsed model (op types, names, types, shapes, attributes, opsets):
    mutations that survive parsing and reach the later stages."""
    model = onnx.ModelProto()
    model.ParseFromString(data)
    graph = model.graph
    for kind, a, b in edits:
        node = graph.node[a % len(graph.node)] if graph.node else None
        init = graph.initializer[a % len(graph.initializer)] if graph.initializer else None
        if kind == "op_type" and node is not None:
            node.op_type = OP_TYPES[b % len(OP_TYPES)]
        elif kind == "input" and node is not None and node.input:
            names = [o for n in graph.node for o in n.output] + [i.name for i in graph.input] + [t.name for t in graph.initializer] + [""]
            node.input[b % len(node.input)] = names[b % len(names)]
        elif kind == "drop_input" and node is not None and node.input:
            del node.input[b % len(node.input)]
        elif kind == "attribute" and node is not None and node.attribute:
            attr = node.attribute[b % len(node.attribute)]
            if attr.type == onnx.AttributeProto.INT:
                attr.i = [-1, 0, 1, 2, 7, 2**31, -(2**40)][b % 7]
            elif attr.type == onnx.AttributeProto.INTS and attr.ints:
                attr.ints[b % len(attr.ints)] = [-1, 0, 3, 2**20][b % 4]
            elif attr.type == onnx.AttributeProto.FLOAT:
                attr.f = [float("nan"), float("inf"), 0.0, -1.0][b % 4]
        elif kind == "dims" and init is not None and init.dims:
            init.dims[b % len(init.dims)] = [0, 1, 2, -1, 3, 2**20][b % 6]
        elif kind == "dtype" and init is not None:
            init.data_type = TYPES[b % len(TYPES)]
        elif kind == "payload" and init is not None and init.HasField("raw_data"):
            raw = bytearray(init.raw_data)
            if raw:
                raw[b % len(raw)] = 0xFF  # NaN patterns in float32
            init.raw_data = bytes(raw[: len(raw) - (b % 3)])
        elif kind == "input_type" and graph.input:
            vi = graph.input[a % len(graph.input)]
            vi.type.tensor_type.elem_type = TYPES[b % len(TYPES)]
        elif kind == "input_shape" and graph.input:
            dims = graph.input[a % len(graph.input)].type.tensor_type.shape.dim
            if dims:
                dims[b % len(dims)].dim_value = [0, 1, 5, 2**40][b % 4]
        elif kind == "opset":
            model.opset_import[0].version = 1 + b % 30
        elif kind == "ir_version":
            model.ir_version = b % 14
        elif kind == "drop_node" and node is not None:
            graph.node.remove(node)
        elif kind == "output":
            if graph.output:
                graph.output[a % len(graph.output)].name = graph.node[b % len(graph.node)].output[0] if graph.node else "nothing"
    return model.SerializeToString()


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["op_type", "input", "drop_input", "attribute", "dims", "dtype", "payload", "input_type",
                         "input_shape", "opset", "ir_version", "drop_node", "output"]),
        st.integers(0, 2**16), st.integers(0, 2**16),
    ),
    min_size=1, max_size=3,
)  # fmt: skip


def _load_mutated(data: bytes, convert: bool = False) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ptq-fuzz-"))
    try:
        path = folder / "m.onnx"
        path.write_bytes(data)
        try:
            calib = None
            if convert == "static":
                calib = folder / "calib"
                calib.mkdir()
                try:
                    samples = feeds(onnx.load(str(path), load_external_data=False), n=2)
                except Exception:  # not even parseable, or input types numpy cannot make
                    samples = [{"x": np.zeros(1, np.float32)}]
                for i, feed in enumerate(samples):
                    np.savez(calib / f"s{i}.npz", **feed)
            if convert:
                ptq.convert(path, ptq.Config(output=folder / "q.onnx", calibration_data=calib))
            else:
                loader.load(path)
        except PtqError as exc:
            message = str(exc)
            assert message and "\n" not in message and "Traceback" not in message, message
            assert not message.startswith("internal error"), message
    finally:
        shutil.rmtree(folder)


@SHORT
@given(seed=st.sampled_from(range(len(SEEDS))), ops=OPS)
def test_loader_on_mutated_models(seed, ops):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _load_mutated(_apply(SEEDS[seed], ops))


@SHORT
@given(seed=st.sampled_from(range(len(SEEDS) - 1)), edits=EDITS)
def test_loader_on_edited_models(seed, edits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _load_mutated(_mutate_fields(SEEDS[seed], edits))


@pytest.mark.fuzz
def test_converter_on_edited_models_long_campaign(request):
    _long_run_selected(request)

    @settings(max_examples=5000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(seed=st.sampled_from(range(len(SEEDS) - 1)), edits=EDITS, static=st.booleans())
    def campaign(seed, edits, static):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _load_mutated(_mutate_fields(SEEDS[seed], edits), convert="static" if static else "dynamic")

    campaign()


@pytest.mark.fuzz
def test_loader_and_converter_long_campaign(request):
    _long_run_selected(request)

    @LONG
    @given(seed=st.sampled_from(range(len(SEEDS))), ops=OPS, convert=st.booleans())
    def campaign(seed, ops, convert):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _load_mutated(_apply(SEEDS[seed], ops), convert=convert)

    campaign()


# ---------------------------------------------------------------------------------- calibration


SPECS = [InputSpec("x", np.dtype(np.float32), ("N", 3, 16, 16))]
TWO = SPECS + [InputSpec("ids", np.dtype(np.int64), ("N", "T"))]


def _calibration_seeds() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 3, 16, 16)).astype(np.float32)
    seeds = []
    for suffix, save in (
        (".npy", lambda f: np.save(f, x)),
        (".npy", lambda f: np.save(f, np.asfortranarray(x))),
        (".npz", lambda f: np.savez(f, x=x)),
        (".npz", lambda f: np.savez_compressed(f, x=x, ids=rng.integers(0, 9, size=(1, 5)))),
    ):
        buffer = io.BytesIO()
        save(buffer)
        seeds.append((suffix, buffer.getvalue()))
    return seeds


CALIBRATION_SEEDS = _calibration_seeds()


def _read_mutated(suffix: str, data: bytes) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ptq-fuzz-"))
    try:
        path = folder / f"s{suffix}"
        path.write_bytes(data)
        for specs in (SPECS, TWO):
            try:
                feed = read_sample(path, specs)
            except PtqError as exc:
                assert str(exc) and "\n" not in str(exc), str(exc)
            else:
                assert set(feed) == {s.name for s in specs}
    finally:
        shutil.rmtree(folder)


@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(len(CALIBRATION_SEEDS))), ops=OPS)
def test_calibration_reader_on_mutated_files(seed, ops):
    suffix, data = CALIBRATION_SEEDS[seed]
    _read_mutated(suffix, _apply(data, ops))


@pytest.mark.fuzz
def test_calibration_reader_long_campaign(request):
    _long_run_selected(request)

    @settings(max_examples=30000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(seed=st.sampled_from(range(len(CALIBRATION_SEEDS))), ops=OPS)
    def campaign(seed, ops):
        suffix, data = CALIBRATION_SEEDS[seed]
        _read_mutated(suffix, _apply(data, ops))

    campaign()
