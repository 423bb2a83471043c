"""Shared helpers of the robustness tests: running the CLI in-process or in a subprocess,
listing a folder, checking the one-line error contract, and building hostile models."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from ptq.cli import main

REPO = Path(__file__).resolve().parents[2]


def invoke(*args):
    """``ptq convert ARGS`` in this process (click's runner)."""
    return CliRunner().invoke(main, ["convert", *map(str, args)])


# onnxruntime keeps a session-id file in the temp folder ($TMPDIR/.ses); not ptq's to clean up.
NOT_OURS = {".ses"}


def listing(*folders: Path) -> list[str]:
    """Every file and folder below ``folders`` (relative, sorted), hidden temp files included."""
    names = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            names += sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name not in NOT_OURS)
    return names


def check_error(exit_code: int, output: str, code: int, message, before: list[str], after: list[str]) -> str:
    """The error contract: the documented exit code, exactly one ``ptq: error:`` line holding one
    of ``message``, no traceback, and nothing left behind. Returns the error line."""
    lines = [line for line in output.splitlines() if line.startswith("ptq: error:")]
    assert exit_code == code, f"exit {exit_code}, expected {code}:\n{output}"
    assert len(lines) == 1, output
    messages = (message,) if isinstance(message, str) else tuple(message)
    assert any(m in lines[0] for m in messages), f"{lines[0]!r} does not say any of {messages}"
    assert "Traceback" not in output, output
    assert after == before, f"files changed: {sorted(set(after) ^ set(before))}"
    return lines[0]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    max_rss_mb: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


# The child reports its own peak resident memory (VmHWM, which exec resets) when it exits: the
# ru_maxrss that wait4 returns keeps the high-water mark of the memory it was forked (vforked)
# from, here pytest's own peak, which sat near the tests' limit by itself.
_REPORT_PEAK = """
import atexit, os, runpy, sys
def _report_peak():
    with open("/proc/self/status") as status, open(os.environ["PTQ_TEST_PEAK_FILE"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(_report_peak)
sys.argv = ["ptq", *sys.argv[1:]]
runpy.run_module("ptq.cli", run_name="__main__")
"""


def run_cli(args, *, env=None, timeout=120) -> Run:
    """``python -m ptq.cli convert ARGS`` in a subprocess; its exit code, output and peak memory
    (its own VmHWM when it exits normally, else what wait4 says, an upper bound)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak_kb"
        child_env = {**(env if env is not None else os.environ), "PTQ_TEST_PEAK_FILE": str(peak_file)}
        proc = subprocess.Popen(
            [sys.executable, "-c", _REPORT_PEAK, "convert", *map(str, args)],
            stdout=out, stderr=err, cwd=REPO, env=child_env,
        )  # fmt: skip
        try:
            _, status, usage = _wait4(proc, timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        out.seek(0)
        err.seek(0)
        peak_kb = int(peak_file.read_text()) if peak_file.exists() else usage.ru_maxrss
        return Run(os.waitstatus_to_exitcode(status), out.read(), err.read(), peak_kb / 1024)


def _wait4(proc: subprocess.Popen, timeout: float):
    import time

    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage
        if time.monotonic() > deadline:
            raise TimeoutError(f"ptq did not finish in {timeout} s")
        time.sleep(0.02)


# ----------------------------------------------------------------------------------- model builders


def vi(name, elem=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def make_model(nodes, inputs, outputs, inits=None, opset=17, extra_opsets=(), ir_version=8, sparse=()):
    graph = helper.make_graph(
        nodes, "g", inputs, outputs, [numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()],
        sparse_initializer=list(sparse),
    )  # fmt: skip
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version
    return model


def set_external(tensor: TensorProto, location: str, offset: int | None = None, length: int | None = None, dims=None):
    """Turn ``tensor`` into a reference to external data (its payload is dropped)."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    if dims is not None:
        del tensor.dims[:]
        tensor.dims.extend(dims)
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)


def initializer(model: onnx.ModelProto, name: str) -> TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def replace_weight(model: onnx.ModelProto, name: str, fn) -> onnx.ModelProto:
    tensor = initializer(model, name)
    tensor.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(tensor).copy()), name))
    return model


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def nested_if_bytes(depth: int) -> bytes:
    """A model whose If nodes nest ``depth`` levels deep, written as protobuf wire format directly
    (python protobuf itself refuses to build messages nested this deep)."""
    y = vi("y", TensorProto.FLOAT, [1]).SerializeToString()
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [vi("y", TensorProto.FLOAT, [1])])
    leaf_bytes = leaf.SerializeToString()
    inner = leaf_bytes
    for i in range(depth):
        # AttributeProto: name=1, g=6, type=20 (GRAPH=5); NodeProto: input=1, output=2, name=3, op_type=4, attribute=5
        then_branch = _field(1, b"then_branch") + _field(6, inner) + _int_field(20, 5)
        else_branch = _field(1, b"else_branch") + _field(6, leaf_bytes) + _int_field(20, 5)
        node = _field(1, b"c") + _field(2, b"y") + _field(3, f"if{i}".encode()) + _field(4, b"If")
        node += _field(5, then_branch) + _field(5, else_branch)
        inner = _field(1, node) + _field(2, f"g{i}".encode()) + _field(12, y)  # GraphProto: node=1, name=2, output=12
    inputs = _field(11, vi("c", TensorProto.BOOL, []).SerializeToString()) + _field(11, vi("x", TensorProto.FLOAT, [1]).SerializeToString())
    opset = _field(1, b"") + _int_field(2, 17)
    return _int_field(1, 8) + _field(7, inner + inputs) + _field(8, opset)  # ModelProto: ir_version=1, graph=7, opset_import=8


# ------------------------------------------------------------------ fixes waiting in files we do not own


def _source_has(module: str, text: str) -> bool:
    import importlib
    import inspect

    return text in inspect.getsource(importlib.import_module(module))


# ptq.api writes its three outputs inside one ``ptq.write.atomic.transaction()``: all or none.
API_WRITES_ALL_OR_NOTHING = _source_has("ptq.api", "transaction()")
# ptq.write.oplist / ort_file report a failed save of onnxruntime's output as OutputError (exit 7).
ORT_SAVE_FAILURES_ARE_OUTPUT_ERRORS = _source_has("ptq.write.oplist", "OutputError") and _source_has(
    "ptq.write.ort_file", "OutputError"
)
# ptq.calibrate.runner, ptq.write.oplist and ptq.write.ort_file load models through
# ptq.runtime.inference_session (weights over 2 GB travel beside the proto).
SESSIONS_TAKE_EXTERNAL_DATA = all(
    _source_has(m, "inference_session(") for m in ("ptq.calibrate.runner", "ptq.write.oplist")
)

# ptq.calibrate.runner's session logs nothing itself (onnxruntime's C++ logger writes error lines
# straight to stderr, beside ptq's one-line message, unless its severity is FATAL = 4).
RUNNER_SESSION_QUIET = _source_has("ptq.runtime", "LOG_SEVERITY = 4")
# ptq.quantize.plan keeps an elementwise op with a NaN/Inf constant operand (an additive -inf mask) float.
PLAN_KEEPS_NONFINITE_CONSTANTS_FLOAT = _source_has("ptq.quantize.plan", "NaN/Inf")
